"""Tests for pix2pix_zero.noise_reg and its options all_shifts and batched_line_search: hand-computed values, finite differences, the estimator's expectation,
properties of the procedure and its stability; where the paper's regularizer differs from diffusers_compat's,
both. Parity with diffusers itself is in test_diffusers_compat.py."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from pix2pix_zero import diffusers_compat
from pix2pix_zero.all_shifts import (autocorrelations_all, pair_loss_exact, pair_loss_expected,
                                     regularize_eps_all_shifts)
from pix2pix_zero.batched_line_search import descend_batched
from pix2pix_zero.config import EditConfig
from pix2pix_zero.noise_reg import (autocorrelation, autocorrelations, descend, kl_loss, noise_pyramid, pair_loss,
                                    pool2x2, random_shifts, regularize_eps)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def box_blurred(eps):
    """eps blurred by a circular 3x3 box filter, rescaled to unit variance per sample."""
    C = eps.shape[1]
    blurred = F.conv2d(F.pad(eps, (1, 1, 1, 1), mode="circular"), eps.new_ones(C, 1, 3, 3) / 9, groups=C)
    return blurred / blurred.std(dim=(1, 2, 3), keepdim=True)


# --- pyramid ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw, paper, diffusers", [
    ((64, 64), [64, 32, 16, 8], [64, 32, 16, 8]),
    ((96, 96), [96, 48, 24, 12, 6], [96, 48, 24, 12, 6]),
    ((72, 72), [72, 36, 18, 9], [72, 36, 18, 9, 4]),
    ((50, 50), [50, 25], [50, 25, 12, 6]),
    ((12, 12), [12, 6], [12, 6]),
    ((10, 10), [10, 5], [10, 5]),
    ((24, 40), [24, 12, 6], [24, 12, 6]),  # heights: 24 x 40 -> 12 x 20 -> 6 x 10
    ((40, 24), [40, 20, 10], [40, 20, 10, 5]),  # paper stops at 10 x 6; diffusers looks at the height only
])
def test_pyramid_levels_follow_the_stopping_rules(hw, paper, diffusers):
    eps = torch.zeros(1, 1, *hw)
    assert [eta.shape[-2] for eta in noise_pyramid(eps)] == paper
    assert [eta.shape[-2] for eta in diffusers_compat.noise_pyramid(eps)] == diffusers


def test_pyramid_keeps_white_noise_at_unit_variance_only_in_paper_setting():
    eps = randn(8, 4, 64, 64)
    for p, (eta, eta_d) in enumerate(zip(noise_pyramid(eps), diffusers_compat.noise_pyramid(eps), strict=True)):
        assert abs(eta.var().item() - 1) < 0.1
        assert abs(eta_d.var().item() * 4**p - 1) < 0.1
        torch.testing.assert_close(eta, 2**p * eta_d)


# --- L_pair: hand values, finite differences, estimator -------------------------------------------------------

def test_autocorrelation_hand_values():
    eta = torch.tensor([[[1.0, 2.0, 3.0]]])  # (1, h=1, w=3)
    assert torch.allclose(autocorrelation(eta, 1, -1), torch.tensor([11 / 3]))  # (1*3 + 2*1 + 3*2) / 3
    assert torch.allclose(autocorrelation(eta, 2, -1), torch.tensor([11 / 3]))  # rho(delta) = rho(S - delta)
    assert torch.allclose(autocorrelation(eta, 0, -1), torch.tensor([14 / 3]))
    assert torch.allclose(pair_loss_exact(eta[None]), torch.tensor([2 * (11 / 3) ** 2 / 3]))  # h = 1: no h shifts; / (1*3)


def test_pair_loss_exact_and_gradient_hand_values():
    eps = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64, requires_grad=True)
    loss = pair_loss_exact(eps)
    # rho_h(1) = (1*3 + 2*4) / 2 = 5.5, rho_w(1) = (1*2 + 3*4) / 2 = 7, map size 4; d/da = (5.5 c + 7 b) / 4, ...
    assert torch.allclose(loss, torch.tensor([(5.5**2 + 7.0**2) / 4], dtype=torch.float64))
    loss.sum().backward()
    expected = torch.tensor([[5.5 * 3 + 7 * 2, 5.5 * 4 + 7 * 1], [5.5 * 1 + 7 * 4, 5.5 * 2 + 7 * 3]]) / 4
    assert torch.allclose(eps.grad[0, 0], expected.double())


@pytest.mark.parametrize("loss_fn", [
    pair_loss_exact, pair_loss_expected, kl_loss, diffusers_compat.kl_loss,
    lambda e: pair_loss(e, random_shifts(e, gen(1))), lambda e: diffusers_compat.pair_loss(e, gen(1)),
], ids=["pair_exact", "pair_expected", "kl", "kl_diffusers", "pair", "pair_diffusers"])
def test_gradients_match_finite_differences(loss_fn):
    eps = box_blurred(randn(1, 2, 16, 16, dtype=torch.float64)).requires_grad_(True)  # two levels: 16, 8
    assert torch.autograd.gradcheck(loss_fn, (eps,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_estimator_draws_shifts_in_1_to_half_side_exclusive():
    eps = randn(1, 1, 8, 8, dtype=torch.float64)  # one level; shifts 1..3 on each axis
    rho_h = {d: autocorrelation(eps, d, -2).item() ** 2 for d in range(8)}
    rho_w = {d: autocorrelation(eps, d, -1).item() ** 2 for d in range(8)}
    allowed = {round(rho_h[a] + rho_w[b], 12) for a in (1, 2, 3) for b in (1, 2, 3)}
    g = gen(2)
    seen = {round(pair_loss(eps, random_shifts(eps, g)).item(), 12) for _ in range(400)}
    assert seen == allowed  # every pair drawn, never 0 or S/2 = 4


@pytest.mark.parametrize("side", [8, 9])
def test_estimator_mean_relates_to_exact_sum(side):
    """Per level, axis: sum_{d=1}^{S-1} rho(d)^2 = 2 K E[rho(delta)^2] + [S even] rho(S/2)^2, K = ceil(S/2)-1;
    L_pair divides that by the map size S^2."""
    eps = box_blurred(randn(1, 1, side, side, dtype=torch.float64))  # sides 8 and 9: one level
    K = (side + 1) // 2 - 1
    rho2 = {(delta, d): autocorrelation(eps, delta, d)[:, 0] ** 2 for delta in range(side) for d in (-2, -1)}
    nyquist = rho2[side // 2, -2] + rho2[side // 2, -1] if side % 2 == 0 else 0.0
    expectation = sum(rho2[delta, d] for delta in range(1, K + 1) for d in (-2, -1)) / K  # (B,)
    torch.testing.assert_close(pair_loss_exact(eps), (2 * K * expectation + nyquist) / side**2)  # the identity
    torch.testing.assert_close(pair_loss_expected(eps), expectation)  # E computed exactly
    g = gen(3)
    mean = torch.stack([pair_loss(eps, random_shifts(eps, g)) for _ in range(3000)]).mean(0)
    torch.testing.assert_close(mean, expectation, rtol=0.05, atol=0)  # ... and the estimator is unbiased for E


def test_white_noise_scores_below_a_tenth_of_blurred_noise():
    white = randn(2, 4, 32, 32, dtype=torch.float64)
    assert (pair_loss_exact(white) < pair_loss_exact(box_blurred(white)) / 10).all()


# --- L_KL ------------------------------------------------------------------------------------------------------

def test_kl_is_zero_at_mean_zero_and_unbiased_variance_one():
    eps = randn(2, 4, 8, 8, dtype=torch.float64)
    mean, std = eps.mean(dim=(1, 2, 3), keepdim=True), eps.std(dim=(1, 2, 3), keepdim=True)  # unbiased
    assert kl_loss((eps - mean) / std).abs().max() < 1e-6
    N = 4 * 8 * 8  # population variance 1 means unbiased variance N / (N - 1): L_KL > 0
    population = (eps - mean) / eps.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    torch.testing.assert_close(kl_loss(population), torch.full((2,), N / (N - 1) - 1 - torch.log(
        torch.tensor(N / (N - 1) + 1e-7, dtype=torch.float64)).item(), dtype=torch.float64))


# --- the procedure ---------------------------------------------------------------------------------------------

def test_one_procedure_step_lowers_pair_and_kl_on_a_correlated_map():
    eps = box_blurred(randn(1, 4, 32, 32))
    out = regularize_eps(eps, gen(), num_reg_steps=1)
    assert pair_loss_exact(out) < 0.9 * pair_loss_exact(eps)
    assert pair_loss_exact(out) + kl_loss(out) < pair_loss_exact(eps) + kl_loss(eps)


@pytest.mark.parametrize("regularize", [regularize_eps, diffusers_compat.regularize_eps], ids=["paper", "diffusers"])
def test_same_generator_same_result_and_no_draws_when_lambda_is_zero(regularize):
    eps = randn(2, 4, 16, 16)
    out = regularize(eps, gen(5))
    assert torch.equal(out, regularize(eps, gen(5)))
    assert not torch.equal(out, regularize(eps, gen(6)))
    g = gen(5)
    regularize(eps, g, lambda_ac=0.0)
    assert torch.equal(g.get_state(), gen(5).get_state())


def test_paper_setting_regularizes_each_sample_as_if_alone():
    eps = box_blurred(randn(2, 4, 32, 32))
    alone = torch.cat([regularize_eps(eps[i:i + 1], gen(7)) for i in range(2)])
    torch.testing.assert_close(regularize_eps(eps, gen(7)), alone, rtol=0, atol=1e-6)
    # diffusers pools the batch (KL) and draws shifts per sample in turn: the samples are coupled
    alone = torch.cat([diffusers_compat.regularize_eps(eps[i:i + 1], gen(7)) for i in range(2)])
    assert not torch.allclose(diffusers_compat.regularize_eps(eps, gen(7)), alone, atol=1e-4)


def test_regularize_eps_under_no_grad_and_inference_mode_leaves_input_alone():
    eps = box_blurred(randn(1, 4, 16, 16))
    expected = regularize_eps(eps, gen())
    with torch.no_grad():
        out = regularize_eps(eps, gen())
    with torch.inference_mode():
        out_inference = regularize_eps(eps.clone(), gen())
    assert torch.equal(out, expected) and torch.equal(out_inference, expected)
    assert not out.requires_grad and torch.equal(eps, box_blurred(randn(1, 4, 16, 16)))


# --- stability: steps that cannot overshoot (the paper setting) ---------------------------------------------------

def correlated(scale, blur, seed=0, B=1, side=64):
    """A map of standard deviation `scale`, circularly box-blurred `blur` times (0: white)."""
    eps = randn(B, 4, side, side, seed=seed)
    for _ in range(blur):
        eps = box_blurred(eps)
    return scale * eps / eps.std(dim=(1, 2, 3), keepdim=True)


def plain_descent(loss_fn, eps, step):
    eps = eps.detach().requires_grad_(True)
    return (eps - step * torch.autograd.grad(loss_fn(eps).sum(), eps)[0]).detach()


@pytest.mark.parametrize("loss_name", ["pair", "kl"])
def test_descend_never_raises_its_loss_and_is_the_plain_step_where_that_descends(loss_name):
    taken_plain = shortened = 0
    step = {"pair": 20.0 / 5, "kl": 20.0}[loss_name]  # the authors' steps
    for scale in (1e-3, 0.01, 1.0, 3.0, 10.0, 1e3):
        for blur in (0, 1, 4):
            eps = correlated(scale, blur, seed=blur, B=2, side=32)
            loss_fn = kl_loss if loss_name == "kl" else partial(pair_loss, shifts=random_shifts(eps, gen(blur)))
            out = descend(loss_fn, eps, step)
            assert torch.isfinite(out).all() and (loss_fn(out) <= loss_fn(eps)).all()
            plain = plain_descent(loss_fn, eps, step)
            for b in range(2):  # per sample: the plain step where it does not raise the loss, else a shorter one
                if loss_fn(plain)[b] <= loss_fn(eps)[b]:
                    assert torch.equal(out[b], plain[b])
                    taken_plain += 1
                else:
                    assert not torch.equal(out[b], plain[b])
                    shortened += 1
    assert taken_plain and shortened  # both cases occurred


def test_batched_line_search_takes_the_same_steps_as_the_one_by_one_search():
    """descend_batched, all halvings in one loss call (the GPU's sync-free search), equals the search that
    tries one step at a time: plain steps, shortened steps, each sample its own, and a non-finite sample left."""
    for scale, blur in ((0.01, 0), (1.0, 1), (10.0, 4), (1e3, 1)):
        eps = correlated(scale, blur, seed=blur, B=2, side=32)
        for loss_fn, step in ((partial(pair_loss, shifts=random_shifts(eps, gen(blur))), 4.0), (kl_loss, 20.0)):
            torch.testing.assert_close(descend_batched(loss_fn, eps, step),
                                       descend(loss_fn, eps, step), rtol=0, atol=0)
    eps = torch.cat([correlated(3.0, 2, B=1, side=16), torch.full((1, 4, 16, 16), 1e30)])  # 2nd: loss overflows
    loss_fn = partial(pair_loss, shifts=random_shifts(eps, gen()))
    out = descend_batched(loss_fn, eps, 4.0)
    torch.testing.assert_close(out, descend(loss_fn, eps, 4.0), rtol=0, atol=0)
    assert torch.equal(out[1], eps[1]) and not torch.equal(out[0], eps[0])


def test_descend_leaves_a_map_with_non_finite_loss_alone():
    eps = torch.full((1, 1, 16, 16), 1e30)  # rho^2 overflows float32
    shifts = random_shifts(eps, gen())
    assert torch.equal(descend(partial(pair_loss, shifts=shifts), eps, 4.0), eps)


@pytest.mark.parametrize("scale", [1.0, 3.0, 10.0, 100.0, 1e4])
@pytest.mark.parametrize("blur", [0, 1, 2, 4, 8])
def test_regularizer_never_raises_pair_plus_kl_and_stays_finite(scale, blur):
    """Maps of growing scale and correlation through the whole procedure (paper setting, authors' defaults).
    With plain gradient steps the correlated ones diverge to inf/NaN (the black-edit bug)."""
    eps = correlated(scale, blur, seed=blur)
    out = regularize_eps(eps, gen(blur))
    assert torch.isfinite(out).all()
    assert (pair_loss_exact(out) + kl_loss(out) <= pair_loss_exact(eps) + kl_loss(eps)).all()


def test_plain_steps_diverge_where_the_paper_setting_stays_finite():
    """The failure this guards against: the authors' fixed steps on the paper's x2 pyramid blow up a smooth map
    of unit variance (as a random UNet predicts on a smooth image)."""
    eps = correlated(1.0, 8)
    plain = eps
    for _ in range(5):
        for _ in range(5):
            shifts = random_shifts(plain, gen())
            plain = plain_descent(partial(pair_loss, shifts=shifts), plain, 20.0 / 5)
    assert not torch.isfinite(plain).all() or plain.abs().max() > 1e6
    assert torch.isfinite(regularize_eps(eps, gen())).all()


def test_unscaled_pyramid_is_the_authors_levels_and_weighs_level_p_16_to_the_p_less():
    """pyramid_rescale=False (the authors' scale): level p is 2^-p times the paper's, exactly (powers of two),
    so each level's squared autocorrelation, and its pull on eps, is 16^-p of the rescaled pyramid's."""
    eps = randn(2, 4, 64, 64)
    scaled, unscaled = noise_pyramid(eps), noise_pyramid(eps, rescale=False)
    assert len(scaled) == len(unscaled) == 4
    for p, (eta, eta_u) in enumerate(zip(scaled, unscaled)):
        assert torch.equal(eta_u * 2**p, eta)
        torch.testing.assert_close(eta_u, diffusers_compat.noise_pyramid(eps)[p])
    shifts = random_shifts(eps, gen(0))
    level0 = pair_loss(eps[..., :8, :8], [shifts[-1]])  # an 8x8 map has one level: no rescale to tell apart
    torch.testing.assert_close(pair_loss(eps[..., :8, :8], [shifts[-1]], rescale=False), level0)
    assert (pair_loss(eps, shifts, rescale=False) < pair_loss(eps, shifts)).all()
    with torch.no_grad():
        out = regularize_eps(box_blurred(eps), gen(1), pyramid_rescale=False)
    assert torch.isfinite(out).all() and (pair_loss_exact(out, False) < pair_loss_exact(box_blurred(eps), False)).all()


@pytest.mark.parametrize("shape", [(2, 4, 32, 32), (1, 4, 9, 7), (3, 2, 6, 10)])
def test_pool2x2_is_avg_pool2d_bit_for_bit(shape):
    """The regularizer's pyramid pools with strided slices; odd sides are floored as avg_pool2d floors them."""
    eta = randn(*shape, seed=3)
    assert torch.equal(pool2x2(eta), F.avg_pool2d(eta, kernel_size=2))


@pytest.mark.parametrize("per_sample", [False, True])
def test_autocorrelations_at_per_map_shifts_equal_one_roll_per_map(per_sample):
    """`autocorrelations` (one gather) equals `autocorrelation` (a roll) map by map, along both axes, at shifts
    per channel (C,) or per (sample, channel) (B, C)."""
    eta = randn(2, 3, 6, 10, seed=4)
    delta = torch.tensor([[1, 4, 5], [2, 0, 3]]) if per_sample else torch.tensor([1, 4, 5])
    for dim in (-2, -1):
        rho = autocorrelations(eta, delta, dim)
        for b in range(2):
            for c in range(3):
                d = int(delta[b, c] if per_sample else delta[c])
                assert torch.allclose(rho[b, c], autocorrelation(eta[b, c], d, dim), atol=1e-7, rtol=0)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 9, 7), (1, 1, 6, 10)])
def test_fft_autocorrelations_equal_the_direct_sum_at_every_shift(shape):
    """Autocorrelation theorem: `autocorrelations_all` (FFT) equals `autocorrelation` (a roll) at each delta,
    odd and even sides, both axes."""
    eta = box_blurred(randn(*shape, seed=5, dtype=torch.float64))
    for dim in (-2, -1):
        direct = torch.stack([autocorrelation(eta, delta, dim) for delta in range(shape[dim])], dim=-1)
        torch.testing.assert_close(autocorrelations_all(eta, dim), direct, rtol=1e-12, atol=1e-12)


def test_pair_losses_equal_their_definitions_by_direct_sum_on_a_pyramid():
    """pair_loss_exact: sum over levels, axes, channels, delta = 1..S_p-1 of rho^2 / (H_p W_p); pair_loss_expected:
    the mean over delta = 1..K_p instead; both by rolls, on a 32 x 24 map (levels 32x24, 16x12)."""
    eps = box_blurred(randn(2, 3, 32, 24, seed=6, dtype=torch.float64))
    exact, expected = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for eta in noise_pyramid(eps):
        for dim in (-2, -1):
            S = eta.shape[dim]
            rho2 = [autocorrelation(eta, delta, dim).pow(2).sum(dim=1) for delta in range(1, S)]  # (B,) each
            exact += sum(rho2) / (eta.shape[-2] * eta.shape[-1])
            expected += sum(rho2[:(S + 1) // 2 - 1]) / ((S + 1) // 2 - 1)
    torch.testing.assert_close(pair_loss_exact(eps), exact, rtol=1e-12, atol=0)
    torch.testing.assert_close(pair_loss_expected(eps), expected, rtol=1e-12, atol=0)


def test_all_shifts_option_takes_one_step_on_the_expected_loss_and_draws_nothing():
    """regularize_eps_all_shifts (pair_shifts "all"): each iteration is one `descend` of lambda_ac on pair_loss_expected, then the KL step; the
    generator is never drawn from; it lowers the exact L_pair of a correlated map."""
    eps = box_blurred(randn(1, 4, 32, 32, seed=7))
    g = gen(8)
    state = g.get_state()
    out = regularize_eps_all_shifts(eps, g, num_reg_steps=1)
    assert torch.equal(g.get_state(), state)
    by_hand = descend(kl_loss, descend(lambda e: pair_loss_expected(e), eps, 20.0), 20.0)
    torch.testing.assert_close(out, by_hand, rtol=0, atol=0)
    assert pair_loss_expected(out) < 0.9 * pair_loss_expected(eps) and pair_loss_exact(out) < pair_loss_exact(eps)
    with pytest.raises(ValueError, match="pair_shifts"):  # a misspelling is not silently the random procedure
        EditConfig(pair_shifts="All")
