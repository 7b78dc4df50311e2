"""pix2pix_zero: zero-shot image-to-image translation (Parmar et al., arXiv:2302.03027) on a hand-written
Stable Diffusion.

    from pix2pix_zero import EditConfig, edit_image, load_sd

The method is the package's top level (noise_reg, inversion, directions, editing, pipeline; the `diffusers`
setting in diffusers_compat); the models are in `models/`, checkpoint loading in `loading/`, and files,
images and folders in `tools/`. README.md has the map.
"""
from .config import EditConfig
from .loading.load import load_sd
from .models.sd import StableDiffusion
from .pipeline import EditResult, edit_image

__all__ = ["EditConfig", "EditResult", "StableDiffusion", "edit_image", "load_sd"]
