"""Images as tensors: PIL <-> (B, 3, H, W) in [-1, 1], the resize policy, and atomic PNG writes.

Resize policy: keep the aspect ratio, scale so the longer side is `size`, then round each side to the
nearest multiple of 64 (at least 64), since the UNet halves the latent (1/8 of the image) three times.
A square input at size 512 becomes 512 x 512 (the paper's resolution). Resampling is Lanczos.
"""
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .files import atomic_path

MULTIPLE = 64


def fit_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(W, H) after the resize policy above."""
    scale = size / max(width, height)
    return tuple(max(MULTIPLE, round(side * scale / MULTIPLE) * MULTIPLE) for side in (width, height))


def load_image(path: str | os.PathLike, size: int = 512) -> torch.Tensor:
    """An image file -> (1, 3, H, W) float32 in [-1, 1]; a clear error for a missing or unreadable file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")  # phone photos: apply the EXIF orientation
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    im = im.resize(fit_size(*im.size, size), Image.Resampling.LANCZOS)
    return pil_to_tensor(im)


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)  # (H, W, 3) in [0, 1]
    return (x.permute(2, 0, 1)[None] * 2 - 1).contiguous()  # (1, 3, H, W) in [-1, 1]


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) in [-1, 1] -> an RGB image (values clamped)."""
    x = x.detach().float().cpu().reshape(-1, *x.shape[-2:])
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def side_by_side(images: list[Image.Image]) -> Image.Image:
    """Images in a row, left to right, on one canvas as tall as the tallest."""
    canvas = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)), "white")
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width
    return canvas


def save_png(im: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PNG atomically (a temporary file renamed into place), so no half-written file is ever left."""
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return Path(path)
