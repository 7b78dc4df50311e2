"""Cross-attention guided editing on the tiny model: the loss, the guidance step, the two trajectories."""
import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_zero.models.attention import record_cross_attention
from pix2pix_zero import diffusers_compat
from pix2pix_zero.config import EditConfig
from pix2pix_zero.models.ddim import alphas_cumprod, sampling_schedule
from pix2pix_zero.editing import attention_loss, edit, reference_step, xa_guidance

SETTINGS = {"paper": (reference_step, edit), "diffusers": (diffusers_compat.reference_step, diffusers_compat.edit)}


def latents(seed=0, B=1):
    return torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def texts(sd):
    c = sd.encode_text(["a photo of a cat"])
    delta_c = sd.encode_text(["a photo of a dog"]) - c
    return c, delta_c


def test_attention_loss_hand_value():
    M = {"a": torch.zeros(1, 2, 3, 4), "b": torch.zeros(1, 1, 2, 2)}
    ref = {"a": torch.zeros(1, 2, 3, 4), "b": torch.ones(1, 1, 2, 2)}
    M["a"][0, 0, 0, 0] = 2.0  # row (batch 0, head 0): sum 4; row (0, 1): 0 -> mean over the 2 rows = 2
    # layer b: one row, sum over 2x2 of (0 - 1)^2 = 4; two layers, so the sum is scaled by 16 / 2
    assert attention_loss(M, ref).item() == pytest.approx((2.0 + 4.0) * 16 / 2)
    # 16 layers (SD 1.x/2.x): the plain sum over layers, the paper's (and diffusers') loss
    M16 = {f"l{i}": M["a"] for i in range(15)} | {"b": M["b"]}
    ref16 = {f"l{i}": ref["a"] for i in range(15)} | {"b": ref["b"]}
    assert attention_loss(M16, ref16).item() == pytest.approx(15 * 2.0 + 4.0)


def test_reference_maps_are_distributions_over_tokens(sd, texts):
    c, _ = texts
    t, a_t, a_prev = sampling_schedule(10, alphas_cumprod())[0]
    for setting, rows in (("paper", 1), ("diffusers", 2)):
        _, maps = SETTINGS[setting][0](sd, latents(), t, a_t, a_prev, c, c, EditConfig(setting=setting))
        assert len(maps) == 16  # SD 1.x: 7 cross-attention layers down and mid, 9 up
        for M in maps.values():
            assert M.shape[0] == rows and M.shape[1] == 8 and M.shape[-1] == 77
            assert (M >= 0).all()
            torch.testing.assert_close(M.sum(-1), torch.ones(M.shape[:-1]), atol=1e-5, rtol=0)


def test_guidance_step_lowers_the_attention_loss(sd, texts):
    c, delta_c = texts
    t, a_t, a_prev = sampling_schedule(10, alphas_cumprod())[3]
    x = latents(1)
    _, maps_ref = reference_step(sd, x, t, a_t, a_prev, c, c, EditConfig())

    def loss_at(x):
        with torch.no_grad(), record_cross_attention(sd.unet) as maps:
            sd.unet(x, t, c + delta_c)
        return attention_loss(maps, maps_ref).item()

    before = loss_at(x)
    after = loss_at(xa_guidance(sd, x, t, c + delta_c, maps_ref, lambda_xa=0.1))
    assert before > 0 and after < before


def test_guidance_moves_only_latents_never_weights(sd, texts):
    c, delta_c = texts
    t, a_t, a_prev = sampling_schedule(10, alphas_cumprod())[3]
    x = latents(2)
    before = {name: p.clone() for name, p in sd.unet.named_parameters()}
    _, maps_ref = reference_step(sd, x, t, a_t, a_prev, c, c, EditConfig())
    moved = xa_guidance(sd, x, t, c + delta_c, maps_ref, lambda_xa=0.1)
    assert not moved.requires_grad and (moved - x).abs().max() > 0
    assert all(not p.requires_grad for p in sd.unet.parameters())  # frozen: no weight gradient is even built
    assert all(torch.equal(p, before[name]) for name, p in sd.unet.named_parameters())


@pytest.mark.parametrize("setting", ["paper", "diffusers"])
def test_zero_direction_and_zero_guidance_reproduce_the_reference(sd, texts, setting):
    c, _ = texts
    c_neg = sd.encode_text([""])
    config = EditConfig(setting=setting, num_steps=5, lambda_xa=0.0)
    x_ref, (x_edit,) = SETTINGS[setting][1](sd, latents(3), c, [torch.zeros_like(c)], c_neg, config, progress=False)
    torch.testing.assert_close(x_edit, x_ref, atol=1e-6, rtol=0)


def test_nonzero_guidance_changes_the_edit(sd, texts):
    c, delta_c = texts
    config = EditConfig(num_steps=3)
    _, (guided,) = edit(sd, latents(4), c, [delta_c], c, config, progress=False)
    _, (unguided,) = edit(sd, latents(4), c, [delta_c], c, EditConfig(num_steps=3, lambda_xa=0.0), progress=False)
    assert (guided - unguided).abs().max() > 1e-4



def test_guidance_step_is_minus_lambda_times_the_gradient(single_file):
    """The sign and size of the step: moved - x = -lambda_xa grad L, with <grad L, v> from central finite
    differences of the attention loss along a random v, in float64 (a step up the loss fails here)."""
    from pix2pix_zero.loading.load import load_sd
    sd64 = load_sd(single_file, dtype=torch.float64)
    c = sd64.encode_text(["a photo of a cat"])
    c_edit = sd64.encode_text(["a photo of a dog"])
    t, a_t, a_prev = sampling_schedule(10, alphas_cumprod())[3]
    x = latents(1).double()
    _, maps_ref = reference_step(sd64, x, t, a_t, a_prev, c, c, EditConfig())

    def loss_at(x):
        with torch.no_grad(), record_cross_attention(sd64.unet) as maps:
            sd64.unet(x, t, c_edit)
        return attention_loss(maps, maps_ref).item()

    lambda_xa, h = 0.1, 1e-4
    moved = xa_guidance(sd64, x, t, c_edit, maps_ref, lambda_xa)
    for seed in range(2):
        v = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        directional = (loss_at(x + h * v) - loss_at(x - h * v)) / (2 * h)
        assert ((moved - x) * v).sum().item() == pytest.approx(-lambda_xa * directional, rel=1e-5)


def test_edit_multiplier_scales_delta_c(sd, texts, one_thread):
    """c_edit = c + m delta_c: m = 0 is the reference itself, m = 2 is the edit of 2 delta_c (2 x is exact in
    floating point; one thread, since CPU backward reductions differ from run to run across threads)."""
    c, delta_c = texts
    x_ref, (zero,) = edit(sd, latents(6), c, [delta_c], c, EditConfig(num_steps=3, edit_multiplier=0.0),
                          progress=False)
    torch.testing.assert_close(zero, x_ref, atol=1e-6, rtol=0)
    _, (twice,) = edit(sd, latents(6), c, [delta_c], c, EditConfig(num_steps=3, edit_multiplier=2.0), progress=False)
    _, (doubled,) = edit(sd, latents(6), c, [2 * delta_c], c, EditConfig(num_steps=3), progress=False)
    torch.testing.assert_close(twice, doubled, atol=1e-6, rtol=0)
    assert (twice - x_ref).abs().max() > 1e-3


def test_several_targets_share_one_reference_and_equal_separate_edits(sd, texts, one_thread):
    c, delta_c = texts
    config = EditConfig(num_steps=3)
    seen = []
    x_ref, (e1, e2) = edit(sd, latents(5), c, [delta_c, -delta_c], c, config, progress=False,
                           on_reference=lambda t, maps: seen.append(t))
    assert seen == [t for t, _, _ in sampling_schedule(3, alphas_cumprod())]  # one reference step per step
    x_ref1, (alone,) = edit(sd, latents(5), c, [-delta_c], c, config, progress=False)
    torch.testing.assert_close(alone, e2, atol=1e-6, rtol=0)
    torch.testing.assert_close(x_ref1, x_ref)


@pytest.mark.parametrize("setting", ["paper", "diffusers"])
def test_direction_reaches_every_row_of_a_batch(sd, texts, setting):
    """delta_c is added to each conditional row. The attention loss averages over (batch row, head), so a row's
    gradient in a batch of B is 1/B of its gradient alone: diffusers keeps that, the paper setting scales its
    step by B so that each image is edited as it would be alone."""
    c, delta_c = texts
    x = latents(6, B=2)
    edit = SETTINGS[setting][1]
    _, (batch,) = edit(sd, x, c.expand(2, -1, -1), [delta_c], c.expand(2, -1, -1),
                       EditConfig(setting=setting, num_steps=2), progress=False)
    lambda_alone = 0.1 if setting == "paper" else 0.05
    _, (alone,) = edit(sd, x[1:], c, [delta_c], c, EditConfig(setting=setting, num_steps=2, lambda_xa=lambda_alone),
                       progress=False)
    _, (other,) = edit(sd, x[1:], c, [delta_c], c, EditConfig(setting=setting, num_steps=2,
                       lambda_xa=0.15 - lambda_alone), progress=False)
    # batched and single-row kernels differ in float32 rounding (~1e-5 here), far below the step-size effect
    torch.testing.assert_close(batch[1:], alone, atol=1e-4, rtol=0)
    assert (batch[1:] - other).abs().max() > 1e-3


def test_one_prompt_serves_a_batch_and_each_row_is_edited_as_alone(sd, texts, one_thread):
    """A (1, L, D) caption and direction serve a batch of 2 latents; each row ends where it ends alone (B = 1).
    Batched and single-row kernels differ in float32 rounding only (measured 1.6e-5 after 2 steps); a wrong
    row-to-prompt pairing or a 1/B guidance step would move the rows by > 1e-3 (see the test above)."""
    c, delta_c = texts
    x = latents(7, B=2)
    config = EditConfig(num_steps=2)
    x_ref, (x_edit,) = edit(sd, x, c, [delta_c], c, config, progress=False)
    for i in range(2):
        ref_alone, (edit_alone,) = edit(sd, x[i:i + 1], c, [delta_c], c, config, progress=False)
        torch.testing.assert_close(x_ref[i:i + 1], ref_alone, atol=1e-4, rtol=0)
        torch.testing.assert_close(x_edit[i:i + 1], edit_alone, atol=1e-4, rtol=0)
    assert (x_edit[0] - x_edit[1]).abs().max() > 0.1  # the rows are different images


def test_the_command_lines_edit_is_the_papers_loops_assembled_by_hand(tmp_path, single_file, command, one_thread):
    """`train_free_edit.py` (in this process) writes exactly the edit that encode_image, invert, edit_direction
    of the template sentences, editing.edit and decode_latents give when called one after the other: the loop
    that runs is the readable one, with nothing between it and the command line."""
    from pix2pix_zero.config import EditConfig as Config
    from pix2pix_zero.directions import edit_direction, template_sentences
    from pix2pix_zero.editing import decode_latents
    from pix2pix_zero.inversion import encode_image, invert
    from pix2pix_zero.loading.load import load_sd
    from pix2pix_zero.tools.image import load_image, tensor_to_pil
    photo = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)).save(photo)
    code, _, err = command(["--input", photo, "--prompt", "a photo of a cat", "--task", "cat2dog", "--weights",
                            single_file, "--out", tmp_path / "out", "--size", "64", "--steps", "2", "--reg-steps",
                            "1", "--ac-rolls", "1", "--quiet"])
    assert code == 0, err
    sd = load_sd(single_file)
    image, _ = load_image(photo, size=64)
    config = Config(num_steps=2, num_reg_steps=1, num_ac_rolls=1)
    g = torch.Generator().manual_seed(config.seed)
    c = sd.encode_text(["a photo of a cat"])
    x_inv = invert(sd, encode_image(sd, image), c, config, g, progress=False)
    delta_c = edit_direction(sd, template_sentences("cat"), template_sentences("dog"))
    _, (x_edit,) = edit(sd, x_inv, c, [delta_c], c, config, progress=False)
    by_hand = np.asarray(tensor_to_pil(decode_latents(sd, x_edit)))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "cat-cat2dog.png")), by_hand)
