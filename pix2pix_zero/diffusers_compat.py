"""The `diffusers` setting: diffusers 0.42.1's StableDiffusionPix2PixZeroPipeline, step for step, quirks included.

Everything that setting does differently from the paper lives here, built from the paper's pieces in
noise_reg.py, inversion.py and editing.py (which know nothing of this module). Each departure is marked
NOTE(official). The tests check the whole pipeline against diffusers' own on identical random weights.
  - regularizer: a pyramid without the x2 rescale that looks at the height only, one shift for both axes
    drawn in [0, S/2) for each (sample, channel) in turn, L_KL pooled over the batch, fixed gradient steps;
  - inversion: the VAE posterior is sampled; for v-prediction the regularized eps is put back into the v output
    and the v output is stepped;
  - editing: the reference records the maps of both guidance halves; the edit guides [x_t; x_t] against them
    separately and continues from the unconditional half.
"""
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import editing
from .config import EditConfig
from .editing import cfg_output, xa_guidance
from .finite import FiniteChecks
from .models.attention import explicit_cross_attention, record_cross_attention
from .models.ddim import alphas_cumprod, ddim_inverse_step, ddim_step, eps_from_output, inversion_schedule
from .models.sd import StableDiffusion
from .noise_reg import autocorrelations, pool2x2

POSTERIOR = "sample"  # NOTE(official): diffusers' `invert` samples the VAE posterior (from the run's generator)


# --- the regularizer: diffusers' `auto_corr_loss` and `kl_divergence`, the authors' code batched ---------------

def noise_pyramid(eps: torch.Tensor) -> list[torch.Tensor]:
    """Levels eta^0 = eps, eta^{p+1} = avgpool_2x2(eta^p), pooling while the height is > 8 (odd sides floored)."""
    # NOTE(official): no x2, so level p of white noise has variance 4^-p; the width is never looked at.
    levels = [eps]
    while levels[-1].shape[-2] > 8:
        levels.append(pool2x2(levels[-1]))
    return levels


def pair_loss(eps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """diffusers' `auto_corr_loss`, a scalar for the whole batch.

    Draw order, to match it: for sample i, for channel j, for level p, one torch.randint(S_p // 2, (1,)) with
    S_p the level's height; the same delta serves both axes.
    """
    # NOTE(official): delta is in [0, S_p/2), 0 included (see noise_reg.random_shifts); the width's shift range
    # follows the height. Each (sample, channel) pair draws in turn, so a sample's shifts depend on its index.
    levels = noise_pyramid(eps)
    B, C = eps.shape[:2]
    # all draws first, in diffusers' order (sample, channel, level), then every map at once
    delta = torch.cat([torch.randint(eta.shape[-2] // 2, (1,), generator=generator, device=generator.device)
                       for _ in range(B * C) for eta in levels]).view(B, C, len(levels))
    return sum((autocorrelations(eta, delta[..., p], -2) ** 2 + autocorrelations(eta, delta[..., p], -1) ** 2).sum()
               for p, eta in enumerate(levels))


def kl_loss(eps: torch.Tensor) -> torch.Tensor:
    """diffusers' `kl_divergence`: L_KL with one mean and one (unbiased) variance over the whole batch."""
    # NOTE(official): the authors' code asserts batch size 1; diffusers' pooling couples the samples of a batch.
    mean, var = eps.mean(), eps.var()
    return var + mean**2 - 1 - torch.log(var + 1e-7)


def plain_step(loss_fn: Callable[[torch.Tensor], torch.Tensor], eps: torch.Tensor, step: float) -> torch.Tensor:
    """eps - step * grad loss(eps) for a scalar loss: a fixed step, which can overshoot (noise_reg.descend)."""
    eps = eps.detach().requires_grad_(True)
    return (eps - step * torch.autograd.grad(loss_fn(eps), eps)[0]).detach()


def regularize_eps(eps: torch.Tensor, generator: torch.Generator, lambda_ac: float = 20.0,
                   lambda_kl: float = 20.0, num_reg_steps: int = 5, num_ac_rolls: int = 5) -> torch.Tensor:
    """The procedure of noise_reg.regularize_eps with the losses above and fixed steps, as diffusers' `invert`."""
    with torch.inference_mode(False), torch.enable_grad():
        eps = eps.clone()
        for _ in range(num_reg_steps):
            if lambda_ac > 0:
                for _ in range(num_ac_rolls):
                    eps = plain_step(lambda e: pair_loss(e, generator), eps, lambda_ac / num_ac_rolls)
            if lambda_kl > 0:
                eps = plain_step(kl_loss, eps, lambda_kl)
    return eps.detach()


# --- inversion ----------------------------------------------------------------------------------------------

@torch.no_grad()
def invert(sd: StableDiffusion, x0: torch.Tensor, c: torch.Tensor, config: EditConfig,
           generator: torch.Generator, progress: bool = True) -> torch.Tensor:
    """inversion.invert as diffusers' `invert` runs it: the regularizer above, and for v-prediction the
    regularized eps put back into the v output, which DDIMInverseScheduler then steps.

    Stepping v moves eps by alpha_bar_t times the eps-space step, so the lambdas are scaled by alpha_bar_t to
    reproduce it.
    """
    x = x0
    check = FiniteChecks(x0.device)  # on a GPU, no wait for the host in the loop
    v = sd.prediction_type == "v_prediction"
    schedule = inversion_schedule(config.num_steps, alphas_cumprod())
    for j, (t, alpha_bar_t, alpha_bar_prev) in enumerate(tqdm(schedule, desc="inversion", disable=not progress,
                                                              leave=False)):
        where = f"inversion step {j + 1}/{len(schedule)} (t={t})"
        out = sd.unet(x, t, c)
        eps = check(eps_from_output(out, x, alpha_bar_t, sd.prediction_type), "eps", where)
        scale = float(alpha_bar_t) if v else 1.0
        eps_reg = regularize_eps(eps.float(), generator, config.lambda_ac * scale, config.lambda_kl * scale,
                                 config.num_reg_steps, config.num_ac_rolls).to(eps.dtype)
        # NOTE(official): DDIMInverseScheduler converts a v output at alpha_bar_prev while the UNet saw t.
        out = out + (eps_reg - eps) / float(alpha_bar_t) ** 0.5 if v else eps_reg
        x = check(ddim_inverse_step(out, x, alpha_bar_t, alpha_bar_prev, sd.prediction_type), "the latent", where)
    check.raise_first()
    return x


# --- editing ------------------------------------------------------------------------------------------------

@torch.no_grad()
def reference_step(sd: StableDiffusion, x_t, t, alpha_bar_t, alpha_bar_prev, c, c_neg, config: EditConfig):
    """editing.reference_step, but M_t^ref holds the maps of both guidance halves, [c_neg rows; c rows], from
    one batched call, as diffusers' pipeline records them."""
    with record_cross_attention(sd.unet) as maps:
        out = cfg_output(sd, torch.cat([x_t, x_t]), t, c, c_neg, config.guidance_scale)
    return ddim_step(out, x_t, alpha_bar_t, alpha_bar_prev, sd.prediction_type), dict(maps)


@torch.no_grad()
def edit_step(sd: StableDiffusion, x_t, t, alpha_bar_t, alpha_bar_prev, c_edit, c_neg, maps_ref,
              config: EditConfig) -> torch.Tensor:
    """editing.edit_step as diffusers runs it: [x_t; x_t] for the (c_neg, c_edit) halves are guided separately
    against both halves of M_ref; both guided halves are fed to the UNet."""
    # NOTE(official): the attention loss averages over the 2B rows, so each half moves by 1/(2B) of its gradient.
    x_in = xa_guidance(sd, torch.cat([x_t, x_t]), t, torch.cat([c_neg, c_edit]), maps_ref, config.lambda_xa)
    with explicit_cross_attention(sd.unet):
        out = cfg_output(sd, x_in, t, c_edit, c_neg, config.guidance_scale)
    # NOTE(official): diffusers continues from the unconditional half of the guided pair.
    x_t = x_in.chunk(2)[0]
    return ddim_step(out, x_t, alpha_bar_t, alpha_bar_prev, sd.prediction_type)


def edit(sd: StableDiffusion, x_inv, c, delta_cs, c_neg, config: EditConfig, progress: bool = True,
         on_reference=None):
    """editing.edit (the reference and the edits, step by step) with the two steps above."""
    return editing.edit(sd, x_inv, c, delta_cs, c_neg, config, progress, on_reference,
                        reference_step=reference_step, edit_step=edit_step)
