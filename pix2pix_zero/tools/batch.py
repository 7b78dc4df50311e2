"""Running the method on one input: an image file, a saved inversion, or a synthetic image (many: folder.py).

Per input (stem = the input's file name without its extension), under the output folder:
  STEM-inversion.safetensors              x_inv, x0, caption and settings (edit again with --inversion);
                                          with --inversion-method direct also every inversion level
  STEM-reconstruction.png                 the reference trajectory decoded (caption only)
  STEM-SOURCE2TARGET.png                  the edit, one per target
  STEM-SOURCE2TARGET-side_by_side.png     input | reconstruction | edit
  STEM-SOURCE2TARGET.json                 every setting, checkpoint identity and versions (no timestamps), and
                                          under "reconstruction" the measured reconstruction error
  STEM-attention-SOURCE.png               with save_attention: the source word's cross-attention
  STEM-attention-SOURCE-map.png           and the map itself, grayscale 0..255 (evaluation/masks.py)
Every file is written atomically; inputs are never overwritten. An edit whose settings file already holds
the same settings and whose PNG exists is skipped, so an interrupted folder run resumes where it stopped.
"""
import json
import math
import os
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from ..config import EditConfig
from ..models.sd import StableDiffusion, sdxl_time_ids
from ..pipeline import edit_image, setting_rules
from .files import atomic_path, file_digest
from .heatmap import WordAttention, word_token_indices
from .image import (Geometry, apply_geometry, geometry_time_ids, load_image, pil_to_tensor, plan_geometry,
                    read_image, save_png, side_by_side, tensor_to_pil)
from .inversion_file import Inversion
from .sentences import SentenceOptions, origin_of, read_direction, word_direction

# The settings-file key of pipeline.reconstruction_errors (latent RMS, PSNRs; null = infinite PSNR, no error).
MEASURED = "reconstruction"


@dataclass
class Job:
    """What to edit, beside the method's hyperparameters (EditConfig)."""
    source: str
    targets: list[str]
    prompt: str | None = None  # the caption c (given, or made by BLIP: captions.py)
    caption_from: str = "--prompt"  # what wrote the caption: "--prompt" or "BLIP <model>"
    negative_prompt: str | None = None  # default: the caption (real images), "" (synthetic)
    source_sentences: str | None = None  # a text file, one sentence a line; None: the built-in templates
    target_sentences: list[str | None] = field(default_factory=list)  # one per target, or empty
    direction_files: list[str] = field(default_factory=list)  # delta_c files (`directions --out`), one per target
    overwrite: bool = False  # replace an edit made under the same name with other settings (else refuse)
    size: int = 512  # the shorter image side (image.py's size policy)
    pad: bool = False  # pad to multiples of 64 instead of cropping
    save_attention: bool = False
    cache_dir: str | None = None
    sentence_options: SentenceOptions | None = None  # templates (None) or a language model, for words without files


def safe_name(word: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in word.strip())[:60] or "_"


def edit_name(stem: str, source: str, target: str) -> str:
    """STEM-SOURCE2TARGET: the base name of one edit's files (evaluation pairs inputs with edits by it)."""
    return f"{stem}-{safe_name(source)}2{safe_name(target)}"


def attention_name(stem: str, source: str) -> str:
    return f"{stem}-attention-{safe_name(source)}.png"


def attention_map_name(stem: str, source: str) -> str:
    return f"{stem}-attention-{safe_name(source)}-map.png"


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("pix2pix_zero", "torch", "transformers", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def settings_record(sd: StableDiffusion, job: Job, config: EditConfig, input_name: str, caption: str,
                    negative: str, target: str, target_sentences: str | None, size: tuple[int, int]) -> dict:
    """Everything that decides one edit's output: compared with the saved record to skip edits already done."""
    dtype = next(sd.unet.parameters()).dtype
    return {"input": input_name, "caption": caption, "caption_from": job.caption_from, "negative_prompt": negative,
            "source": job.source, "target": target,
            "source_sentences": origin_of(job.source_sentences, job.sentence_options),
            "target_sentences": origin_of(target_sentences, job.sentence_options),
            **({"direction_file": job.direction_files[job.targets.index(target)]} if job.direction_files else {}),
            "size": list(size), "config": config.to_dict(),
            "checkpoint": {"path": sd.source, "identity": sd.identity, "family": sd.family,
                           "prediction_type": sd.prediction_type},
            "device": str(sd.unet.conv_in.weight.device), "dtype": str(dtype).removeprefix("torch."),
            "versions": versions()}


def write_json(record: dict, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


@dataclass
class Source:
    """What one run edits: a real image (to invert, or already inverted) or a synthetic one."""
    stem: str
    caption: str
    real: bool
    image: torch.Tensor | None  # (1, 3, H, W) in [-1, 1] to invert; None for a reloaded inversion or synthetic
    inverted: tuple[torch.Tensor, torch.Tensor] | None  # (x0, x_inv) of a reloaded inversion
    latent_hw: tuple[int, int]
    inverted_with: dict | None = None  # the settings of a reloaded inversion
    x_path: torch.Tensor | None = None  # the inversion levels of a reloaded inversion, if it kept them
    geometry: Geometry | None = None  # how an input image became the edited one (crop or pad)
    shown: torch.Tensor | None = None  # a reloaded inversion's input image, when it is still there unchanged


def original_input(settings: dict) -> torch.Tensor | None:
    """The image a saved inversion was made from, processed as it was then (its geometry), if the file named in
    the inversion's settings is still there with the same bytes; None otherwise (D(x0) stands in for it)."""
    path, digest, g = settings.get("input"), settings.get("input_sha256"), settings.get("geometry")
    if not (path and digest and g and Path(path).is_file()):
        return None
    if file_digest(path) != digest:
        return None
    geometry = Geometry(**{k: tuple(v) if v is not None else None for k, v in g.items()})
    return pil_to_tensor(apply_geometry(read_image(path), geometry))


def load_source(sd: StableDiffusion, job: Job, config: EditConfig, image_path, inversion_path, stem) -> Source:
    if inversion_path is not None:
        inv = Inversion.load(inversion_path)
        made = {"checkpoint": inv.checkpoint, "num_steps": inv.settings.get("num_steps"),
                "prediction_type": inv.settings.get("prediction_type", sd.prediction_type)}
        wanted = {"checkpoint": sd.identity, "num_steps": config.num_steps, "prediction_type": sd.prediction_type}
        for key in made:
            if made[key] != wanted[key]:
                raise ValueError(f"{inversion_path}: inverted with {key} {made[key]}, but this run has {wanted[key]}; "
                                 "edit it with the same --weights, --steps and --prediction-type")
        # ddim and fixed-point inversions edit alike (only x_inv matters); direct also corrects every step.
        method = inv.settings.get("inversion_method", "ddim")
        if (method == "direct") != (config.inversion_method == "direct"):
            raise ValueError(f"{inversion_path}: inverted with --inversion-method {method}, but this run has "
                             f"{config.inversion_method}; Direct Inversion edits differently: use the same method")
        return Source(stem or Path(inversion_path).stem.removesuffix("-inversion"), inv.caption, True, None,
                      (inv.x0, inv.x_inv), tuple(inv.x_inv.shape[-2:]), inv.settings, inv.x_path,
                      shown=original_input(inv.settings))
    if image_path is not None:
        if not job.prompt:
            raise ValueError(f"{image_path}: no caption: pass --prompt \"a photo of a ...\", or let BLIP write one "
                             "(captions.caption_files)")
        image, geometry = load_image(image_path, job.size, job.pad)
        return Source(stem or Path(image_path).stem, job.prompt, True, image, None,
                      (image.shape[-2] // 8, image.shape[-1] // 8), geometry=geometry)
    if not job.prompt:
        raise ValueError("a synthetic image needs --prompt (or give --input)")
    W, H = plan_geometry(job.size, job.size, job.size).size
    return Source(stem or f"synthetic-{safe_name(job.prompt)[:40]}-seed{config.seed}", job.prompt, False, None, None,
                  (H // 8, W // 8))


def run(sd: StableDiffusion, job: Job, config: EditConfig, out_dir: str | os.PathLike,
        image_path: str | os.PathLike | None = None, inversion_path: str | os.PathLike | None = None,
        stem: str | None = None, progress: bool = True) -> list[Path]:
    """Edit one input (an image file, a saved inversion, or neither: a synthetic image); returns files written."""
    out_dir = Path(out_dir)
    config = setting_rules(config)
    src = load_source(sd, job, config, image_path, inversion_path, stem)
    if src.inverted_with is not None:  # the caption came with the inversion
        job = replace(job, caption_from=src.inverted_with.get("caption_from", "--prompt"))
    negative = job.negative_prompt if job.negative_prompt is not None else (src.caption if src.real else "")
    targets = list(zip(job.targets, job.target_sentences or [None] * len(job.targets), strict=True))
    bases = {target: edit_name(src.stem, job.source, target) for target, _ in targets}
    size = (src.latent_hw[1] * 8, src.latent_hw[0] * 8)
    records = {target: settings_record(sd, job, config, str(image_path or inversion_path or "synthetic"),
                                       src.caption, negative, target, sentences, size) for target, sentences in targets}
    for record in records.values():
        if src.inverted_with is not None:
            record["inverted_with"] = src.inverted_with
        if src.geometry is not None:
            record["geometry"] = src.geometry.to_dict()
        elif src.inverted_with is not None and "geometry" in src.inverted_with:  # the image the inversion was of
            record["geometry"] = src.inverted_with["geometry"]
        if image_path is not None:
            record["input_sha256"] = file_digest(image_path)
        if sd.family == "sdxl":  # the size/crop numbers SDXL is conditioned on (Podell et al., sec. 2.2)
            record["time_ids"] = list(geometry_time_ids(record["geometry"]) if "geometry" in record else
                                      sdxl_time_ids(size[::-1]))
    todo = [(t, s) for t, s in targets if not done(out_dir, bases[t], records[t])]
    if not todo:
        return []
    for t, _ in todo:
        if not job.overwrite and (changed := changed_settings(out_dir, bases[t], records[t])):
            raise ValueError(f"{out_dir / bases[t]}.png exists, made with other settings ({', '.join(changed[:5])}"
                             f"{', ...' if len(changed) > 5 else ''}): pass --overwrite to replace it, or choose "
                             "another --out")
    invert_now = src.image is not None
    outputs = [out_dir / f"{b}{ext}" for b in bases.values() for ext in (".png", ".json", "-side_by_side.png")]
    outputs += [out_dir / f"{src.stem}-reconstruction.png"]
    outputs += [out_dir / attention_name(src.stem, job.source), out_dir / attention_map_name(src.stem, job.source)]
    outputs += [out_dir / f"{src.stem}-inversion.safetensors"] if invert_now else []
    protected = {Path(p).resolve() for p in (image_path, inversion_path) if p is not None}
    for p in outputs:
        if p.resolve() in protected:
            raise ValueError(f"{p}: an output would overwrite an input; choose another --out")

    heat = None
    if job.save_attention:
        tokens = word_token_indices(sd.tokenizer, src.caption, job.source)
        if tokens:
            heat = WordAttention(tokens, src.latent_hw)
        else:
            print(f"note: '{job.source}' is not a word of the caption '{src.caption}'; no attention map saved")
    files = dict(zip(job.targets, job.direction_files))
    directions = [read_direction(files[t], sd.conditioning_shape) if t in files else
                  word_direction(sd, job.source, t, job.source_sentences, s, job.cache_dir, job.sentence_options).delta_c
                  for t, s in todo]
    # Everything is computed before anything is written: an image that fails (e.g. NaN at some step) leaves no
    # file under a final name, so a later run redoes it.
    result = edit_image(sd, src.image, src.caption, job.source, [t for t, _ in todo], config,
                        torch.Generator().manual_seed(config.seed), directions=directions, negative_prompt=negative,
                        inverted=src.inverted, x_path=src.x_path, size=size[::-1], on_reference=heat,
                        time_ids=records[todo[0][0]].get("time_ids"), progress=progress)

    written = []
    if invert_now:
        settings = result.settings["config"] | {"prediction_type": sd.prediction_type, "caption_from": job.caption_from,
                                                "input_sha256": records[todo[0][0]]["input_sha256"],
                                                "input": str(Path(image_path).resolve())}
        if src.geometry is not None:
            settings["geometry"] = src.geometry.to_dict()
        written.append(Inversion(result.x_inv, result.x0, src.caption, sd.identity, settings, result.x_path)
                       .save(out_dir / f"{src.stem}-inversion.safetensors"))
    reconstruction = tensor_to_pil(result.reconstruction)
    if src.inverted is None:  # a re-edit of a saved inversion leaves the reconstruction made with it alone
        written.append(save_png(reconstruction, out_dir / f"{src.stem}-reconstruction.png"))
    if heat is not None:
        written.append(save_png(heat.overlay(result.image), out_dir / attention_name(src.stem, job.source)))
        written.append(save_png(heat.grayscale(tuple(result.image.shape[-2:])),
                                out_dir / attention_map_name(src.stem, job.source)))
    for (target, _), edit in zip(todo, result.edits, strict=True):
        edited = tensor_to_pil(edit)
        shown = src.shown if src.shown is not None else result.image  # the input, else D(x0) for it
        triptych = side_by_side([tensor_to_pil(shown), reconstruction, edited])
        written.append(save_png(triptych, out_dir / f"{bases[target]}-side_by_side.png"))
        written.append(save_png(edited, out_dir / f"{bases[target]}.png"))
        measured = {key: None if math.isinf(value) else value for key, value in result.reconstruction_error.items()}
        written.append(write_json(records[target] | {MEASURED: measured}, out_dir / f"{bases[target]}.json"))
    return written


def changed_settings(out_dir: Path, base: str, record: dict) -> list[str] | None:
    """None if no earlier edit is under this name; else the settings of it that differ from `record` (top-level
    keys, config fields as config.NAME): [] when it is this very edit (what was measured, under MEASURED, is
    not a setting and is not compared)."""
    if not (out_dir / f"{base}.png").is_file():
        return None
    try:
        saved = json.loads((out_dir / f"{base}.json").read_text())
    except (json.JSONDecodeError, OSError):
        return ["(its settings file is missing or unreadable)"]
    saved.pop(MEASURED, None)
    new = json.loads(json.dumps(record))
    keys = [k for k in sorted(set(saved) | set(new)) if k != "config" and saved.get(k) != new.get(k)]
    old_config, new_config = saved.get("config", {}), new.get("config", {})
    return keys + [f"config.{k}" for k in sorted(set(old_config) | set(new_config))
                   if old_config.get(k) != new_config.get(k)]


def done(out_dir: Path, base: str, record: dict) -> bool:
    """True if this edit's PNG exists and its settings file holds exactly these settings."""
    return changed_settings(out_dir, base, record) == []
