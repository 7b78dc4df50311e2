"""Regularized DDIM inversion of a real image (pix2pix-zero, arXiv:2302.03027, sec. 3.2).

x0 = LATENT_SCALE * E(image); then for each step of `ddim.inversion_schedule`, eps = UNet(x, t, c) at
guidance scale 1 (c = the caption), eps pushed towards white noise by `noise_reg.regularize_eps`, and
x <- ddim_inverse_step(eps, x). The result x_inv, with its caption and settings, saves to safetensors and
loads again to edit without inverting. Latents are (B, 4, H/8, W/8).
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .config import EditConfig
from .finite import check_finite
from .models.ddim import alphas_cumprod, eps_from_output, ddim_inverse_step, inversion_schedule
from .noise_reg import regularize_eps
from .models.sd import StableDiffusion
from .models.vae import sample_posterior


def encode_image(sd: StableDiffusion, image: torch.Tensor, posterior: str = "mean",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Image (B, 3, H, W) in [-1, 1] -> x0 = LATENT_SCALE * z, z the posterior mean or a seeded sample."""
    mean, logvar = sd.vae.encode(image.to(sd.unet.conv_in.weight))
    z = mean if posterior == "mean" else sample_posterior(mean, logvar, generator)
    return check_finite(sd.latent_scale * z, "the encoded image x0", "VAE encoding")


@torch.no_grad()
def invert(sd: StableDiffusion, x0: torch.Tensor, c: torch.Tensor, config: EditConfig,
           generator: torch.Generator, progress: bool = True) -> torch.Tensor:
    """Deterministic DDIM inversion x0 -> x_inv over all N steps, each noise prediction regularized.

    The UNet sees, for N = 10, timesteps 1, 101, ..., 901 (the sampling timesteps reversed, as diffusers'
    DDIMInverseScheduler): step j evaluates eps at the current latent (level alpha_bar_prev) and timestep t,
    then moves it to level alpha_bar_t (see `ddim.inversion_schedule` for the table). The result lies at
    level alpha_bar[901], where sampling starts. `generator` draws the regularizer's random shifts.
    paper: the UNet output is converted to eps at the UNet's level alpha_bar_t, regularized per sample.
    diffusers: its batch-pooled losses; for v-prediction it steps the v output, which moves eps by
    alpha_bar_t times the eps-space step, so the lambdas are scaled by alpha_bar_t to reproduce it.
    """
    x = x0
    reg = dict(num_reg_steps=config.num_reg_steps, num_ac_rolls=config.num_ac_rolls, setting=config.setting)
    v = sd.prediction_type == "v_prediction"
    schedule = inversion_schedule(config.num_steps, alphas_cumprod())
    for j, (t, alpha_bar_t, alpha_bar_prev) in enumerate(tqdm(schedule, desc="inversion", disable=not progress,
                                                              leave=False)):
        where = f"inversion step {j + 1}/{len(schedule)} (t={t})"
        out = sd.unet(x, t, c)
        eps = check_finite(eps_from_output(out, x, alpha_bar_t, sd.prediction_type), "eps", where)
        scale = float(alpha_bar_t) if v and config.setting == "diffusers" else 1.0
        eps_reg = regularize_eps(eps.float(), generator, config.lambda_ac * scale, config.lambda_kl * scale,
                                 **reg).to(eps.dtype)
        if config.setting == "diffusers":  # step the (regularized) model output as DDIMInverseScheduler does
            out = out + (eps_reg - eps) / float(alpha_bar_t) ** 0.5 if v else eps_reg
            x = ddim_inverse_step(out, x, alpha_bar_t, alpha_bar_prev, sd.prediction_type)
        else:
            x = ddim_inverse_step(eps_reg, x, alpha_bar_t, alpha_bar_prev, "epsilon")
        check_finite(x, "the latent", where)
    return x


@dataclass
class Inversion:
    """What editing needs from an inversion: x_inv, the caption it was inverted with, and provenance."""
    x_inv: torch.Tensor  # (B, 4, H/8, W/8)
    x0: torch.Tensor  # the encoded image, for reference
    caption: str
    checkpoint: str  # StableDiffusion.identity of the model that inverted it
    settings: dict

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to a .safetensors file (tensors, and caption/settings as JSON metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        meta = {"caption": self.caption, "checkpoint": self.checkpoint, "settings": json.dumps(self.settings),
                "format": "pix2pix_zero.inversion/1"}
        save_file({"x_inv": self.x_inv.contiguous().cpu(), "x0": self.x0.contiguous().cpu()}, tmp, metadata=meta)
        os.replace(tmp, path)
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> "Inversion":
        path = Path(path)
        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}
        except (FileNotFoundError, SafetensorError, OSError) as e:
            raise ValueError(f"{path}: not a readable inversion file ({e})") from None
        if meta.get("format") != "pix2pix_zero.inversion/1" or {"x_inv", "x0"} - set(tensors) or \
                {"caption", "checkpoint", "settings"} - set(meta):
            raise ValueError(f"{path}: not a pix2pix_zero inversion (x_inv, x0 or its metadata are missing)")
        return Inversion(tensors["x_inv"], tensors["x0"], meta["caption"], meta["checkpoint"],
                         json.loads(meta["settings"]))
