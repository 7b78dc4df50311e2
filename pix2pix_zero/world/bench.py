"""Edits of held-out world scenes, measured against the truth: one scene (`edit_scene`), a benchmark over tasks
(`run_bench`), and the paper's ablations in miniature (`VARIANTS`, paired against the defaults).

A task is SOURCE2TARGET over the world's shapes (circle2square). Scene k of a task is `sample_scene(HELD_OUT + k,
shape=SOURCE)`: a seed no model here was trained on, every factor but the shape drawn from it. The caption is
the scene's fullest phrasing; the direction is built from the world's own sentences (every colour, size and
background phrasing of each shape: the world's stand-in for a language model's), or from the template bank, or
from one sentence.
"""
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .. import editing, inversion, options
from ..config import EditConfig
from ..directions import edit_direction, template_sentences
from ..pipeline import edit_image, setting_rules
from . import SENTENCE_SOURCES, scenes
from .measure import measure_edit

ABLATION_METRICS = ("success", "colour_error", "centroid_error", "psnr_bg", "psnr_recon")


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


def held_out_scene(source: str, k: int, object_scale: float = 1.0) -> scenes.Scene:
    return scenes.sample_scene(scenes.HELD_OUT + k, shape=source, object_scale=object_scale)


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
    Variant("edit multiplier 2", {"edit_multiplier": 2.0}), Variant("edit multiplier 3", {"edit_multiplier": 3.0}),
]


@dataclass
class Edited:
    image: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    reconstruction: torch.Tensor
    edit: torch.Tensor


def edit_batch(sd, chosen: list[scenes.Scene], target: str, config: EditConfig, direction: torch.Tensor
               ) -> list[Edited]:
    """`edit_scene` for several scenes of one source shape at once: the paper setting's loops (inversion.py,
    editing.py) run on a batch, which keeps a tiny UNet busy (one scene at a time it waits on Python). The
    regularizer's random shifts are drawn for the batch, so an edit here differs from `edit_scene`'s by the
    draw; the diffusers setting runs scene by scene through pipeline.edit_image."""
    config = setting_rules(config)
    if config.setting == "diffusers":
        results = [edit_scene(sd, scene, target, config, direction) for scene in chosen]
        return [Edited(r.image, r.reconstruction, r.edits[0]) for r in results]
    images = torch.cat([to_model(scenes.render(scene)[0]) for scene in chosen])  # (B, 3, H, W)
    c = sd.encode_text([scenes.caption(scene) for scene in chosen])  # (B, L, D); c_neg = c, as for real images
    generator = torch.Generator().manual_seed(config.seed)
    x0 = inversion.encode_image(sd, images, config.posterior, generator)
    levels = options.invert_path(sd, x0, c, config, generator, progress=False)
    x_path = levels if config.inversion_method == "direct" else None
    x_ref, (x_edit,) = options.edit(sd, levels[-1], c, [direction], c, config, progress=False, x_path=x_path)
    reconstructions, edits = editing.decode_latents(sd, x_ref), editing.decode_latents(sd, x_edit)
    return [Edited(images[i:i + 1], reconstructions[i:i + 1], edits[i:i + 1]) for i in range(len(chosen))]


def run_bench(sd, classifier, tasks: list[str], n: int, config: EditConfig, sentences: str = "world",
              on_edit=None, batch: int = 16, done: dict | None = None, on_batch=None,
              object_scale: float = 1.0) -> list[dict]:
    """One row per (task, scene): the scene's seed and caption, the scenes edited with it (`batch`, "25-50"), the
    measured numbers, the seconds per edit (the batch's time shared out). on_edit(row, edited) sees each edit (to
    write its images), on_batch(rows) the rows so far after each batch. done: rows an earlier run with the same
    settings measured, by (task, seed); a batch they hold whole is taken from them, not edited again (only whole
    batches: the regularizer's draw is the batch's, so an edit depends on the scenes edited with it). object_scale:
    the scenes' object size (scenes.sample_scene), for a model trained at that scale."""
    rows, done = [], done or {}
    for task in tasks:
        source, target = parse_task(task)
        direction = None  # built when a batch needs editing
        for first in range(0, n, batch):
            chosen = [held_out_scene(source, k, object_scale) for k in range(first, min(n, first + batch))]
            span = f"{first}-{first + len(chosen)}"
            earlier = [done.get((task, scene.seed)) for scene in chosen]
            if all(row is not None and row["batch"] == span for row in earlier):
                rows += earlier
                continue
            if direction is None:
                direction = world_direction(sd, source, target, sentences)
            start = time.perf_counter()
            edited = edit_batch(sd, chosen, target, config, direction)
            seconds = (time.perf_counter() - start) / len(chosen)
            for scene, e in zip(chosen, edited):
                row = {"task": task, "seed": scene.seed, "scene": scenes.caption(scene), "batch": span}
                row |= measure_edit(scene, target, e.edit, e.reconstruction, classifier)
                row["seconds"] = seconds
                rows.append(row)
                if on_edit is not None:
                    on_edit(row, e)
            if on_batch is not None:
                on_batch(rows)
    return rows


def variant_config(base: EditConfig, variant: Variant) -> EditConfig:
    return replace(base, **variant.changes)

