"""An edit measured against the world's ground truth.

The renderer knows the background without the object, so the edited object is found exactly where the edit
differs from that background (not by a segmentation model): its centroid, size and colour are compared with the
source object's and with the ideal edit (the same scene rendered with the target shape); the background is
compared with the input outside both objects; the shipped classifier names the shape of the edited object's mask
(and `shape_fit`, a second, geometric judge, fits each shape to it; `outline_verdict`, a third, fits them to the
mask's cleaned outline and may answer "none").
Images are uint8 (H, W, 3) as the renderer makes them, or float (3, H, W) in [-1, 1] as the models do.
"""
import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..tools.evaluation.metrics import psnr, ssim
from . import scenes
from .classifier import classify

OBJECT_THRESHOLD = 0.2  # RGB distance in [0, 1] units from the true background above which a pixel is "object"
MARGIN = 2  # pixels added around both objects before the background is compared (anti-aliased, decoded edges)


def unit(image) -> torch.Tensor:
    """uint8 (H, W, 3) or float (1|-, 3, H, W) in [-1, 1] -> float64 (3, H, W) in [0, 1]."""
    if isinstance(image, np.ndarray):
        return torch.from_numpy(image).permute(2, 0, 1).double() / 255
    image = image.detach().cpu().double()
    return ((image[0] if image.ndim == 4 else image).clamp(-1, 1) + 1) / 2


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    return F.max_pool2d(mask[None, None].float(), 2 * pixels + 1, stride=1, padding=pixels)[0, 0] > 0


def without_rim(mask: torch.Tensor) -> torch.Tensor:
    """The mask less its one-pixel rim, where decoded and anti-aliased edges blend into the background."""
    return mask & ~dilate(~mask, 1)


def object_mask(image: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: pixels of `image` (3, H, W) farther than OBJECT_THRESHOLD from the true background."""
    return (image - background).norm(dim=0) > OBJECT_THRESHOLD


def centroid(mask: torch.Tensor) -> tuple[float, float]:
    """(x, y) mean pixel position of a mask, NaN if empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return (xs.double().mean().item(), ys.double().mean().item()) if len(xs) else (math.nan, math.nan)


def colour_error(image: torch.Tensor, where: torch.Tensor, colour: str) -> float:
    """RGB distance (0..255) of the mean of image (3, H, W) over the mask `where` (H, W) from the named colour;
    NaN if the mask is empty."""
    if not where.any():
        return math.nan
    true_colour = torch.tensor(scenes.COLOURS[colour], dtype=torch.float64) / 255
    return 255 * (image[:, where].mean(dim=1) - true_colour).norm().item()


ROTATION_PERIOD = {"circle": 0.0, "square": math.pi / 2, "triangle": 2 * math.pi / 3, "star": 2 * math.pi / 5}


def shape_fit(mask: torch.Tensor | np.ndarray, step: float = math.radians(3)) -> dict[str, float]:
    """{shape: IoU of the best fit of that world shape to `mask` (S, S) bool}: the shape centred on the mask's
    centroid, of the mask's area, at the best rotation on a `step` grid over its symmetry period. A second judge
    of an edit (bench/world_judge.py): it learns nothing, reads the outline strictly, and has no "none" answer
    either. All 0 for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    size = mask.shape[0]
    if mask.shape != (size, size):
        raise ValueError(f"shape_fit takes a square mask, as the world's images are, not {mask.shape}")
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return {shape: 0.0 for shape in scenes.SHAPES}
    x, y = np.meshgrid((np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size)
    cx, cy = (xs.mean() + 0.5) / size, (ys.mean() + 0.5) / size
    fits = {}
    for shape in scenes.SHAPES:
        radius = math.sqrt(len(xs) / size**2 / scenes.shape_area(shape))  # area of the fit = area of the mask
        fitted = replace(scenes.sample_scene(0, shape), cx=cx, cy=cy, radius=radius)  # its outline alone is used
        rotations = np.arange(0, ROTATION_PERIOD[shape], step) if ROTATION_PERIOD[shape] else [0.0]
        best = 0.0
        for rotation in rotations:
            inner = scenes.inside(replace(fitted, rotation=float(rotation)), x, y)  # pixel centres in the shape
            best = max(best, float((inner & mask).sum() / (inner | mask).sum()))
        fits[shape] = best
    return fits


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest 8-connected component of a (H, W) bool mask (empty for an empty mask). Every pixel starts with
    its own number; each pass gives it the largest number among its neighbours in the mask, until nothing
    changes: each component then carries one number."""
    if not mask.any():
        return mask.clone()
    labels = torch.arange(1, mask.numel() + 1, dtype=torch.float64).view(mask.shape) * mask
    while True:
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    numbers, counts = labels[mask].unique(return_counts=True)
    return labels == numbers[counts.argmax()]


def outline(mask: torch.Tensor) -> torch.Tensor:
    """The object's outline in a mask of pixels that differ from the true background: opened by one pixel (a
    stripe or check edge the decoder moved leaves slivers one or two pixels wide), then its largest piece."""
    return largest_component(dilate(without_rim(mask), 1) & mask)


# The best fit must reach OUTLINE_IOU and beat the next shape by OUTLINE_MARGIN, else the outline is no world shape:
# the 5th percentiles of both over the held-out scenes' VAE round trips that the fit names right (32 a shape,
# printed by bench/world_judge.py), so that what the decoder makes of a true shape passes.
OUTLINE_IOU = 0.84
OUTLINE_MARGIN = 0.04


def outline_verdict(mask: torch.Tensor) -> str:
    """A judge with a "none" answer: the world shape that fits the mask's `outline` best (`shape_fit`), if it fits
    it well (IoU >= OUTLINE_IOU) and clearly (OUTLINE_MARGIN over the next shape); else "none"."""
    return verdict(shape_fit(outline(mask)))


def verdict(fits: dict[str, float]) -> str:
    """`outline_verdict` from the fits of the outline."""
    best, iou, margin = best_two(fits)
    return best if iou >= OUTLINE_IOU and margin >= OUTLINE_MARGIN else "none"


def best_two(fits: dict[str, float]) -> tuple[str, float, float]:
    """(the best-fitting shape, its IoU, its margin over the next shape's)."""
    (best, first), (_, second) = sorted(fits.items(), key=lambda item: -item[1])[:2]
    return best, first, first - second


def core_colour_error(scene: scenes.Scene, target: str, edit) -> float:
    """The object's colour error where any correct edit keeps it: inside the core, the source object's mask and
    the ideal edit's intersected, less a pixel of rim. Unlike measure_edit's colour_error (the mean over the
    pixels that differ from the true background, the issue's "mean inside the mask"), a redrawn background
    cannot enter it; a core the edit did not paint the object's colour does (bench/world_colour_core.py)."""
    size = edit.shape[-1] if isinstance(edit, torch.Tensor) else edit.shape[0]
    source_mask = scenes.render(scene, size)[1]
    ideal_mask = scenes.render(scenes.with_shape(scene, target), size)[1]
    core = torch.from_numpy(source_mask & ideal_mask)
    return colour_error(unit(edit), without_rim(core), scene.colour)


def measure_edit(scene: scenes.Scene, target: str, edit: torch.Tensor, reconstruction: torch.Tensor | None,
                 classifier) -> dict[str, float]:
    """The world's numbers for one edit of `scene` towards the shape `target`.

    success: the classifier names `target`. centroid_error: distance in pixels between the edited object's
    centroid and the source object's. size_error: |sqrt(area edit / area ideal) - 1|, the ideal edit having the
    same circumradius. colour_error: RGB distance (0..255) of the edited object's mean colour from the source
    colour. psnr_bg, ssim_bg: the edit against the input outside both objects (MARGIN px around them).
    psnr_ideal: the whole edit against the ideal edit. psnr_recon: the reconstruction against the input.
    """
    size = edit.shape[-1]
    image, source_mask, background = scenes.render(scene, size)
    ideal, ideal_mask, _ = scenes.render(scenes.with_shape(scene, target), size)
    source_mask = torch.from_numpy(source_mask)
    x, bg, e = unit(image), unit(background), unit(edit)
    edited = object_mask(e, bg)
    keep_out = dilate(source_mask | edited, MARGIN)
    (cx, cy), (sx, sy) = centroid(edited), centroid(source_mask)
    predicted = scenes.SHAPES[int(classify(classifier, edited[None, None])[0])]
    row = {
        "success": float(predicted == target), "predicted": predicted,
        "centroid_error": math.hypot(cx - sx, cy - sy),
        "size_error": abs(math.sqrt(edited.sum().item() / max(1, int(ideal_mask.sum()))) - 1),
        "colour_error": colour_error(e, without_rim(edited), scene.colour),
        "psnr_bg": psnr(x, e, keep_out, mode="exact"), "ssim_bg": ssim(x, e, keep_out, mode="exact"),
        "psnr_ideal": psnr(unit(ideal), e),
    }
    if reconstruction is not None:
        row["psnr_recon"] = psnr(x, unit(reconstruction))
    return row
