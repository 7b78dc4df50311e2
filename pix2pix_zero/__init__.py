"""pix2pix_zero: zero-shot image-to-image translation (Parmar et al., arXiv:2302.03027) on a hand-written
Stable Diffusion.

    from pix2pix_zero import EditConfig, edit_image, load_sd

The method is the package's top level (noise_reg, inversion, directions, editing, pipeline; the `diffusers`
setting in diffusers_compat); the models are in `models/`, checkpoint loading in `loading/`, and files,
images and folders in `tools/`. README.md has the map.
"""
import importlib

from .config import EditConfig

# The rest is imported on first use (PEP 562), so that `import pix2pix_zero.cli` and --help load no model code.
_LAZY = {"load_sd": "loading.load", "StableDiffusion": "models.sd", "EditResult": "pipeline", "edit_image": "pipeline"}
__all__ = ["EditConfig", "EditResult", "StableDiffusion", "edit_image", "load_sd"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
