"""Edits of held-out world scenes, measured against the truth: one scene (`edit_scene`), a benchmark over tasks
(`run_bench`), and the paper's ablations in miniature (`VARIANTS`, paired against the defaults).

A task is SOURCE2TARGET over the world's shapes (circle2square). Scene k of a task is `sample_scene(HELD_OUT + k,
shape=SOURCE)`: a seed no model here was trained on, every factor but the shape drawn from it. The caption is
the scene's fullest phrasing; the direction is built from the world's own sentences (every colour, size and
background phrasing of each shape: the world's stand-in for a language model's), or from the template bank, or
from one sentence.
"""
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..config import EditConfig
from ..directions import edit_direction, template_sentences
from ..pipeline import edit_image
from . import scenes
from .measure import measure_edit

SENTENCE_SOURCES = ("world", "templates", "one")
WORLD_DIR = Path(__file__).resolve().parents[2] / "weights" / "world"
CHECKPOINT = WORLD_DIR / "baby-sd.safetensors"
ABLATION_METRICS = ("success", "colour_error", "centroid_error", "psnr_bg", "psnr_recon")
METRICS = ("success", "centroid_error", "size_error", "colour_error", "psnr_bg", "ssim_bg", "psnr_ideal",
           "psnr_recon", "seconds")


def parse_task(task: str) -> tuple[str, str]:
    """'circle2square' -> ('circle', 'square'); a word the world lacks is named with the shapes it has."""
    source, sep, target = task.partition("2")
    if not (sep and source and target):
        raise ValueError(f"task {task!r} must look like SOURCE2TARGET, e.g. circle2square")
    for word in (source, target):
        if word not in scenes.SHAPES:
            raise ValueError(f"task {task!r}: the world has no shape {word!r}; its shapes are "
                             f"{', '.join(scenes.SHAPES)} (a task looks like circle2square)")
    if source == target:
        raise ValueError(f"task {task!r}: source and target are the same shape")
    return source, target


def shape_sentences(shape: str, source: str) -> list[str]:
    if source == "world":
        return scenes.shape_sentences(shape)
    if source == "templates":
        return template_sentences(shape)
    if source == "one":
        return [f"a {shape}"]
    raise ValueError(f"sentences must be one of {SENTENCE_SOURCES}, not {source!r}")


def world_direction(sd, source: str, target: str, sentences: str = "world") -> torch.Tensor:
    """delta_c (1, L, D) from source to target shape, from the named sentence source."""
    return edit_direction(sd, shape_sentences(source, sentences), shape_sentences(target, sentences))


def held_out_scene(source: str, k: int) -> scenes.Scene:
    return scenes.sample_scene(scenes.HELD_OUT + k, shape=source)


def to_model(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1


def edit_scene(sd, scene: scenes.Scene, target: str, config: EditConfig, direction: torch.Tensor, progress=False):
    """Invert the scene with its caption and edit its shape word to `target`: pipeline.edit_image's result."""
    image = to_model(scenes.render(scene)[0])
    generator = torch.Generator().manual_seed(config.seed)
    return edit_image(sd, image, scenes.caption(scene), scene.shape, [target], config, generator,
                      directions=[direction], progress=progress)


@dataclass
class Variant:
    name: str
    changes: dict = field(default_factory=dict)  # EditConfig fields
    sentences: str = "world"


# The paper's claims in miniature (issue 20, item 5): each row changes one thing from the defaults.
VARIANTS = [
    Variant("defaults"),
    Variant("guidance off (lambda_xa 0)", {"lambda_xa": 0.0}),
    Variant("lambda_xa 0.05", {"lambda_xa": 0.05}), Variant("lambda_xa 0.2", {"lambda_xa": 0.2}),
    Variant("lambda_xa 0.5", {"lambda_xa": 0.5}),
    Variant("regularizer off", {"num_reg_steps": 0}), Variant("unscaled pyramid (authors)", {"pyramid_rescale": False}),
    Variant("all shifts (FFT)", {"pair_shifts": "all"}),
    Variant("direct inversion", {"inversion_method": "direct"}),
    Variant("fixed-point inversion", {"inversion_method": "fixed-point"}),
    Variant("one sentence", sentences="one"), Variant("template bank", sentences="templates"),
    Variant("10 steps", {"num_steps": 10}), Variant("25 steps", {"num_steps": 25}),
    Variant("diffusers setting", {"setting": "diffusers"}),
]


def run_bench(sd, classifier, tasks: list[str], n: int, config: EditConfig, sentences: str = "world",
              on_edit=None) -> list[dict]:
    """One row per (task, scene): the scene's seed and factors, the measured numbers, the edit's seconds.
    on_edit(row, result) sees each edit (to write its images)."""
    rows = []
    for task in tasks:
        source, target = parse_task(task)
        direction = world_direction(sd, source, target, sentences)
        for k in range(n):
            scene = held_out_scene(source, k)
            start = time.perf_counter()
            result = edit_scene(sd, scene, target, config, direction)
            seconds = time.perf_counter() - start
            row = {"task": task, "seed": scene.seed, "scene": scenes.caption(scene)}
            row |= measure_edit(scene, target, result.edits[0], result.reconstruction, classifier)
            row["seconds"] = seconds
            rows.append(row)
            if on_edit is not None:
                on_edit(row, result)
    return rows


def variant_config(base: EditConfig, variant: Variant) -> EditConfig:
    return replace(base, **variant.changes)


def finite(values) -> list[float]:
    return [v for v in values if not math.isnan(v)]
