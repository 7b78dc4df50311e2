"""Fixed-point inversion: an option beside the paper's DDIM inversion (inversion.py).

Each inverse DDIM step uses eps(x_prev, t), where sampling back from x_t will use eps(x_t, t): the mismatch
that makes reconstructions drift. ReNoise (Garibi et al., arXiv:2403.14602v1, sec. 3) and AIDI (Pan et al.,
ICCV 2023, arXiv:2309.04907v1) solve the step's implicit equation x_t = ddim_inverse_step(eps(x_t, t), x_prev) by
fixed-point iteration instead. `--inversion-method fixed-point`; options.py plugs `fixed_point_eps` into
inversion.invert_path as its `step_eps`. Latents (B, 4, H, W).
"""
from typing import Callable

import torch

from .finite import check_finite
from .inversion import unet_eps
from .models.ddim import ddim_inverse_step
from .models.sd import StableDiffusion


def fixed_point_eps(sd: StableDiffusion, x_prev: torch.Tensor, t: int, c: torch.Tensor, alpha_bar_t, alpha_bar_prev,
                    iters: int, average: int = 1, where: str = "", residuals: list[float] | None = None,
                    check: Callable = check_finite) -> torch.Tensor:
    """The eps of an inverse DDIM step that solves x_t = ddim_inverse_step(eps(x_t, t), x_prev).

    Iterating
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


def fixed_point_step_eps(iters: int, average: int, residuals: list[list[float]] | None = None) -> Callable:
    """A `step_eps` for inversion.invert_path: `fixed_point_eps` at every step; `residuals`, if given, receives
    one list of residuals per step."""
    def step_eps(sd, x_prev, t, c, alpha_bar_t, alpha_bar_prev, where, check):
        step_residuals = [] if residuals is not None else None
        eps = fixed_point_eps(sd, x_prev, t, c, alpha_bar_t, alpha_bar_prev, iters, average, where, step_residuals,
                              check)
        if residuals is not None:
            residuals.append(step_residuals)
        return eps
    return step_eps
