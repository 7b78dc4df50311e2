"""Tests for pix2pix_zero.models.ddim: hand-computed values, identities, and parity with diffusers' DDIM schedulers."""
import math

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

from pix2pix_zero.models.ddim import (alphas_cumprod, ddim_inverse_step, ddim_step, ddim_timesteps, eps_from_output,
                               inversion_schedule, sampling_schedule, v_from_eps_x0, x0_from_output)

SD_SCHEDULER = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                    set_alpha_to_one=False, steps_offset=1)
SHAPE = (2, 4, 8, 8)


# --- schedule -------------------------------------------------------------------------------------------------

def test_alphas_cumprod_hand_values():
    alpha_bar = alphas_cumprod()
    assert alpha_bar.shape == (1000,) and alpha_bar.dtype == torch.float32
    assert abs(alpha_bar[0].item() - (1 - 0.00085)) < 1e-7
    lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
    alpha_bar_999 = math.prod(1 - (lo + i * (hi - lo) / 999) ** 2 for i in range(1000))
    assert abs(alpha_bar[999].item() - alpha_bar_999) < 1e-8  # alpha_bar[999] ~ 4.66e-3


def test_alphas_cumprod_equals_diffusers_bitwise():
    assert torch.equal(alphas_cumprod(), DDIMScheduler(**SD_SCHEDULER).alphas_cumprod)


def test_ddim_timesteps_n10_hand_values():
    assert ddim_timesteps(10).tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert ddim_timesteps(50).tolist() == list(range(981, 0, -20))


def test_sampling_schedule_n10_alpha_indices():
    alpha_bar = alphas_cumprod()
    schedule = sampling_schedule(10, alpha_bar)
    t_prevs = [801, 701, 601, 501, 401, 301, 201, 101, 1, 0]  # the last step lands on alpha_bar[0], not 1
    for (t, alpha_bar_t, alpha_bar_prev), t_prev in zip(schedule, t_prevs, strict=True):
        assert torch.equal(alpha_bar_t, alpha_bar[t])
        assert torch.equal(alpha_bar_prev, alpha_bar[t_prev])
    assert [t for t, _, _ in inversion_schedule(10, alpha_bar)] == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901]


@pytest.mark.parametrize("num_steps", [10, 50])
def test_timesteps_match_diffusers(num_steps):
    scheduler, inverse = DDIMScheduler(**SD_SCHEDULER), DDIMInverseScheduler(**SD_SCHEDULER)
    scheduler.set_timesteps(num_steps)
    inverse.set_timesteps(num_steps)
    alpha_bar = alphas_cumprod()
    assert ddim_timesteps(num_steps).tolist() == scheduler.timesteps.tolist()
    assert [t for t, _, _ in sampling_schedule(num_steps, alpha_bar)] == scheduler.timesteps.tolist()
    assert [t for t, _, _ in inversion_schedule(num_steps, alpha_bar)] == inverse.timesteps.tolist()


# --- conversions ----------------------------------------------------------------------------------------------

def test_conversions_on_numbers():
    # alpha_bar = 0.64: sqrt(a) = 0.8, sqrt(1 - a) = 0.6; x0 = 2, eps = 1 -> x_t = 2.2, v = 0.8 - 1.2 = -0.4
    a, x0, eps, x_t = torch.tensor(0.64), torch.tensor(2.0), torch.tensor(1.0), torch.tensor(2.2)
    v = v_from_eps_x0(eps, x0, a)
    assert v.item() == pytest.approx(-0.4, abs=1e-6)
    assert eps_from_output(v, x_t, a, "v_prediction").item() == pytest.approx(1.0, abs=1e-6)
    assert x0_from_output(v, x_t, a, "v_prediction").item() == pytest.approx(2.0, abs=1e-6)
    assert x0_from_output(eps, x_t, a, "epsilon").item() == pytest.approx(2.0, abs=1e-6)
    assert eps_from_output(eps, x_t, a, "epsilon") is eps


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.randn(SHAPE, generator=g, dtype=torch.float64)
    for a in alphas_cumprod().double()[[0, 1, 500, 999]]:
        x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
        v = v_from_eps_x0(eps, x0, a)
        torch.testing.assert_close(eps_from_output(v, x_t, a, "v_prediction"), eps, atol=1e-12, rtol=0)
        torch.testing.assert_close(x0_from_output(v, x_t, a, "v_prediction"), x0, atol=1e-12, rtol=0)
        torch.testing.assert_close(x0_from_output(eps, x_t, a, "epsilon"), x0, atol=1e-9, rtol=0)


def test_unknown_prediction_type_raises():
    with pytest.raises(ValueError, match="prediction_type"):
        ddim_step(torch.zeros(1), torch.zeros(1), 0.5, 0.6, prediction_type="sample")


# --- steps ----------------------------------------------------------------------------------------------------

def test_ddim_step_on_numbers():
    # a_t = 0.64, a_prev = 0.36: pred_x0 = (2.2 - 0.6 * 1) / 0.8 = 2, x_prev = 0.6 * 2 + 0.8 * 1 = 2.0
    eps, a_t, a_prev = torch.tensor(1.0), torch.tensor(0.64), torch.tensor(0.36)
    assert ddim_step(eps, torch.tensor(2.2), a_t, a_prev).item() == pytest.approx(2.0, abs=1e-6)
    assert ddim_inverse_step(eps, torch.tensor(2.0), a_t, a_prev).item() == pytest.approx(2.2, abs=1e-6)


@pytest.mark.parametrize("num_steps", [10, 50])
def test_inverse_step_undoes_step_given_same_eps(num_steps):
    g = torch.Generator().manual_seed(1)
    for t, a_t, a_prev in sampling_schedule(num_steps, alphas_cumprod().double()):
        x_prev = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        eps = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        x_t = ddim_inverse_step(eps, x_prev, a_t, a_prev)
        torch.testing.assert_close(ddim_step(eps, x_t, a_t, a_prev), x_prev, atol=1e-10, rtol=0)
        x_t_swapped = ddim_inverse_step(eps, x_prev, a_prev, a_t)  # the alphas in the wrong order
        assert (ddim_step(eps, x_t_swapped, a_t, a_prev) - x_prev).abs().max() > 1e-3, t


@pytest.mark.parametrize("num_steps", [10, 50])
def test_inversion_schedule_is_exact_reverse_of_sampling(num_steps):
    alpha_bar = alphas_cumprod()
    forward, inverse = sampling_schedule(num_steps, alpha_bar), inversion_schedule(num_steps, alpha_bar)
    for (t, a_t, a_prev), (t_inv, a_t_inv, a_prev_inv) in zip(forward[::-1], inverse, strict=True):
        assert t == t_inv and torch.equal(a_t, a_t_inv) and torch.equal(a_prev, a_prev_inv)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("num_steps", [10, 50])
def test_ddim_step_matches_diffusers(num_steps, prediction_type):
    scheduler = DDIMScheduler(**SD_SCHEDULER, prediction_type=prediction_type)
    scheduler.set_timesteps(num_steps)
    g = torch.Generator().manual_seed(2)
    schedule = sampling_schedule(num_steps, alphas_cumprod())
    for t_ref, (t, a_t, a_prev) in zip(scheduler.timesteps, schedule, strict=True):
        assert t == t_ref.item()
        x_t, output = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
        expected = scheduler.step(output, t_ref, x_t).prev_sample
        torch.testing.assert_close(ddim_step(output, x_t, a_t, a_prev, prediction_type), expected,
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("num_steps", [10, 50])
def test_ddim_inverse_step_matches_diffusers(num_steps, prediction_type):
    inverse = DDIMInverseScheduler(**SD_SCHEDULER, prediction_type=prediction_type)
    inverse.set_timesteps(num_steps)
    g = torch.Generator().manual_seed(3)
    schedule = inversion_schedule(num_steps, alphas_cumprod())
    for t_ref, (t, a_t, a_prev) in zip(inverse.timesteps, schedule, strict=True):
        assert t == t_ref.item()
        x_prev, output = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
        expected = inverse.step(output, t_ref, x_prev).prev_sample
        torch.testing.assert_close(ddim_inverse_step(output, x_prev, a_t, a_prev, prediction_type), expected,
                                   atol=1e-6, rtol=0)
