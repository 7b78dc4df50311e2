"""A saved inversion: x_inv, the encoded image x0, the caption and the settings, in one safetensors file.

Written by an edit (STEM-inversion.safetensors) and read back by `--inversion` to edit again without
inverting. The caption and settings travel as JSON in the safetensors metadata; nothing is pickled.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .files import atomic_path

FORMAT = "pix2pix_zero.inversion/1"


@dataclass
class Inversion:
    """What editing needs from an inversion: x_inv, the caption it was inverted with, and provenance."""
    x_inv: torch.Tensor  # (B, 4, H, W)
    x0: torch.Tensor  # the encoded image, for reference
    caption: str
    checkpoint: str  # StableDiffusion.identity of the model that inverted it
    settings: dict

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to a .safetensors file (tensors, and caption/settings as JSON metadata)."""
        meta = {"caption": self.caption, "checkpoint": self.checkpoint, "settings": json.dumps(self.settings),
                "format": FORMAT}
        with atomic_path(path) as tmp:
            save_file({"x_inv": self.x_inv.contiguous().cpu(), "x0": self.x0.contiguous().cpu()}, tmp, metadata=meta)
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
        if meta.get("format") != FORMAT or {"x_inv", "x0"} - set(tensors) or \
                {"caption", "checkpoint", "settings"} - set(meta):
            raise ValueError(f"{path}: not a pix2pix_zero inversion (x_inv, x0 or its metadata are missing)")
        return Inversion(tensors["x_inv"], tensors["x0"], meta["caption"], meta["checkpoint"],
                         json.loads(meta["settings"]))
