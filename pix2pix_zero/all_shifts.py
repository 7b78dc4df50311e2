"""L_pair over all shifts at once by the FFT: an option beside the paper's regularizer (noise_reg.py).

The paper (Parmar et al., arXiv:2302.03027v2, sec. 3.1) estimates L_pair at a few random shifts per iteration.
By the autocorrelation theorem (Wiener-Khinchin, circular) every shift's autocorrelation comes from one FFT, so
L_pair can be computed exactly (`pair_loss_exact`, used to measure), and so can the random estimator's mean
(`pair_loss_expected`, on the same scale as the paper's estimator, so lambda_ac = 20 applies).
`regularize_eps_all_shifts` is the paper's procedure with that mean in place of the random draws
(`--pair-shifts all`). Maps are (B, C, H, W).
"""
import torch

from .noise_reg import descend, kl_loss, noise_pyramid


def autocorrelations_all(eta: torch.Tensor, dim: int) -> torch.Tensor:
    """`autocorrelation` at every shift delta = 0..S-1 along `dim` at once, (B, C, H, W) -> (B, C, S).

    Autocorrelation theorem (Wiener-Khinchin, circular): sum_i v_i v_{i-delta} = IDFT(|DFT(v)|^2)[delta] for
    each line v of the map along `dim`; summing the lines and dividing by H W gives rho(delta). O(HW log S)
    for all S shifts, against O(HW S) shift by shift.
    """
    S = eta.shape[dim]
    power = torch.fft.rfft(eta, dim=dim).abs().pow(2)  # |DFT|^2 of each line
    other = -1 if dim in (-2, 2) else -2
    lines = torch.fft.irfft(power, n=S, dim=dim).sum(dim=other)  # (B, C, S): sum of the lines' correlations
    return lines / (eta.shape[-2] * eta.shape[-1])


def pair_loss_exact(eps: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """L_pair (paper sec. 3.1) per sample, (B, C, H, W) -> (B,): over levels p, channels and both axes, the
    squared autocorrelation coefficients rho(delta)^2 for every shift delta = 1..S_p-1 (S_p the side along
    that axis), each level's sum divided by its map size S_p^2 = H_p * W_p ("normalized by the noise map size").

    For white noise each rho(delta)^2 is about 1 / S_p^2, so a level contributes about 2 C / S_p^3: coarse levels
    weigh more. The random estimator below keeps the authors' scale, for which lambda_ac = 20 is tuned.
    """
    loss = eps.new_zeros(eps.shape[0])
    for eta in noise_pyramid(eps, rescale):
        size = eta.shape[-2] * eta.shape[-1]
        for dim in (-2, -1):
            loss = loss + autocorrelations_all(eta, dim)[..., 1:].pow(2).sum(dim=(1, 2)) / size
    return loss


def pair_loss_expected(eps: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """The expectation of `pair_loss` over `random_shifts`, computed exactly, (B, C, H, W) -> (B,): over levels,
    axes and channels, the mean of rho(delta)^2 over delta = 1..K_p, K_p = ceil(S_p/2) - 1, all shifts at once
    by `autocorrelations_all`.

    The same scale as the random estimator (lambda_ac = 20 applies), without its sampling noise: one descent step
    of lambda_ac on it is, to first order, the num_ac_rolls steps of lambda_ac / num_ac_rolls on random draws.
    """
    loss = eps.new_zeros(eps.shape[0])
    for eta in noise_pyramid(eps, rescale):
        for dim in (-2, -1):
            K = (eta.shape[dim] + 1) // 2 - 1
            loss = loss + autocorrelations_all(eta, dim)[..., 1:K + 1].pow(2).mean(dim=-1).sum(dim=1)
    return loss


def regularize_eps_all_shifts(eps: torch.Tensor, generator: torch.Generator, lambda_ac: float = 20.0,
                              lambda_kl: float = 20.0, num_reg_steps: int = 5, num_ac_rolls: int = 5,
                              pyramid_rescale: bool = True, descend=descend) -> torch.Tensor:
    """noise_reg.regularize_eps with the inner loop over random shifts replaced by one step
    eps <- eps - lambda_ac * grad E[L_pair](eps) on `pair_loss_expected`: no draws (`generator` and
    num_ac_rolls are unused, kept so that both procedures take the same arguments), one gradient instead of
    num_ac_rolls. To first order this is the paper's inner loop of num_ac_rolls steps of lambda_ac / num_ac_rolls.
    """
    with torch.inference_mode(False), torch.enable_grad():
        eps = eps.clone()  # a normal tensor even when the caller's is an inference tensor
        for _ in range(num_reg_steps):
            if lambda_ac > 0:
                eps = descend(lambda e: pair_loss_expected(e, pyramid_rescale), eps, lambda_ac)
            if lambda_kl > 0:
                eps = descend(kl_loss, eps, lambda_kl)
    return eps.detach()
