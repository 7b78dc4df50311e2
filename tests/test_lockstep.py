"""The batched lockstep loop (pix2pix_zero.lockstep) against the step-by-step loops it reorders (editing.edit,
diffusers_compat.edit) on the tiny model in float64: same latents, same reference maps, in both settings, with several
targets, with and without guidance on the reference, and with Direct Inversion."""
import pytest
import torch

from pix2pix_zero import diffusers_compat, editing, inversion, lockstep
from pix2pix_zero.config import EditConfig
from pix2pix_zero.loading.load import load_sd
from pix2pix_zero.models.ddim import alphas_cumprod, sampling_schedule

# Batched and single-call kernels round differently: in float32 the loops differ by ~4e-5 after 3 steps (the
# guidance gradient amplifies rounding), which cannot tell reordering from a small mistake. In float64 they
# agree to ~1e-13 (measured), so the comparison runs there; a row paired with the wrong timestep, prompt or
# maps moves the result by > 1e-3 (checked below).
TOLERANCE = 1e-10



@pytest.fixture(scope="module")
def sd64(single_file):
    return load_sd(single_file, dtype=torch.float64)


@pytest.fixture(scope="module")
def texts(sd64):
    c, c_empty = sd64.encode_text(["a photo of a cat"]), sd64.encode_text([""])
    return c, c_empty, sd64.encode_text(["a photo of a dog"]) - c


def latents(seed, B=1):
    return torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def both_loops(sd64, setting, x_inv, c, delta_cs, c_neg, config, **kw):
    steps = {"paper": editing.edit, "diffusers": diffusers_compat.edit}[setting]
    seen, seen_batched = [], []
    one = steps(sd64, x_inv, c, delta_cs, c_neg, config, False, lambda t, m: seen.append((t, m)), **kw)
    batched = lockstep.edit(sd64, x_inv, c, delta_cs, c_neg, config, False, lambda t, m: seen_batched.append((t, m)),
                            **kw)
    return one, batched, seen, seen_batched


def assert_same(one, batched, seen, seen_batched):
    (x_ref, x_edits), (x_ref_b, x_edits_b) = one, batched
    torch.testing.assert_close(x_ref_b, x_ref, atol=TOLERANCE, rtol=0)
    assert len(x_edits_b) == len(x_edits)
    for x, x_b in zip(x_edits, x_edits_b):
        torch.testing.assert_close(x_b, x, atol=TOLERANCE, rtol=0)
    assert [t for t, _ in seen_batched] == [t for t, _ in seen]
    for (_, maps), (_, maps_b) in zip(seen, seen_batched):
        assert maps.keys() == maps_b.keys()
        for name in maps:
            torch.testing.assert_close(maps_b[name], maps[name], atol=TOLERANCE, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["paper", "diffusers"])
@pytest.mark.parametrize("negative", ["caption", "empty"])
def test_batched_loop_equals_the_step_by_step_loop(sd64, texts, one_thread, setting, negative):
    """Two targets; c_neg = c (the paper setting's reference is then one unguided call) or "" (guided)."""
    c, c_empty, delta_c = texts
    c_neg = c if negative == "caption" else c_empty
    config = EditConfig(setting=setting, num_steps=3)
    one, batched, seen, seen_batched = both_loops(sd64, setting, latents(1), c, [delta_c, -delta_c], c_neg, config)
    assert_same(one, batched, seen, seen_batched)
    assert len(seen) == 3
    # what the tolerance can tell apart: the same loop with a 50% larger guidance step
    _, (moved, _) = editing.edit(sd64, latents(1), c, [delta_c, -delta_c], c_neg, EditConfig(setting=setting,
                                 num_steps=3, lambda_xa=0.15), progress=False) if setting == "paper" else \
        diffusers_compat.edit(sd64, latents(1), c, [delta_c, -delta_c], c_neg,
                              EditConfig(setting=setting, num_steps=3, lambda_xa=0.15), progress=False)
    assert (moved - one[1][0]).abs().max() > 1e-3


@pytest.mark.slow
def test_batched_loop_equals_the_step_by_step_loop_on_a_batch_with_direct_inversion(sd64, texts, one_thread):
    c, _, delta_c = texts
    config = EditConfig(num_steps=3, inversion_method="direct")
    x_path = torch.stack([latents(10 + i, B=2) for i in range(4)])  # any levels: the loops only follow them
    one, batched, seen, seen_batched = both_loops(sd64, "paper", x_path[-1], c, [delta_c], c, config, x_path=x_path)
    assert_same(one, batched, seen, seen_batched)
    torch.testing.assert_close(batched[0], x_path[0], atol=0, rtol=0)  # the reference ends on x0 exactly


def test_shared_call_gives_each_row_its_own_timestep(sd64, texts):
    """Rows at two timesteps in one call equal each call alone: the per-row t reaches the time embedding."""
    c, _, _ = texts
    t0, t1 = (t for t, _, _ in sampling_schedule(10, alphas_cumprod())[:2])
    x = latents(3)
    rows = [lockstep.Rows(x, c, t0, False), lockstep.Rows(x, c, t1, False)]
    (out0, out1), _ = lockstep.shared_call(sd64, rows, 5.0)
    with torch.no_grad():
        torch.testing.assert_close(out0, sd64.unet(x, t0, c), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(out1, sd64.unet(x, t1, c), atol=TOLERANCE, rtol=0)
    assert (out0 - out1).abs().max() > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (a hardware condition, not a package)")
def test_no_host_sync_inside_the_editing_loop_on_cuda(single_file):
    """On a GPU the loop never waits for the device: a step's pieces run under set_sync_debug_mode("error"),
    and the whole loop's sync count (the c_neg comparison before it, the finite checks after it) does not grow
    with the number of steps. The regularizer's shifts come from a CPU generator, as the command line draws them."""
    import warnings
    sd = load_sd(single_file, device="cuda")
    c = sd.encode_text(["a photo of a cat"])
    delta_c = sd.encode_text(["a photo of a dog"]) - c
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).cuda()
    t = sampling_schedule(10, alphas_cumprod())[0][0]
    _, maps = lockstep.shared_call(sd, [lockstep.Rows(x, c, t, False)], 5.0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x_g = editing.xa_guidance(sd, x, t, c + delta_c, maps[0], 0.1)
        lockstep.shared_call(sd, [lockstep.prediction_rows(x_g, x_g, c + delta_c, c, t, True),
                                  lockstep.Rows(x, c, t - 100, False)], 5.0)
        eps = torch.randn(1, 4, 32, 32, device="cuda")
        diffusers_compat.regularize_eps(eps, torch.Generator(device="cuda").manual_seed(0), num_reg_steps=1)
    finally:
        torch.cuda.set_sync_debug_mode(0)

    def syncs(loop, num_steps: int) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                loop(EditConfig(num_steps=num_steps))
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in caught)
    editing_loop = lambda config: lockstep.edit(sd, x, c, [delta_c], c, config, progress=False)  # noqa: E731
    assert syncs(editing_loop, 2) == syncs(editing_loop, 4)
    # the paper's inversion too: its regularizer's line search runs batched on a GPU (noise_reg.descend)
    inversion_loop = lambda config: inversion.invert(sd, x, c, config, torch.Generator(), progress=False)  # noqa: E731
    assert syncs(inversion_loop, 2) == syncs(inversion_loop, 4)
