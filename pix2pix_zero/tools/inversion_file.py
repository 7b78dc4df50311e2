"""A saved inversion: x_inv, the encoded image x0, the caption and the settings, in one safetensors file.

Written by an edit (STEM-inversion.safetensors) and read back by `--inversion` to edit again without
inverting. The caption and settings travel as JSON in the safetensors metadata; nothing is pickled.
Format 2 adds x_path, every inversion level, when the inversion was made for Direct Inversion; format 1 files
(without it) are still read.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .files import atomic_path

FORMAT = "pix2pix_zero.inversion/2"
READABLE = ("pix2pix_zero.inversion/1", FORMAT)


@dataclass
class Inversion:
    """What editing needs from an inversion: x_inv, the caption it was inverted with, and provenance."""
    x_inv: torch.Tensor  # (B, 4, H, W)
    x0: torch.Tensor  # the encoded image, for reference
    caption: str
    checkpoint: str  # StableDiffusion.identity of the model that inverted it
    settings: dict
    x_path: torch.Tensor | None = None  # (N + 1, B, 4, H, W) levels x0 ... x_inv, for inversion_method "direct"

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to a .safetensors file (tensors, and caption/settings as JSON metadata)."""
        meta = {"caption": self.caption, "checkpoint": self.checkpoint, "settings": json.dumps(self.settings),
                "format": FORMAT}
        tensors = {"x_inv": self.x_inv, "x0": self.x0} | ({"x_path": self.x_path} if self.x_path is not None else {})
        with atomic_path(path) as tmp:
            # copies: x_inv is usually a view of x_path's last level, and safetensors refuses shared memory
            save_file({key: x.detach().to("cpu", copy=True).contiguous() for key, x in tensors.items()}, tmp,
                      metadata=meta)
        return Path(path)

    @staticmethod
    def load(path: str | os.PathLike) -> "Inversion":
        path = Path(path)
        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}
        except (FileNotFoundError, SafetensorError, OSError) as e:
            raise ValueError(f"{path}: not a readable inversion file ({e})") from None
        if meta.get("format") not in READABLE or {"x_inv", "x0"} - set(tensors) or \
                {"caption", "checkpoint", "settings"} - set(meta):
            raise ValueError(f"{path}: not a pix2pix_zero inversion (x_inv, x0 or its metadata are missing)")
        x_inv, x_path = tensors["x_inv"], tensors.get("x_path")
        if x_path is not None and (x_path.shape[1:] != x_inv.shape or not torch.equal(x_path[-1], x_inv)):
            raise ValueError(f"{path}: x_path {tuple(x_path.shape)} is not a path of inversion levels ending at x_inv "
                             f"{tuple(tensors['x_inv'].shape)}")
        return Inversion(x_inv, tensors["x0"], meta["caption"], meta["checkpoint"],
                         json.loads(meta["settings"]), x_path)
