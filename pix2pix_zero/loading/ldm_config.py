"""The settings a single-file checkpoint cannot tell from its tensors: what its UNet predicts, and its heads.

SD 2.x 512-base (eps) and 768-v (v) files have the same keys and shapes. The original LDM config that ships
beside a checkpoint (`v2-inference-v.yaml`, saved as `<checkpoint stem>.yaml`) says it as
`model: params: parameterization: "v"`; without that line LDM predicts eps. How the attention width splits
into heads is not in the tensors either: LDM's `unet_config: params:` gives `num_heads: 8` (SD 1.x) or
`num_head_channels: 64` (SD 2.x); without a config the family's convention holds. A line-based reader suffices for
these files (nested `key: value` mappings, comments, lists we pass over), so PyYAML is not a dependency.
"""
import re
from pathlib import Path

from .checkpoint import CheckpointError

# LDM's parameterization -> the prediction_type ddim.py uses.
PARAMETERIZATIONS = {"eps": "epsilon", "v": "v_prediction"}
LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*)\s*:\s*(?P<value>.*)$")


def yaml_value(text: str, dotted_key: str) -> str | None:
    """The scalar at `dotted_key` (e.g. "model.params.parameterization") of a block-style YAML mapping, quotes
    and trailing comment removed; None if absent. Flow style ({a: 1}) and multi-line scalars are not read."""
    path: list[tuple[int, str]] = []  # (indent, key) of the mappings enclosing the current line
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue  # blank, comment, list item, or continuation line
        indent = len(m["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, m["key"]))
        if ".".join(k for _, k in path) == dotted_key:
            value = re.sub(r"\s+#.*$", "", m["value"]).strip()
            return value.strip("'\"")
    return None


def yaml_prediction_type(yaml_path: Path) -> str | None:
    """"epsilon" or "v_prediction" from an LDM config file; None if there is no such file."""
    if not yaml_path.is_file():
        return None
    parameterization = yaml_value(yaml_path.read_text(), "model.params.parameterization") or "eps"
    if parameterization not in PARAMETERIZATIONS:
        raise CheckpointError(f"{yaml_path}: parameterization {parameterization!r} is not supported "
                         f"(only {', '.join(PARAMETERIZATIONS)})")
    return PARAMETERIZATIONS[parameterization]


def yaml_heads(yaml_path: Path) -> tuple[int | None, int | None] | None:
    """(num_heads, head_dim) from an LDM config's UNet params, exactly one of them set; None if there is no
    such file or it names neither. LDM writes num_heads: -1 when num_head_channels decides."""
    if not yaml_path.is_file():
        return None
    text, prefix = yaml_path.read_text(), "model.params.unet_config.params."
    values = {}
    for key in ("num_heads", "num_head_channels"):
        value = yaml_value(text, prefix + key)
        if value is not None:
            try:
                values[key] = int(value)
            except ValueError:
                raise CheckpointError(f"{yaml_path}: {key} must be an integer, not {value!r}") from None
    channels, heads = values.get("num_head_channels", -1), values.get("num_heads", -1)
    if channels > 0:
        return None, channels
    return (heads, None) if heads > 0 else None
