"""Inverting a real image (pix2pix-zero, arXiv:2302.03027, sec. 3.1 "Inverting Real Images"), and two more
faithful inversions offered beside the paper's.

x0 = LATENT_SCALE * E(image); then for each step of `ddim.inversion_schedule`, eps = UNet(x, t, c) at
guidance scale 1 (c = the caption), eps pushed towards white noise by `noise_reg.regularize_eps`, and
x <- ddim_inverse_step(eps, x). `invert_path` keeps every level [x0, x_1, ..., x_N] for Direct Inversion
(arXiv:2310.01506, applied while editing: editing.follow_inversion_path); `fixed_point_eps` solves each inverse
step's implicit equation (ReNoise, arXiv:2403.14602). Latents are (B, 4, H, W) at 1/8 of the image's size.
"""
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


def fixed_point_eps(sd: StableDiffusion, x_prev: torch.Tensor, t: int, c: torch.Tensor, alpha_bar_t, alpha_bar_prev,
                    iters: int, average: int = 1, where: str = "", residuals: list[float] | None = None,
                    check: Callable = check_finite) -> torch.Tensor:
    """The eps of an inverse DDIM step that solves x_t = ddim_inverse_step(eps(x_t, t), x_prev) by fixed-point
    iteration (ReNoise, Garibi et al., arXiv:2403.14602, sec. 3; AIDI, Pan et al., ICCV 2023, arXiv:2309.04907).

    Sampling steps from x_t with eps(x_t, t); plain DDIM inversion uses eps(x_prev, t) instead, the error that
    makes reconstruction drift. Iterating
        x^(0) = x_prev,  eps_k = eps(x^(k-1), t),  x^(k) = ddim_inverse_step(eps_k, x_prev),  k = 1..iters
    approaches the x_t that sampling maps back to x_prev exactly, where it converges (a contraction: roughly
    when (sqrt(1 - alpha_bar_t) - sqrt(alpha_bar_t (1 - alpha_bar_prev) / alpha_bar_prev)) |d eps/dx| < 1).
    iters = 1 is DDIM inversion's eps(x_prev). Returns the mean of the last `average` eps_k (ReNoise averages
    its last iterates' predictions), one UNet call per iteration. `residuals`, if given, receives the RMS of
    x^(k) - x^(k-1) = F(x^(k-1)) - x^(k-1), the fixed-point residual of iterate k-1, for k = 2..iters.
    """
    x_t, eps_sum, x_last = x_prev, 0, None
    for k in range(1, iters + 1):
        eps = unet_eps(sd, x_t, t, c, alpha_bar_t, f"{where}, fixed-point iteration {k}", check)
        if k > iters - average:
            eps_sum = eps_sum + eps
        x_t = ddim_inverse_step(eps, x_prev, alpha_bar_t, alpha_bar_prev)
        if residuals is not None and x_last is not None:
            residuals.append(((x_t - x_last) ** 2).mean().sqrt().item())
        x_last = x_t
    return eps if average == 1 else eps_sum / average


@torch.no_grad()
def invert_path(sd: StableDiffusion, x0: torch.Tensor, c: torch.Tensor, config: EditConfig,
                generator: torch.Generator, progress: bool = True,
                residuals: list[list[float]] | None = None) -> torch.Tensor:
    """Regularized inversion x0 -> x_inv over all N steps, keeping every level: (N + 1, B, 4, H, W), [0] = x0,
    [-1] = x_inv. Each step takes the eps of `config.inversion_method`: DDIM's eps(x_prev) for "ddim" and
    "direct" (which differ only while editing), `fixed_point_eps` for "fixed-point"; then the regularizer, on
    that final eps, and one ddim_inverse_step.

    The UNet sees, for N = 10, timesteps 1, 101, ..., 901 (the sampling timesteps reversed, as diffusers'
    DDIMInverseScheduler): step j evaluates eps at the current latent (level alpha_bar_prev) and timestep t,
    then moves it to level alpha_bar_t (see `ddim.inversion_schedule` for the table). The result lies at
    level alpha_bar[901], where sampling starts. `generator` draws the regularizer's random shifts.
    `residuals`, if given, receives each fixed-point step's residuals (see `fixed_point_eps`).
    """
    path = [x0]
    check = FiniteChecks(x0.device)  # on a GPU, no wait for the host in the loop
    schedule = inversion_schedule(config.num_steps, alphas_cumprod())
    for j, (t, alpha_bar_t, alpha_bar_prev) in enumerate(tqdm(schedule, desc="inversion", disable=not progress,
                                                              leave=False)):
        where = f"inversion step {j + 1}/{len(schedule)} (t={t})"
        x = path[-1]
        if config.inversion_method == "fixed-point":
            step_residuals = [] if residuals is not None else None
            eps = fixed_point_eps(sd, x, t, c, alpha_bar_t, alpha_bar_prev, config.inversion_iters,
                                  config.inversion_average, where, step_residuals, check)
            if residuals is not None:
                residuals.append(step_residuals)
        else:
            eps = unet_eps(sd, x, t, c, alpha_bar_t, where, check)
        eps = regularize_eps(eps.float(), generator, config.lambda_ac, config.lambda_kl, config.num_reg_steps,
                             config.num_ac_rolls, config.pyramid_rescale, config.pair_shifts).to(eps.dtype)
        path.append(check(ddim_inverse_step(eps, x, alpha_bar_t, alpha_bar_prev), "the latent", where))
    check.raise_first()
    return torch.stack(path)


def invert(sd: StableDiffusion, x0: torch.Tensor, c: torch.Tensor, config: EditConfig,
           generator: torch.Generator, progress: bool = True) -> torch.Tensor:
    """x_inv, the last level of `invert_path`: the paper's regularized DDIM inversion with the default config."""
    return invert_path(sd, x0, c, config, generator, progress)[-1]
