"""Masks of the edited region, (H, W) bool with True = edited, from three sources:

  a mask image per input (white = edited; any 8-bit gray >= 128 counts as white);
  PIE-Bench's run-length encoding (mapping_file.json "mask": [start, length, start, length, ...] over the
    row-major flattened image), decoded with its 1-pixel border rule (cure-lab/PnPInversion
    evaluation/evaluate.py mask_decode);
  the source word's cross-attention, saved by `--save-attention` as STEM-attention-WORD-map.png (the summed
    map min-max normalised to 0..255, tools/heatmap.py). Our choice, since the paper used a detector: a pixel
    is edited where the normalised map is >= ATTENTION_THRESHOLD (half its peak above its minimum).
"""
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..image import Geometry, apply_geometry, read_image
from .metrics import with_border

ATTENTION_THRESHOLD = 0.5


def decode_rle(rle: list[int], shape: tuple[int, int], name: str = "mask") -> torch.Tensor:
    """PIE-Bench's RLE -> (H, W) bool, runs cut at the image's end, then the 1-pixel border marked edited.
    NOTE(official): PIE-Bench decodes every mask at 512 x 512 (its images' size); here at the image's shape."""
    H, W = shape
    if len(rle) % 2 or not all(isinstance(v, int) and v >= 0 for v in rle):
        raise ValueError(f"{name}: a PIE-Bench mask is an even-length list of non-negative integers "
                         "[start, length, ...]")
    flat = torch.zeros(H * W, dtype=torch.bool)
    for start, length in zip(rle[0::2], rle[1::2]):
        flat[start:min(start + length, H * W)] = True
    return with_border(flat.reshape(H, W))


def mask_from_image(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.convert("L")) >= 128)


def fit_mask(edited: torch.Tensor, geometry: Geometry | None, size: tuple[int, int], name: str) -> torch.Tensor:
    """A mask drawn on the input as the edit saw it: already at the edit's (W, H) `size`, or at the input's
    original size and then resized and cropped or padded like the input (nearest neighbour)."""
    H, W = edited.shape
    if (W, H) == tuple(size):
        return edited
    if geometry is None or (W, H) != tuple(geometry.original):
        raise ValueError(f"{name}: the mask is {W} x {H}, but the edit is {size[0]} x {size[1]}"
                         + (f" and its input {geometry.original[0]} x {geometry.original[1]}" if geometry else ""))
    im = Image.fromarray(edited.numpy().astype(np.uint8) * 255)
    im = im.resize(geometry.resized, Image.Resampling.NEAREST)
    return mask_from_image(apply_geometry(im.convert("RGB"), geometry))


def read_mask(path: str | os.PathLike, geometry: Geometry | None, size: tuple[int, int]) -> torch.Tensor:
    """A mask image (white = edited) fitted to the edit (fit_mask)."""
    return fit_mask(mask_from_image(read_image(path)), geometry, size, str(path))


def attention_mask(path: str | os.PathLike, size: tuple[int, int],
                   threshold: float = ATTENTION_THRESHOLD) -> torch.Tensor:
    """The edited region from a saved attention map (module docstring), at the edit's (W, H) `size`."""
    im = read_image(path).convert("L")
    if im.size != tuple(size):
        raise ValueError(f"{path}: the attention map is {im.width} x {im.height}, the edit {size[0]} x {size[1]}")
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255 >= threshold)


def attention_map_path(folder: str | os.PathLike, stem: str, source: str) -> Path:
    from ..batch import attention_map_name
    return Path(folder) / attention_map_name(stem, source)
