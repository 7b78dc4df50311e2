"""Regularized DDIM inversion of a real image (pix2pix-zero, arXiv:2302.03027, sec. 3.1 "Inverting Real Images").

x0 = LATENT_SCALE * E(image); then for each step of `ddim.inversion_schedule`, eps = UNet(x, t, c) at
guidance scale 1 (c = the caption), eps pushed towards white noise by `noise_reg.regularize_eps`, and
x <- ddim_inverse_step(eps, x). Latents are (B, 4, H, W) at 1/8 of the image's size.
"""
import torch
from tqdm.auto import tqdm

from .config import EditConfig
from .finite import check_finite
from .models.ddim import alphas_cumprod, ddim_inverse_step, eps_from_output, inversion_schedule
from .models.sd import StableDiffusion
from .models.vae import sample_posterior
from .noise_reg import regularize_eps

POSTERIORS = ("mean", "sample")


def encode_image(sd: StableDiffusion, image: torch.Tensor, posterior: str = "mean",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Image (B, 3, H, W) in [-1, 1] -> x0 = LATENT_SCALE * z, z the posterior mean or a sample from `generator`."""
    if posterior not in POSTERIORS:
        raise ValueError(f"posterior must be one of {POSTERIORS}, not {posterior!r}")
    if posterior == "sample" and generator is None:
        raise ValueError("posterior='sample' draws from a torch.Generator: pass generator=")
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
    """
    x = x0
    schedule = inversion_schedule(config.num_steps, alphas_cumprod())
    for j, (t, alpha_bar_t, alpha_bar_prev) in enumerate(tqdm(schedule, desc="inversion", disable=not progress,
                                                              leave=False)):
        where = f"inversion step {j + 1}/{len(schedule)} (t={t})"
        # NOTE(official): a v output is converted to eps at alpha_bar_t, the level of the timestep the UNet was
        # told, and the regularizer acts on that eps (the authors' code supports eps models only; diffusers
        # regularizes the v output: diffusers_compat.invert).
        eps = check_finite(eps_from_output(sd.unet(x, t, c), x, alpha_bar_t, sd.prediction_type), "eps", where)
        eps = regularize_eps(eps.float(), generator, config.lambda_ac, config.lambda_kl, config.num_reg_steps,
                             config.num_ac_rolls).to(eps.dtype)
        x = check_finite(ddim_inverse_step(eps, x, alpha_bar_t, alpha_bar_prev), "the latent", where)
    return x
