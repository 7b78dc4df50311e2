"""The `diffusers` setting (pix2pix_zero.diffusers_compat) against diffusers 0.42.1 itself, on identical random
weights and generator states: the regularizer's losses and draws, the regularization inside the pipeline's
`invert`, the reference and edit steps, and the whole pipeline (SD 1.x here; SD 2.x v-prediction in
test_sd2.py)."""
import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKL, DDIMInverseScheduler, DDIMScheduler, StableDiffusionPix2PixZeroPipeline,
                       UNet2DConditionModel)
from PIL import Image

from pix2pix_zero import diffusers_compat
from pix2pix_zero.config import EditConfig
from pix2pix_zero.directions import mean_embedding
from pix2pix_zero.inversion import encode_image
from pix2pix_zero.pipeline import edit_image
from pix2pix_zero.tools.image import pil_to_tensor


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


# --- the regularizer ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 4, 32, 32), (1, 4, 24, 40), (1, 4, 64, 64)])
def test_diffusers_losses_match_auto_corr_loss_and_kl_divergence(shape):
    eps = randn(*shape, seed=11)
    g_ours, g_ref = gen(12), gen(12)
    ours = diffusers_compat.pair_loss(eps, g_ours)
    ref = StableDiffusionPix2PixZeroPipeline.auto_corr_loss(None, eps, generator=g_ref)
    assert abs(ours.item() - ref.item()) < 1e-6 and torch.equal(g_ours.get_state(), g_ref.get_state())
    kl_ref = StableDiffusionPix2PixZeroPipeline.kl_divergence(None, eps)
    assert abs(diffusers_compat.kl_loss(eps).item() - kl_ref.item()) < 1e-6


def tiny_pix2pix_zero_pipeline():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, cross_attention_dim=8,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(block_out_channels=(4, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    schedule = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                    set_alpha_to_one=False)
    pipe = StableDiffusionPix2PixZeroPipeline(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=DDIMScheduler(**schedule),
        feature_extractor=None, safety_checker=None, inverse_scheduler=DDIMInverseScheduler(**schedule),
        caption_generator=None, caption_processor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_diffusers_setting_matches_the_regularization_inside_pipeline_invert():
    """Runs diffusers' own `invert` (batch 2, 32 x 32 latents) and records, at its UNet call, eps before the
    regularization and the generator's state, and, at the scheduler step, eps after it."""
    pipe, g = tiny_pix2pix_zero_pipeline(), gen(3)
    before, after = [], []
    pipe.unet.register_forward_hook(lambda m, args, out: before.append((out.sample.clone(), g.get_state())))
    step = pipe.inverse_scheduler.step
    pipe.inverse_scheduler.step = lambda eps, t, x, **kw: after.append(eps.clone()) or step(eps, t, x, **kw)
    image, prompt_embeds = torch.rand(2, 3, 64, 64, generator=gen(1)), randn(2, 5, 8, seed=2)
    pipe.invert(image=image, prompt_embeds=prompt_embeds, num_inference_steps=1, generator=g, output_type="pt")
    assert len(before) == len(after) == 1
    (eps, state), expected = before[0], after[0]
    g_ours = torch.Generator()
    g_ours.set_state(state)
    out = diffusers_compat.regularize_eps(eps, g_ours)
    assert (expected - eps).abs().max() > 0.1  # the regularization did something
    assert (out - expected).abs().max() < 1e-6
    assert torch.equal(g_ours.get_state(), g.get_state())


# --- the whole pipeline ---------------------------------------------------------------------------------------

def pipeline_parity(sd, pipe, N: int = 10):
    """Invert and edit one random image with diffusers' pipeline and with our `diffusers` setting, from the same
    generator state; returns (ours, theirs) for the inverted latents, for the edited latents, and our `paper` edit."""
    image = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    caption = "a photo of a cat"
    src, tgt = ["a cat", "a photo of a cat"], ["a dog", "a photo of a dog"]
    ref_inv = pipe.invert(caption, image=image, num_inference_steps=N, generator=torch.Generator().manual_seed(0),
                          output_type="latent").latents
    config = EditConfig(setting="diffusers", num_steps=N)
    g = torch.Generator().manual_seed(0)
    c = sd.encode_text([caption])
    x_inv = diffusers_compat.invert(sd, encode_image(sd, pil_to_tensor(image), "sample", g), c, config, g,
                                    progress=False)
    ref_edit = pipe(caption, source_embeds=pipe.get_embeds(src), target_embeds=pipe.get_embeds(tgt),
                    num_inference_steps=N, cross_attention_guidance_amount=0.1, guidance_scale=5.0,
                    latents=ref_inv, negative_prompt=caption, output_type="latent",
                    generator=torch.Generator().manual_seed(0)).images
    delta_c = mean_embedding(sd, tgt) - mean_embedding(sd, src)
    x0 = torch.zeros_like(ref_inv)  # not used by the edit

    def edited(config):
        return edit_image(sd, None, caption, "cat", ["dog"], config, torch.Generator(), directions=[delta_c],
                          inverted=(x0, ref_inv), progress=False).x_edits[0]
    return (x_inv, ref_inv), (edited(config), ref_edit), edited(EditConfig(num_steps=N))


def test_diffusers_setting_matches_the_diffusers_pipeline(sd, diffusers_folder, diffusers_pix2pix_zero):
    """Same tiny weights, same image, same generator: inverted and edited latents within 1e-4 (regularizer on)."""
    (x_inv, ref_inv), (x_edit, ref_edit), x_paper = pipeline_parity(sd, diffusers_pix2pix_zero(diffusers_folder))
    torch.testing.assert_close(x_inv, ref_inv, atol=1e-4, rtol=0)
    torch.testing.assert_close(x_edit, ref_edit, atol=1e-4, rtol=0)
    assert (x_paper - ref_edit).abs().max() > 1e-2  # the settings differ measurably


def test_the_diffusers_setting_samples_the_posterior_and_records_it(sd):
    image = torch.rand(1, 3, 64, 64, generator=gen(2)) * 2 - 1
    run = lambda config: edit_image(sd, image, "a photo of a cat", "cat", ["dog"], config, gen(0),  # noqa: E731
                                    directions=[torch.zeros(1, 77, 64)], progress=False)
    diffusers, paper = run(EditConfig(setting="diffusers", num_steps=1)), run(EditConfig(num_steps=1))
    assert diffusers.settings["config"]["posterior"] == "sample" and paper.settings["config"]["posterior"] == "mean"
    torch.testing.assert_close(diffusers.x0, encode_image(sd, image, "sample", gen(0)), atol=0, rtol=0)
    torch.testing.assert_close(paper.x0, encode_image(sd, image), atol=0, rtol=0)
