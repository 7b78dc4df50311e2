"""tools/evaluation/stats.py: mean and median by hand, NaN counted and excluded, a seeded bootstrap that is
reproducible and brackets the mean, and the paired bootstrap of differences."""
import math

import pytest

from pix2pix_zero.tools.evaluation.stats import paired_difference, summarize


def test_mean_median_count_and_nan_excluded():
    s = summarize([1.0, 2.0, 4.0, math.nan, 10.0])
    assert (s.mean, s.median, s.count, s.nan) == (4.25, 3.0, 4, 1)
    assert summarize([3.0, 1.0, 2.0]).median == 2.0


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.1 * i ** 1.5 for i in range(30)]
    a, b, c = summarize(values, seed=0), summarize(values, seed=0), summarize(values, seed=1)
    assert (a.low, a.high) == (b.low, b.high) and (a.low, a.high) != (c.low, c.high)
    assert a.low < a.mean < a.high
    constant = summarize([2.5] * 10)
    assert (constant.low, constant.high) == pytest.approx((2.5, 2.5))


def test_empty_single_and_infinite_values():
    empty = summarize([math.nan, math.nan])
    assert empty.count == 0 and empty.nan == 2 and math.isnan(empty.mean)
    one = summarize([7.0])
    assert (one.mean, one.low, one.high) == (7.0, 7.0, 7.0)
    with_inf = summarize([30.0, math.inf, 32.0])
    assert with_inf.mean == math.inf and with_inf.median == 32.0 and with_inf.high == math.inf


def test_paired_difference_of_a_shift_is_the_shift_and_pairs_with_nan_are_dropped():
    a = [1.0, 5.0, 2.0, 8.0, math.nan]
    b = [2.0, 6.0, 3.0, 9.0, 4.0]
    d = paired_difference(a, b)
    assert (d.mean, d.low, d.high, d.count, d.nan) == (1.0, 1.0, 1.0, 4, 1)
    assert paired_difference([math.inf], [math.inf]).nan == 1  # inf - inf is no difference
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])
