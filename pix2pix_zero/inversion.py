"""Inverting a real image (pix2pix-zero, arXiv:2302.03027v2, sec. 3.1 "Inverting Real Images").

x0 = LATENT_SCALE * E(image); then for each step of `ddim.inversion_schedule`, eps = UNet(x, t, c) at
guidance scale 1 (c = the caption), eps pushed towards white noise by `noise_reg.regularize_eps`, and
x <- ddim_inverse_step(eps, x). `invert_path` keeps every level [x0, x_1, ..., x_N] (Direct Inversion edits
along them). Latents are (B, 4, H, W) at 1/8 of the image's size.
"""
from functools import partial
from typing import Callable

import torch
from tqdm.auto import tqdm

from .config import POSTERIORS, EditConfig
from .finite import FiniteChecks, check_finite
from .models.ddim import alphas_cumprod, ddim_inverse_step, eps_from_output, inversion_schedule
from .models.sd import StableDiffusion
from .models.vae import sample_posterior
from .noise_reg import regularize_eps

def encode_image(sd: StableDiffusion, image: torch.Tensor, posterior: str = "mean",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Image (B, 3, H, W) in [-1, 1] -> x0 = LATENT_SCALE * z, z the posterior mean or a sample from `generator`."""
    if posterior not in POSTERIORS:
        raise ValueError(f"posterior must be one of {POSTERIORS}, not {posterior!r}")
    if posterior == "sample" and generator is None:
        raise ValueError("posterior='sample' draws from a torch.Generator: pass generator=")
    mean, logvar = sd.vae.encode(image.to(sd.vae.encoder.conv_in.weight))  # at the VAE's dtype (fp32 by default)
    z = mean if posterior == "mean" else sample_posterior(mean, logvar, generator)
    return check_finite(sd.latent_scale * z, "the encoded image x0", "VAE encoding").to(sd.unet.conv_in.weight.dtype)


def unet_eps(sd: StableDiffusion, x: torch.Tensor, t: int, c: torch.Tensor, alpha_bar_t, where: str,
             check: Callable = check_finite) -> torch.Tensor:
    """eps = UNet(x, t, c) at guidance scale 1, a v output converted to eps at level alpha_bar_t; `check` is
    check_finite or a loop's FiniteChecks."""
    # NOTE(official): a v output is converted to eps at alpha_bar_t, the level of the timestep the UNet was
    # told, and the regularizer acts on that eps (the authors' code supports eps models only; diffusers
    # regularizes the v output: diffusers_compat.invert).
    return check(eps_from_output(sd.unet(x, t, c), x, alpha_bar_t, sd.prediction_type), "eps", where)


def ddim_eps(sd: StableDiffusion, x_prev: torch.Tensor, t: int, c: torch.Tensor, alpha_bar_t, alpha_bar_prev,
             where: str, check: Callable = check_finite) -> torch.Tensor:
    """The eps of one inverse DDIM step: UNet(x_prev, t, c), the prediction at the latent the step starts from
    (DDIM inversion's approximation of the ODE's step, Song et al., arXiv:2010.02502v4, sec. 4.3)."""
    return unet_eps(sd, x_prev, t, c, alpha_bar_t, where, check)


def regularizer_settings(config: EditConfig) -> dict:
    """The keyword arguments of noise_reg.regularize_eps that config sets."""
    return {"lambda_ac": config.lambda_ac, "lambda_kl": config.lambda_kl, "num_reg_steps": config.num_reg_steps,
            "num_ac_rolls": config.num_ac_rolls, "pyramid_rescale": config.pyramid_rescale}


@torch.no_grad()
def invert_path(sd: StableDiffusion, x0: torch.Tensor, c: torch.Tensor, config: EditConfig,
                generator: torch.Generator, progress: bool = True, step_eps: Callable = ddim_eps,
                regularize: Callable | None = None) -> torch.Tensor:
    """Regularized DDIM inversion x0 -> x_inv over all N steps, keeping every level: (N + 1, B, 4, H, W),
    [0] = x0, [-1] = x_inv. Each step takes eps = step_eps(...) (DDIM's eps(x_prev)), regularizes it
    (noise_reg.regularize_eps with config's lambdas, shifts drawn from `generator`), and takes one
    ddim_inverse_step.

    The UNet sees, for N = 10, timesteps 1, 101, ..., 901 (the sampling timesteps reversed, as diffusers'
    DDIMInverseScheduler): step j evaluates eps at the current latent (level alpha_bar_prev) and timestep t,
    then moves it to level alpha_bar_t (see `ddim.inversion_schedule` for the table). The result lies at
    level alpha_bar[901], where sampling starts. Options beyond the paper plug in as `step_eps` (fixed_point.py)
    and `regularize(eps, generator)` (all_shifts.py, batched_line_search.py): options.invert_path picks them
    from config.
    """
    if (step_eps is ddim_eps and config.inversion_method == "fixed-point") or (
            regularize is None and config.pair_shifts != "random"):
        raise ValueError("inversion.invert_path runs the paper's inversion; inversion_method "
                         f"{config.inversion_method!r} and pair_shifts {config.pair_shifts!r} are plugged in by "
                         "options.invert_path")
    if regularize is None:
        regularize = partial(regularize_eps, **regularizer_settings(config))
    path = [x0]
    check = FiniteChecks(x0.device)  # on a GPU, no wait for the host in the loop
    schedule = inversion_schedule(config.num_steps, alphas_cumprod())
    for j, (t, alpha_bar_t, alpha_bar_prev) in enumerate(tqdm(schedule, desc="inversion", disable=not progress,
                                                              leave=False)):
        where = f"inversion step {j + 1}/{len(schedule)} (t={t})"
        x = path[-1]
        eps = step_eps(sd, x, t, c, alpha_bar_t, alpha_bar_prev, where, check)
        eps = regularize(eps.float(), generator).to(eps.dtype)  # paper sec. 3.1
        path.append(check(ddim_inverse_step(eps, x, alpha_bar_t, alpha_bar_prev), "the latent", where))
    check.raise_first()
    return torch.stack(path)


def invert(sd: StableDiffusion, x0: torch.Tensor, c: torch.Tensor, config: EditConfig,
           generator: torch.Generator, progress: bool = True) -> torch.Tensor:
    """x_inv, the last level of `invert_path`: the paper's regularized DDIM inversion with the default config."""
    return invert_path(sd, x0, c, config, generator, progress)[-1]
