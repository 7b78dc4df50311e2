"""OpenCLIP text towers (Cherti et al., arXiv:2212.07143) as transformers' CLIPTextModel(WithProjection):
SD 2.x's ViT-H/14 and SDXL's ViT-bigG/14.

SD 2.x single files store it under `cond_stage_model.model.` in open_clip's names: token_embedding,
positional_embedding, transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj},
ln_final, plus the contrastive head (text_projection, logit_scale). The architecture is CLIP's (pre-LN blocks,
causal self-attention, GELU MLP, 64-channel heads), so only names change, and one fused q/k/v projection
(in_proj, rows [q; k; v], as torch's nn.MultiheadAttention) becomes three. SD 2.x conditions on the penultimate
block followed by ln_final (`FrozenOpenCLIPEmbedder(layer="penultimate")`, Stability-AI/stablediffusion), so the
last block is never run: we drop it here, as diffusers' folders do (23 of 24 blocks), and then the truncated
model's last_hidden_state (after its final layer norm) *is* SD 2.x's conditioning.
SDXL stores ViT-bigG/14 under `conditioner.embedders.1.model.` in the same names and needs all of it: c is the
penultimate block's output, the pooled embedding comes from the last block, ln_final and text_projection (see
text.encode_text_sdxl), so every block is kept and text_projection becomes CLIPTextModelWithProjection's.
"""
import re

import torch

PREFIX = "cond_stage_model.model."  # SD 2.x
SDXL_PREFIX = "conditioner.embedders.1.model."  # SDXL 1.0 base's second text encoder
# open_clip name -> CLIPTextModel name (under `text_model.`): outside the residual blocks, the blocks, inside one.
RENAMES = [("token_embedding.weight", "embeddings.token_embedding.weight"),
           ("positional_embedding", "embeddings.position_embedding.weight"), ("ln_final.", "final_layer_norm.")]
BLOCKS = ("transformer.resblocks.", "encoder.layers.")
BLOCK_RENAMES = [("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
                 ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")]
FUSED = re.compile(r"attn\.in_proj_(weight|bias)$")  # rows [q; k; v] -> self_attn.{q,k,v}_proj.{weight,bias}
# The contrastive head: CLIP's pooled-embedding projection and temperature. SD 2.x uses neither, SDXL the first.
UNUSED = ("text_projection", "logit_scale")
PROJECTION = ("text_projection", "text_projection.weight")  # open_clip's (D, P), used as x @ P; ours (P, D)


class RowBlock:
    """A view of a checkpoint file in which every tensor is its `index`-th of `n` equal blocks of rows: the
    q (0), k (1) or v (2) part of a fused in_proj. Has the file methods sd.py's (file, key) refs use."""

    def __init__(self, file, index: int, n: int = 3):
        self.file, self.index, self.n = file, index, n
        self.path = file.path

    def shape(self, key: str) -> tuple[int, ...]:
        rows, *rest = self.file.shape(key)
        return (rows // self.n, *rest)

    def read(self, key: str, device="cpu", dtype=None) -> torch.Tensor:
        return self.file.read(key, device, dtype).chunk(self.n)[self.index].clone()  # clone: free the other 2/3

    def fingerprint(self) -> str:
        return self.file.fingerprint()


class Transposed:
    """A view of a checkpoint file in which every 2-D tensor is transposed: open_clip's text_projection (D, P),
    applied as x @ P, is transformers' text_projection.weight (P, D), applied as x @ W^T."""

    def __init__(self, file):
        self.file = file
        self.path = file.path

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(reversed(self.file.shape(key)))

    def read(self, key: str, device="cpu", dtype=None) -> torch.Tensor:
        return self.file.read(key, device, dtype).T.contiguous()

    def fingerprint(self) -> str:
        return self.file.fingerprint()


def last_block(names) -> int:
    """Index of the last residual block among open_clip key names."""
    blocks = {int(m[1]) for k in names if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    if not blocks:
        raise ValueError("no transformer.resblocks.N layers found in the OpenCLIP text tower")
    return max(blocks)


def rename(name: str, to_ours: bool = True) -> str | None:
    """One open_clip name (PREFIX removed) <-> our name (without `text_model.`); None if no rule covers it.
    The fused in_proj is not renamed here: `text_refs` splits it, `to_openclip` joins it."""
    src, dst = BLOCKS if to_ours else BLOCKS[::-1]
    if name.startswith(src):
        block, _, inner = name[len(src):].partition(".")
        for a, b in BLOCK_RENAMES:
            a, b = (a, b) if to_ours else (b, a)
            if inner.startswith(a):
                return f"{dst}{block}.{b}{inner[len(a):]}"
        return None
    for a, b in RENAMES:
        a, b = (a, b) if to_ours else (b, a)
        if name.startswith(a):
            return b + name[len(a):]
    return None


def text_refs(f, names: list[str], prefix: str = PREFIX, whole: bool = False) -> tuple[dict, list[str], list[str]]:
    """CLIPTextModel key (`text_model.`...) -> (file, key) for the OpenCLIP names (`prefix` removed) of file f;
    also the skipped and the unknown full keys. One fused in_proj tensor gives three refs through RowBlock.
    whole=False (SD 2.x): the last block and the contrastive head are skipped. whole=True (SDXL): every block is
    kept and text_projection is read transposed, for CLIPTextModelWithProjection; only logit_scale is skipped."""
    # The skip rule: the last block only runs after the penultimate layer SD 2.x reads, so it is never loaded.
    after_penultimate = f"transformer.resblocks.{last_block(names)}."
    refs, skipped, unknown = {}, [], []
    for name in names:
        key = prefix + name
        if whole and name == PROJECTION[0]:
            refs[PROJECTION[1]] = (Transposed(f), key)
        elif name in UNUSED or (not whole and name.startswith(after_penultimate)):
            skipped.append(key)
        elif m := FUSED.search(name):
            block = name[len("transformer.resblocks."):].partition(".")[0]
            for i, qkv in enumerate("qkv"):
                refs[f"text_model.encoder.layers.{block}.self_attn.{qkv}_proj.{m[1]}"] = (RowBlock(f, i), key)
        elif (ours := rename(name)) is not None:
            refs["text_model." + ours] = (f, key)
        else:
            unknown.append(key)
    return refs, skipped, unknown


def to_openclip(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel(WithProjection) tensors (keys with or without `text_model.`) -> open_clip names (without
    the prefix), the q/k/v projections fused into in_proj, text_projection transposed. The inverse of
    `text_refs`."""
    tensors = {k.removeprefix("text_model."): t for k, t in tensors.items() if not k.endswith("position_ids")}
    out = {}
    for k, t in tensors.items():
        if k == PROJECTION[1]:
            out[PROJECTION[0]] = t.T.contiguous()
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)$", k):
            parts = [tensors[f"encoder.layers.{m[1]}.self_attn.{qkv}_proj.{m[2]}"] for qkv in "qkv"]
            out[f"transformer.resblocks.{m[1]}.attn.in_proj_{m[2]}"] = torch.cat(parts)
        elif not re.search(r"self_attn\.[kv]_proj\.", k):
            name = rename(k, to_ours=False)
            assert name is not None, f"no open_clip name for {k}"
            out[name] = t
    return out
