"""What one call of the regularizer does to white and to correlated noise, in each setting.

python bench/regularizer.py

eps (1, 4, 64, 64): white N(0, 1) noise, and the same blurred by a circular 3x3 box and rescaled to unit
variance (lag-1 correlation ~2/3). One call of the procedure with the default lambdas (20, 20, 5 x 5) in the
paper setting with the x2 pyramid (line search), with the authors' unscaled pyramid (--no-pyramid-rescale, line
search), with --pair-shifts all (one step per iteration on L_pair's exact mean over all shifts, by FFT), and in
the diffusers setting (unscaled, fixed steps). Reported: L_pair on the paper's x2 pyramid (pair_loss_exact;
white noise scores ~0.04 here), on the unscaled one, the variance, the lag-1 autocorrelation of the map itself
(white: ~0), and the call's time on one thread (median of 5), at 64 x 64 (SD at 512 px) and 32 x 32 (256 px).
"""
import statistics
import time

import torch
import torch.nn.functional as F

from pix2pix_zero import diffusers_compat
from pix2pix_zero.all_shifts import pair_loss_exact, regularize_eps_all_shifts
from pix2pix_zero.noise_reg import autocorrelation, regularize_eps


def blurred(eps: torch.Tensor) -> torch.Tensor:
    C = eps.shape[1]
    out = F.conv2d(F.pad(eps, (1, 1, 1, 1), mode="circular"), eps.new_ones(C, 1, 3, 3) / 9, groups=C)
    return out / out.std()


def describe(eps: torch.Tensor) -> str:
    lag1 = (autocorrelation(eps, 1, -1) + autocorrelation(eps, 1, -2)).mean().item() / 2
    return (f"{pair_loss_exact(eps).item():8.4f} {pair_loss_exact(eps, False).item():9.4f} "
            f"{eps.var().item():6.3f} {lag1:7.3f}")


def timed(procedure, eps: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The procedure's result (seed 1) and the median wall time of 5 calls."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = procedure(eps, torch.Generator().manual_seed(1))
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    procedures = {
        "paper, x2 pyramid": lambda e, g: regularize_eps(e, g),
        "paper, unscaled pyramid": lambda e, g: regularize_eps(e, g, pyramid_rescale=False),
        "paper, all shifts (FFT)": lambda e, g: regularize_eps_all_shifts(e, g),
        "diffusers setting": lambda e, g: diffusers_compat.regularize_eps(e, g),
    }
    print(f"{'map':14s} {'after':26s} {'L_pair x2':>8s} {'unscaled':>9s} {'var':>6s} {'lag-1':>7s} {'ms':>6s}")
    for side in (64, 32):
        white = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
        for name, eps in ((f"white {side}", white), (f"blurred {side}", blurred(white))):
            print(f"{name:14s} {'(input)':26s} {describe(eps)}")
            for label, procedure in procedures.items():
                out, seconds = timed(procedure, eps)
                print(f"{'':14s} {label:26s} {describe(out)} {seconds * 1e3:6.1f}")


if __name__ == "__main__":
    main()
