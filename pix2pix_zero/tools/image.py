"""Images as tensors: reading any common image file, the size policy, PIL <-> (B, 3, H, W) in [-1, 1], PNG writes.

Size policy (one for the whole project; `--size S`, default 512):
  1. scale so the shorter side is S, keeping the aspect ratio (Lanczos); but if the longer side would then
     exceed 2S, scale so the longer side is 2S instead (the shorter side ends below S): memory stays bounded;
  2. make each side a multiple of 64 by cropping the centre (default) or, with `pad`, by padding both ends
     with copies of the edge pixels. 64 because the UNet works on latents of 1/8 the image side and halves
     them three times, concatenating skips of equal size: the latent side must divide by 8.
The aspect ratio is never changed by stretching; what was cropped or padded is returned (`Geometry`) and
recorded in each edit's settings JSON. A square image at S = 512 becomes 512 x 512, the paper's resolution.

Reading: PNG, JPEG, WebP, BMP, TIFF (whatever Pillow reads); EXIF orientation applied; transparency
composited on white; grayscale, palette and CMYK converted to RGB; 16-bit samples scaled (not clipped) to 8.
An image whose header claims more than MAX_PIXELS is refused before its pixels are decoded.
"""
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .files import atomic_path

MULTIPLE = 64
MAX_PIXELS = 89_478_485  # Pillow's own bomb-warning threshold (~9459 x 9459): ~268 MB as 8-bit RGB
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Geometry:
    """How an input became the edited image, in pixels as (W, H); boxes as (left, top, right, bottom)."""
    original: tuple[int, int]  # after EXIF orientation
    resized: tuple[int, int]  # after scaling (step 1)
    crop: tuple[int, int, int, int] | None  # the kept box of the resized image, or None
    pad: tuple[int, int, int, int] | None  # pixels added on each side, or None
    size: tuple[int, int]  # the processed image: what is inverted, edited and written

    def to_dict(self) -> dict:
        return {k: list(v) if v is not None else None for k, v in asdict(self).items()}


def geometry_time_ids(geometry: dict) -> tuple[int, ...]:
    """SDXL's six size/crop numbers (models.sd.sdxl_time_ids) for an image of `Geometry.to_dict()`: the file's
    size, the crop's top-left corner in the resized image (0, 0 when padded or uncropped), the edited size."""
    (W0, H0), (W, H) = geometry["original"], geometry["size"]
    left, top = geometry["crop"][:2] if geometry.get("crop") else (0, 0)
    return (H0, W0, top, left, H, W)


def plan_geometry(width: int, height: int, size: int = 512, pad: bool = False, name: str = "image") -> Geometry:
    """The size policy above for a (width, height) image, without touching pixels."""
    if size <= 0 or size % 8:
        raise ValueError(f"--size must be a positive multiple of 8, not {size}")
    scale = size / min(width, height)
    if max(width, height) * scale > 2 * size:  # the cap on the longer side
        scale = 2 * size / max(width, height)
    resized = (max(1, round(width * scale)), max(1, round(height * scale)))
    if pad:
        final = tuple(math.ceil(side / MULTIPLE) * MULTIPLE for side in resized)
        before = tuple((f - r) // 2 for f, r in zip(final, resized))
        return Geometry((width, height), resized, None,
                        (before[0], before[1], final[0] - resized[0] - before[0], final[1] - resized[1] - before[1]),
                        final)
    final = tuple(side // MULTIPLE * MULTIPLE for side in resized)
    if min(final) == 0:
        raise ImageError(f"{name}: {width} x {height} is too thin: scaled to {resized[0]} x {resized[1]} (longer "
                         f"side at most 2 x --size) it has a side under {MULTIPLE} px; use --pad to pad it")
    left, top = (resized[0] - final[0]) // 2, (resized[1] - final[1]) // 2
    return Geometry((width, height), resized, (left, top, left + final[0], top + final[1]), None, final)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16-bit gray scaled by 255/65535, transparency composited on white."""
    if im.mode in SIXTEEN_BIT:
        gray = np.asarray(im, dtype=np.float64) * (255 / 65535)
        return Image.fromarray(np.rint(gray).astype(np.uint8), "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("RGB")


def read_image(path: str | os.PathLike) -> Image.Image:
    """An image file -> an 8-bit RGB PIL image, upright; ImageError naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused just below, with our message
            with Image.open(path) as im:  # reads the header only
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(f"{path}: its header claims {im.width} x {im.height} pixels, more than "
                                     f"{MAX_PIXELS:,}; refused before decoding (a decompression bomb, or a scan "
                                     "too large to edit: downscale it first)")
                return to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own refusal, above 2 x MAX_PIXELS
        raise ImageError(f"{path}: its header claims too many pixels; refused before decoding (a decompression "
                         f"bomb, or a scan too large to edit: downscale it first) ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (PNG, JPEG, WebP, BMP, TIFF, ...)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from None


def apply_geometry(im: Image.Image, g: Geometry) -> Image.Image:
    im = im.resize(g.resized, Image.Resampling.LANCZOS) if im.size != g.resized else im
    if g.crop is not None:
        return im.crop(g.crop)
    left, top, right, bottom = g.pad
    return Image.fromarray(np.pad(np.asarray(im), ((top, bottom), (left, right), (0, 0)), mode="edge"))


def load_image(path: str | os.PathLike, size: int = 512, pad: bool = False) -> tuple[torch.Tensor, Geometry]:
    """An image file -> ((1, 3, H, W) float32 in [-1, 1], its Geometry) under the size policy above."""
    im = read_image(path)
    g = plan_geometry(*im.size, size, pad, str(path))
    return pil_to_tensor(apply_geometry(im, g)), g


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
