"""The regularizer's line search without waiting for the host: an option beside noise_reg.descend.

noise_reg.descend tries step s, then s/2, ..., stopping at the first every sample accepts; each try asks the
device a yes-or-no question, and on a GPU each answer is a synchronisation. `descend_batched` evaluates all
MAX_HALVINGS + 1 candidate steps in one call of the loss and picks each sample's first accepted step on the
device: the same result (Nocedal & Wright, Numerical Optimization, 2nd ed., Algorithm 3.1), no wait,
(MAX_HALVINGS + 1) x the loss work. The inversion uses it on any device but the CPU (options.py).
"""
from typing import Callable

import torch

from .noise_reg import MAX_HALVINGS, gradient


def descend_batched(loss_fn: Callable[[torch.Tensor], torch.Tensor], eps: torch.Tensor, step: float) -> torch.Tensor:
    """noise_reg.descend's step for every sample of eps (B, C, H, W), all halvings tried at once."""
    eps, grad, loss, finite = gradient(loss_fn, eps)
    with torch.no_grad():
        K, B = MAX_HALVINGS + 1, eps.shape[0]
        steps = step * 2.0 ** -torch.arange(K, device=eps.device, dtype=eps.dtype)  # (K,)
        trials = eps[None] - steps.view(K, 1, 1, 1, 1) * grad  # (K, B, C, H, W)
        keep = (loss_fn(trials.flatten(0, 1)).view(K, B) <= loss) | ~finite  # (K, B)
        first = keep.to(torch.uint8).argmax(dim=0)  # each sample's first accepted step (0 if none)
        s = torch.where(keep.any(dim=0), steps[first], 0.0)  # (B,)
        return (eps - s.view(-1, 1, 1, 1) * grad).detach()
