"""Noise regularization of DDIM inversion: push each predicted noise map eps towards i.i.d. N(0, 1).

pix2pix-zero (Parmar et al., arXiv:2302.03027v2), sec. 3.1 "Inverting Real Images": L_pair, squared
autocorrelation coefficients over a pyramid of the noise map (after StyleGAN2's noise regularizer,
arXiv:1912.04958, sec. 4), and L_KL, then a few gradient steps on eps at every inversion step. Acts on eps of
shape (B, C, H, W), each sample on its own; for a v-prediction model the caller converts v to eps first.
Options beside it: all_shifts.py (L_pair over every shift by the FFT), batched_line_search.py (the line search
without host waits); diffusers' batch-pooled variant lives in diffusers_compat.py.
"""
from typing import Callable

import torch


def pool2x2(eta: torch.Tensor) -> torch.Tensor:
    """F.avg_pool2d(eta, 2): the mean of each 2x2 block (odd sides floored), (..., H, W) -> (..., H//2, W//2).

    Four strided slices summed in the kernel's window order: the same numbers, but no per-call thread start-up,
    which on a busy CPU made each of the regularizer's ~200 small pools per inversion step cost milliseconds.
    """
    H, W = eta.shape[-2] // 2 * 2, eta.shape[-1] // 2 * 2
    return (eta[..., 0:H:2, 0:W:2] + eta[..., 0:H:2, 1:W:2] + eta[..., 1:H:2, 0:W:2] + eta[..., 1:H:2, 1:W:2]) / 4


def noise_pyramid(eps: torch.Tensor, rescale: bool = True) -> list[torch.Tensor]:
    """Levels eta^0 = eps, eta^{p+1} = 2 * avgpool_2x2(eta^p); the factor 2 keeps white noise at unit variance.

    Pool again while both sides are larger than 8 (the paper's rule: 64 -> 32 -> 16 -> 8) and even, so every
    level is an exact 2x2 partition of the one above: 96 -> 48 -> 24 -> 12 -> 6, 72 -> 36 -> 18 -> 9, 50 -> 25,
    24 x 40 -> 12 x 20 -> 6 x 10. An odd side stops the pyramid (pooling it would drop a row).
    rescale=False drops the factor 2, as the authors' code: level p of white noise then has variance 4^-p, so
    its squared autocorrelations, and their gradients' pull, are 16^-p of the rescaled pyramid's.
    """
    levels = [eps]
    while True:
        H, W = levels[-1].shape[-2:]
        if H % 2 or W % 2 or min(H, W) <= 8:
            return levels
        # NOTE(official): the authors (and diffusers) pool while the height is > 8, flooring odd sides and
        # ignoring the width, and without the factor 2, so level p of white noise has variance 4^-p
        # (diffusers_compat.noise_pyramid). lambda_ac = 20 was tuned on that scale (README, "pyramid_rescale").
        pooled = pool2x2(levels[-1])
        levels.append(2 * pooled if rescale else pooled)


def autocorrelation(eta: torch.Tensor, delta: int, dim: int) -> torch.Tensor:
    """rho(delta) = (1/(H W)) sum_{x,y} eta_{x,y} eta_{x-delta,y} along `dim`, circular; (..., H, W) -> (...).

    Not divided by the variance (as in the paper and the authors' code): for unit-variance maps it is the
    correlation coefficient. rho(delta) = rho(S - delta) for a side S, since rolling is circular.
    """
    return (eta * torch.roll(eta, shifts=delta, dims=dim)).mean(dim=(-2, -1))


def autocorrelations(eta: torch.Tensor, delta: torch.Tensor, dim: int) -> torch.Tensor:
    """`autocorrelation` of every map of eta (B, C, H, W) at its own shift: delta (C,) or (B, C) -> rho (B, C).

    One gather instead of a roll per map: rolled[..., i, :] = eta[..., (i - delta) mod S, :] along `dim`.
    """
    B, C, S = *eta.shape[:2], eta.shape[dim]
    delta = delta.to(eta.device, non_blocking=True)  # shifts drawn by a CPU generator: no wait for a GPU
    index = (torch.arange(S, device=eta.device) - delta.expand(B, C)[..., None]) % S  # (B, C, S)
    index = index[..., :, None] if dim in (-2, 2) else index[..., None, :]
    return (eta * eta.gather(dim, index.expand_as(eta))).mean(dim=(-2, -1))


def random_shifts(eps: torch.Tensor, generator: torch.Generator) -> list[list[torch.Tensor]]:
    """The shifts of one `pair_loss` estimate: for each pyramid level of eps, for each axis (h then w), C shifts
    delta ~ U{1, ..., K_p}, K_p = ceil(S_p/2) - 1 (the shifts in [1, S_p/2)), one torch.randint per axis.

    Nothing depends on B, so a sample's draws are the same alone or in a batch. Sides must be >= 3.
    """
    shifts = []
    for eta in noise_pyramid(eps):
        shifts.append([torch.randint(1, (eta.shape[dim] + 1) // 2, (eta.shape[1],), generator=generator,
                                     device=generator.device) for dim in (-2, -1)])
    # NOTE(official): the authors' src/utils/ddim_inv.py drew randrange(S_p // 2), shift 0 included, from its
    # first release (25b8857, Feb 2023) until commit ec33392 (Sep 2024), which draws randrange(1, S_p // 2)
    # like us; diffusers 0.42.1 still draws 0. rho(0)^2 is the squared second moment: it pulls the variance
    # to 0, against L_KL. Their shifts are unseeded and shared by both axes; ours are per axis and seeded.
    return shifts


def pair_loss(eps: torch.Tensor, shifts: list[list[torch.Tensor]], rescale: bool = True) -> torch.Tensor:
    """Random-shift estimate of L_pair used in the procedure, (B, C, H, W) -> (B,), at `random_shifts`.

    Sums rho(delta)^2 over levels, axes and channels at the drawn shifts. By the symmetry of rho, for each
    level, channel and axis:
        sum_{delta=1}^{S_p-1} rho(delta)^2 = 2 K_p E[rho(delta)^2] + [S_p even] rho(S_p/2)^2,
    i.e. all_shifts.pair_loss_exact = sum_p (2 K_p E[term_p] + Nyquist term_p) / (H_p W_p). Not divided by the map size:
    this is the authors' scale.
    """
    loss = eps.new_zeros(eps.shape[0])
    for eta, level_shifts in zip(noise_pyramid(eps, rescale), shifts):
        for dim, delta in zip((-2, -1), level_shifts):
            loss = loss + autocorrelations(eta, delta, dim).pow(2).sum(dim=1)  # all channels at once
    return loss


def kl_loss(eps: torch.Tensor) -> torch.Tensor:
    """L_KL (paper sec. 3.1) = var + mean^2 - 1 - log(var + 1e-7) of each sample's map, (B, C, H, W) -> (B,).

    var is the unbiased variance (torch.var's default, as the authors and diffusers); L_KL = -log(1 + 1e-7)
    ~ 0 at mean 0 and unbiased variance 1. This is twice KL(N(mean, var) || N(0, 1)), plus the 1e-7.
    """
    mean, var = eps.mean(dim=(1, 2, 3)), eps.var(dim=(1, 2, 3))
    return var + mean**2 - 1 - torch.log(var + 1e-7)


def descend(loss_fn: Callable[[torch.Tensor], torch.Tensor], eps: torch.Tensor, step: float) -> torch.Tensor:
    """One gradient step eps - s_b * grad L_b(eps) on a per-sample loss (B,) that cannot raise the loss.

    s_b starts at `step` and is halved while the step would raise sample b's loss or make it non-finite
    (backtracking line search with the simple decrease condition; Nocedal & Wright, Numerical Optimization,
    2nd ed., Algorithm 3.1). Where the plain gradient step already lowers the loss it is taken unchanged, so
    this is the paper's update wherever that update descends. A sample whose loss or gradient is not finite,
    or for which no step of `MAX_HALVINGS` halvings lowers the loss, is left as it is. The search tries one
    step after the other and stops at the first that every sample accepts (usually the first).
    """
    eps, grad, loss, finite = gradient(loss_fn, eps)
    with torch.no_grad():
        s = torch.full_like(loss, step)
        for _ in range(MAX_HALVINGS + 1):
            trial = eps - s.view(-1, 1, 1, 1) * grad
            keep = (loss_fn(trial) <= loss) | ~finite  # False where the trial loss is NaN
            if keep.all():
                return trial.detach()
            s = torch.where(keep, s, s / 2)
        return (eps - torch.where(keep, s, 0.0).view(-1, 1, 1, 1) * grad).detach()


def gradient(loss_fn: Callable[[torch.Tensor], torch.Tensor], eps: torch.Tensor):
    """(eps detached, grad L(eps) with non-finite samples' rows zeroed, L(eps) (B,), finite (B,)): what a line
    search starts from."""
    eps = eps.detach().requires_grad_(True)
    loss = loss_fn(eps)  # (B,)
    (grad,) = torch.autograd.grad(loss.sum(), eps)
    with torch.no_grad():
        finite = torch.isfinite(loss) & torch.isfinite(grad).flatten(1).all(dim=1)  # (B,)
        grad = torch.where(finite.view(-1, 1, 1, 1), grad, 0.0)
    return eps.detach(), grad, loss.detach(), finite


MAX_HALVINGS = 64  # 2^-64 ~ 5e-20: enough for any map whose loss is finite in float32


def regularize_eps(eps: torch.Tensor, generator: torch.Generator, lambda_ac: float = 20.0,
                   lambda_kl: float = 20.0, num_reg_steps: int = 5, num_ac_rolls: int = 5,
                   pyramid_rescale: bool = True, descend: Callable = descend) -> torch.Tensor:
    """Gradient steps on eps (paper sec. 3.1; the authors' ddim_inv.py); returns a new tensor, no graph.

    repeat num_reg_steps times:
        repeat num_ac_rolls times: eps <- eps - lambda_ac * grad L_pair(eps) / num_ac_rolls  (fresh shifts each)
        eps <- eps - lambda_kl * grad L_KL(eps)
    A term with lambda 0 is skipped and draws nothing. Defaults are the authors' (lambda_ac = lambda_kl = 20,
    5 x 5). The losses are per sample and summed, so each sample moves as it would alone. Every step is taken
    with `descend`: L_pair is quartic in eps, so a fixed step overshoots, and diverges, once eps is correlated
    or large enough (the x2 pyramid makes level p weigh 16^p more than in the authors' code, for which
    lambda_ac = 20 was tuned; pyramid_rescale=False uses theirs); there each step is shortened until it lowers
    its loss. `descend` may be batched_line_search.descend_batched (the same steps). Works inside
    torch.no_grad() and torch.inference_mode().
    """
    # NOTE(official): the authors' (and diffusers') steps are fixed and can overshoot; ours equal theirs
    # wherever theirs lower the loss.
    with torch.inference_mode(False), torch.enable_grad():
        eps = eps.clone()  # a normal tensor even when the caller's is an inference tensor
        for _ in range(num_reg_steps):
            if lambda_ac > 0:
                for _ in range(num_ac_rolls):
                    shifts = random_shifts(eps, generator)
                    eps = descend(lambda e: pair_loss(e, shifts, pyramid_rescale), eps, lambda_ac / num_ac_rolls)
            if lambda_kl > 0:
                eps = descend(kl_loss, eps, lambda_kl)
    return eps.detach()
