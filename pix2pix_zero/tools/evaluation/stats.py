"""Summaries of per-image metrics: mean, median, a 95% percentile-bootstrap interval of the mean (Efron &
Tibshirani 1993, ch. 13) from a seeded torch.Generator, and the paired bootstrap of the mean difference
between two methods on the same images. NaN values (a metric undefined for that image, e.g. a mask that
covers everything) are counted and left out, as PIE-Bench's evaluator does; inf (PSNR of identical images)
is kept, so a mean with one inf is inf.
"""
import math
from dataclasses import dataclass

import torch

DRAWS = 2000
LEVEL = 0.95


@dataclass
class Summary:
    mean: float
    median: float
    low: float  # the bootstrap interval of the mean
    high: float
    count: int  # values used
    nan: int  # values left out (NaN)


def bootstrap_interval(x: torch.Tensor, seed: int = 0, draws: int = DRAWS, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the mean of x (n,) over `draws` resamples with replacement."""
    n = x.numel()
    if n == 1:
        return x.item(), x.item()
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(n, (draws, n), generator=g)].mean(dim=1)  # (draws,)
    if not torch.isfinite(means).all():  # an inf value: every resample that holds it has an infinite mean
        means = means.sort().values
        k = lambda q: means[min(draws - 1, max(0, math.ceil(q * draws) - 1))].item()
        return k((1 - level) / 2), k((1 + level) / 2)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=means.dtype)
    low, high = torch.quantile(means, q).tolist()
    return low, high


def median(x: torch.Tensor) -> float:
    """The middle value, or the mean of the two middle ones (inf-safe: two infs give inf)."""
    s, n = x.sort().values, x.numel()
    return s[n // 2].item() if n % 2 else (s[n // 2 - 1].item() + s[n // 2].item()) / 2


def summarize(values: list[float], seed: int = 0, draws: int = DRAWS) -> Summary:
    x = torch.tensor([float(v) for v in values], dtype=torch.float64)
    used = x[~torch.isnan(x)]
    nan = x.numel() - used.numel()
    if used.numel() == 0:
        return Summary(math.nan, math.nan, math.nan, math.nan, 0, nan)
    low, high = bootstrap_interval(used, seed, draws)
    return Summary(used.mean().item(), median(used), low, high, used.numel(), nan)


def paired_difference(a: list[float], b: list[float], seed: int = 0, draws: int = DRAWS) -> Summary:
    """Summary of b - a over the images where both are numbers (a pair with NaN, or inf - inf, is left out and
    counted in `nan`): a paired bootstrap, one resample of images used for both methods."""
    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths: {len(a)} and {len(b)}")
    diff = [float(y) - float(x) for x, y in zip(a, b)]
    return summarize(diff, seed, draws)
