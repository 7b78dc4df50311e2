"""Scoring a folder of edits against its inputs (`train_free_edit.py evaluate`), and one edit (`score_edit`,
also used by pie_bench.py).

Inputs and edits are paired by the edit command's own names (tools/folder.py output_stems, tools/batch.py
edit_name): input STEM.png <-> edit STEM-SOURCE2TARGET.png; its settings STEM-SOURCE2TARGET.json give the
caption, the geometry (the input is cropped or padded as the edit saw it) and the recorded reconstruction
PSNR; STEM-reconstruction.png gives the reconstruction. A mask comes from --masks DIR (STEM.png, white =
edited) or, with attention masks, from STEM-attention-SOURCE-map.png (masks.py's threshold rule).
Metrics per image: clip_acc, clip_score (and clip_score_edited with a mask), structure_distance,
psnr_bg / mse_bg / ssim_bg (/ lpips_bg) with a mask, recon_psnr / recon_ssim (/ recon_lpips).
"""
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...loading.hub import resolve_pretrained
from ..batch import edit_name
from ..folder import input_images, output_stems
from ..image import Geometry, apply_geometry, plan_geometry, read_image
from . import clip as clip_metrics
from . import structure
from .lpips import Lpips, load_lpips
from .masks import attention_mask, attention_map_path, read_mask
from .metrics import background_metrics, reconstruction_quality


@dataclass
class ModelPaths:
    acc: Path  # CLIP for CLIP-Acc
    score: Path  # CLIP for PIE-Bench's CLIP score
    dino: Path


def resolve_models(clip: str | None, dino: str | None, weights_dir: str | os.PathLike,
                   download: bool = True) -> ModelPaths:
    """Local folders, or hub ids found in weights_dir or downloaded there (loading/hub.py), before any work:
    a missing model fails here, not after an hour of editing. One --clip folder serves both CLIP metrics."""
    def find(spec, files, flag):
        return resolve_pretrained(spec, {}, weights_dir, files, flag, download)
    acc = find(clip or clip_metrics.ACC_MODEL, clip_metrics.FILES, "--clip")
    score = acc if clip else find(clip_metrics.SCORE_MODEL, clip_metrics.FILES, "--clip")
    return ModelPaths(acc, score, find(dino or structure.MODEL, structure.FILES, "--dino"))


@dataclass
class Models:
    acc: clip_metrics.Clip
    score: clip_metrics.Clip
    dino: structure.Dino
    lpips: Lpips | None
    lpips_note: str = ""


def load_models(paths: ModelPaths, device: str = "cpu", lpips: str = "auto") -> Models:
    acc = clip_metrics.Clip(paths.acc, device)
    score = acc if paths.score == paths.acc else clip_metrics.Clip(paths.score, device)
    scorer, note = load_lpips(lpips, device)
    return Models(acc, score, structure.Dino(paths.dino, device), scorer, note)


@dataclass
class Options:
    source: str
    target: str
    masks: str | None = None  # folder of STEM.png masks, white = edited
    attention_masks: bool = False  # masks from STEM-attention-SOURCE-map.png in the edits folder
    mask_mode: str = "pie"  # metrics.py
    structure_mode: str = "splice"  # structure.py
    template: str = clip_metrics.TEMPLATE


@dataclass
class Pair:
    stem: str
    input: Path
    edit: Path


def pair_edits(input_path: str | os.PathLike, edits: str | os.PathLike, source: str,
               target: str) -> tuple[list[Pair], list[str]]:
    """(pairs whose edit exists, stems of inputs without one)."""
    images = input_images(input_path)
    pairs, missing = [], []
    for image, stem in output_stems(images).items():
        edit = Path(edits) / f"{edit_name(stem, source, target)}.png"
        (pairs.append(Pair(stem, image, edit)) if edit.is_file() else missing.append(stem))
    return pairs, missing


def unit(im: Image.Image) -> torch.Tensor:
    """8-bit RGB -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def input_as_edited(path: Path, edit_size: tuple[int, int], settings: dict) -> tuple[Image.Image, Geometry | None]:
    """The input cropped or padded as the edit saw it: by the geometry in its settings, else by the size policy
    at the edit's shorter side (an error naming both files when that does not give the edit's size)."""
    im = read_image(path)
    if "geometry" in settings:
        g = Geometry(**{k: tuple(v) if v is not None else None for k, v in settings["geometry"].items()})
    elif im.size == tuple(edit_size):
        return im, None
    else:
        g = plan_geometry(*im.size, min(edit_size))
    if tuple(g.size) != tuple(edit_size):
        raise ValueError(f"{path}: as edited it would be {g.size[0]} x {g.size[1]}, but its edit is "
                         f"{edit_size[0]} x {edit_size[1]}: is this the edit of another image?")
    return apply_geometry(im, g), g


def target_prompt(caption: str | None, source: str, target: str) -> str:
    """The text PIE-Bench's CLIP score compares an edit with: the caption with the source word replaced by the
    target word; TEMPLATE with the target word without a caption that holds the source word."""
    pattern = rf"\b{re.escape(source)}\b"
    if caption and re.search(pattern, caption, flags=re.IGNORECASE):
        return re.sub(pattern, target, caption, flags=re.IGNORECASE)
    return clip_metrics.TEMPLATE.format(word=target)


def score_edit(models: Models, image: Image.Image, edit: Image.Image, edited: torch.Tensor | None, source: str,
               target: str, prompt: str, options: Options) -> dict[str, float]:
    """Every metric of one edit that needs no other file (module docstring)."""
    a, b = unit(image), unit(edit)
    row = {"clip_acc": clip_metrics.clip_acc(models.acc, edit, source, target, options.template)}
    row |= clip_metrics.clip_scores(models.score, edit, prompt, edited)
    row["structure_distance"] = structure.structure_distance(models.dino, a, b, options.structure_mode)
    if edited is not None:
        row |= background_metrics(a, b, edited, options.mask_mode, models.lpips)
    return row


def evaluate_pair(pair: Pair, models: Models, options: Options) -> dict:
    """One CSV row: the pair's files, the target prompt and every metric."""
    edit = read_image(pair.edit)
    json_path = pair.edit.with_suffix(".json")
    settings = json.loads(json_path.read_text()) if json_path.is_file() else {}
    image, geometry = input_as_edited(pair.input, edit.size, settings)
    edited, mask_file = None, ""
    if options.masks:
        mask_path = Path(options.masks) / f"{pair.stem}.png"
        if not mask_path.is_file():
            raise FileNotFoundError(f"{mask_path}: no mask for input {pair.input} (masks are named like the "
                                    "input's output stem, STEM.png)")
        edited, mask_file = read_mask(mask_path, geometry, edit.size), str(mask_path)
    elif options.attention_masks:
        map_path = attention_map_path(pair.edit.parent, pair.stem, options.source)
        if not map_path.is_file():
            raise FileNotFoundError(f"{map_path}: no attention map; edit with --save-attention to write it")
        edited, mask_file = attention_mask(map_path, edit.size), str(map_path)
    prompt = target_prompt(settings.get("caption"), options.source, options.target)
    row = {"stem": pair.stem, "input": str(pair.input), "edit": str(pair.edit), "mask": mask_file,
           "target_prompt": prompt}
    row |= score_edit(models, image, edit, edited, options.source, options.target, prompt, options)
    reconstruction = pair.edit.parent / f"{pair.stem}-reconstruction.png"
    if reconstruction.is_file():
        recorded = settings.get("reconstruction", {}).get("psnr_input_db", False)
        recorded = None if recorded is False else (math.inf if recorded is None else recorded)  # null: identical
        row |= reconstruction_quality(unit(image), unit(read_image(reconstruction)), models.lpips, recorded)
    return row


def evaluate_folder(input_path, edits, models: Models, options: Options, progress: bool = True,
                    log=print) -> tuple[list[dict], list[str]]:
    """(one row per paired image, problems: inputs without an edit and images that failed, each named)."""
    from tqdm.auto import tqdm
    pairs, missing = pair_edits(input_path, edits, options.source, options.target)
    problems = [f"{stem}: no edit {edit_name(stem, options.source, options.target)}.png in {edits}"
                for stem in missing]
    rows = []
    for pair in tqdm(pairs, desc=f"evaluating {edits}", unit="image", disable=not progress):
        try:
            rows.append({"edits": str(edits)} | evaluate_pair(pair, models, options))
        except (ValueError, OSError) as e:
            problems.append(f"{pair.stem}: {e}")
    for problem in problems:
        log(f"error: {problem}")
    return rows, problems
