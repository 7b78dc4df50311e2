"""The options beyond the paper, plugged into the paper's loops as EditConfig asks.

inversion.invert_path and editing.edit run the paper (arXiv:2302.03027v2, sec. 3.1 and 3.3) and take the
options as callables, without importing them: `inversion_method` "fixed-point" (fixed_point.py) or "direct"
(direct_inversion.py), `pair_shifts` "all" (all_shifts.py), and on any device but the CPU the line search that
never waits for the host (batched_line_search.py). pipeline.edit_image, the world's bench and the app call
`invert_path` and `edit` here, so a config means the same run everywhere.
"""
from functools import partial
from typing import Callable

import torch

from . import editing, inversion
from .all_shifts import regularize_eps_all_shifts
from .batched_line_search import descend_batched
from .config import EditConfig
from .direct_inversion import DirectInversion
from .fixed_point import fixed_point_step_eps
from .models.sd import StableDiffusion
from .noise_reg import descend, regularize_eps


def regularizer(config: EditConfig, device: torch.device | str) -> Callable:
    """regularize(eps, generator): the paper's regularizer, or with pair_shifts "all" the FFT one; the line
    search batched on any device but the CPU (the same steps, no host waits)."""
    procedure = regularize_eps_all_shifts if config.pair_shifts == "all" else regularize_eps
    search = descend if torch.device(device).type == "cpu" else descend_batched
    return partial(procedure, **inversion.regularizer_settings(config), descend=search)


def invert_path(sd: StableDiffusion, x0: torch.Tensor, c: torch.Tensor, config: EditConfig,
                generator: torch.Generator, progress: bool = True,
                residuals: list[list[float]] | None = None) -> torch.Tensor:
    """inversion.invert_path with config's options: (N + 1, B, 4, H, W) levels, [0] = x0, [-1] = x_inv.
    `residuals`, if given, receives each fixed-point step's residuals (fixed_point.fixed_point_eps)."""
    step_eps = inversion.ddim_eps
    if config.inversion_method == "fixed-point":
        step_eps = fixed_point_step_eps(config.inversion_iters, config.inversion_average, residuals)
    return inversion.invert_path(sd, x0, c, config, generator, progress, step_eps=step_eps,
                                 regularize=regularizer(config, x0.device))


def edit(sd: StableDiffusion, x_inv: torch.Tensor, c: torch.Tensor, delta_cs: list[torch.Tensor],
         c_neg: torch.Tensor, config: EditConfig, progress: bool = True, on_reference: Callable | None = None,
         x_path: torch.Tensor | None = None, **steps) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """editing.edit with config's options: with inversion_method "direct" and the inversion's levels x_path,
    Direct Inversion after every step. `steps`: reference_step= and edit_step= (diffusers_compat passes its
    own)."""
    after_step = None
    if config.inversion_method == "direct" and x_path is not None:
        after_step = DirectInversion(x_path, x_inv, config.num_steps)
    return editing.edit(sd, x_inv, c, delta_cs, c_neg, config, progress, on_reference, after_step=after_step,
                        **steps)
