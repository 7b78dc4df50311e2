"""pix2pix-zero on SDXL, on a tiny random SDXL: a synthetic generation equals diffusers' StableDiffusionXLPipeline
with its DDIM scheduler (the zeroed empty negative prompt, the size/crop numbers); the command line edits a
file with either layout and records the family and the size/crop numbers it conditioned on; the attention loss
keeps lambda_xa's meaning across layer counts; the diffusers setting refuses SDXL."""
import json

import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel)
from diffusers.utils import logging as diffusers_logging
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from pix2pix_zero.config import EditConfig
from pix2pix_zero.loading.load import load_sd
from pix2pix_zero.loading.random_checkpoint import make_checkpoint
from pix2pix_zero.models.attention import record_cross_attention
from pix2pix_zero.pipeline import edit_image

diffusers_logging.set_verbosity_error()


@pytest.fixture(scope="module")
def sdxl_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl")
    return (make_checkpoint(folder / "tiny-sdxl.safetensors", "single", family="sdxl"),
            make_checkpoint(folder / "tiny-sdxl-diffusers", "diffusers", family="sdxl"))


def diffusers_sdxl(folder) -> StableDiffusionXLPipeline:
    """diffusers' SDXL pipeline from the tiny folder with a DDIM scheduler on SDXL's schedule (SD's betas,
    "leading" timesteps, steps_offset 1), in float32. SDXL ships an Euler scheduler config; DDIMScheduler
    .from_config of it would keep DDIM's own defaults clip_sample=True and set_alpha_to_one=True, which
    SD 1.x's DDIM config turns off and our ddim.py never does, so they are set here."""
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2"),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
        unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
        scheduler=DDIMScheduler.from_pretrained(folder / "scheduler", clip_sample=False, set_alpha_to_one=False))
    assert pipe.config.force_zeros_for_empty_prompt and pipe.scheduler.config.steps_offset == 1
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("H, W", [(64, 64), (64, 96)])
def test_synthetic_generation_equals_diffusers_sdxl_pipeline(sdxl_files, H, W):
    """The reference trajectory of a synthetic run is a DDIM generation from x_T with the prompt at guidance 5
    against the empty negative prompt: diffusers conditions the negative on zeros (SDXL base's
    force_zeros_for_empty_prompt) and both on (H, W, 0, 0, H, W). The same x_T gives the same latents."""
    folder = sdxl_files[1]
    sd = load_sd(folder)
    config = EditConfig(num_steps=4)
    result = edit_image(sd, None, "a photo of a cat", "cat", [], config, torch.Generator().manual_seed(0),
                        size=(H, W), progress=False)
    with torch.no_grad():
        theirs = diffusers_sdxl(folder)("a photo of a cat", height=H, width=W, num_inference_steps=4,
                                        guidance_scale=config.guidance_scale, latents=result.x_inv.clone(),
                                        output_type="latent").images
    torch.testing.assert_close(result.x_ref, theirs, rtol=1e-4, atol=1e-4)
    assert (result.x_ref - result.x_inv).abs().max() > 0.1  # it denoised: the comparison is not trivial


def test_cli_edits_a_file_with_tiny_sdxl_in_both_layouts(sdxl_files, tmp_path, command):
    """Both layouts give the same edit; the JSON names the family and the size/crop numbers of the file's
    geometry: a 96 x 64 photo at --size 64 is resized to 96 x 64 and cropped to 64 x 64 from left 16."""
    photo = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)).save(photo)
    edits = []
    for k, weights in enumerate(sdxl_files):
        code, out, err = command(["--input", photo, "--prompt", "a photo of a cat", "--task", "cat2dog",
                                  "--weights", weights, "--out", tmp_path / f"out{k}", "--size", "64", "--steps", "2",
                                  "--reg-steps", "1", "--ac-rolls", "1", "--quiet"])
        assert code == 0, err
        record = json.loads((tmp_path / f"out{k}" / "cat-cat2dog.json").read_text())
        assert record["checkpoint"]["family"] == "sdxl" and record["time_ids"] == [64, 96, 0, 16, 64, 64]
        assert record["geometry"]["crop"][:2] == [16, 0]
        edits.append(np.asarray(Image.open(tmp_path / f"out{k}" / "cat-cat2dog.png")))
    assert edits[0].shape == (64, 64, 3) and np.array_equal(edits[0], edits[1])


def test_sdxl_default_size_is_1024_and_others_512(sdxl_files, single_file):
    import argparse

    from pix2pix_zero.tools.arguments import check_model_args
    for weights, size in ((sdxl_files[0], 1024), (single_file, 512)):
        a = argparse.Namespace(weights=str(weights), weights_dir="weights", device="cpu", dtype="fp32",
                               vae_dtype="fp32", size=None)
        check_model_args(a)
        assert a.size == size


def test_attention_loss_is_16_times_the_mean_over_sdxls_layers(sdxl_files):
    """Every cross-attention layer of the tiny SDXL records a map, and the loss over them is 16 x their mean
    (the full-size SDXL has 70 layers: test_full_size_sdxl_has_70_cross_attention_layers)."""
    from pix2pix_zero.editing import attention_loss
    sd = load_sd(sdxl_files[0])
    c = sd.encode_text(["a photo of a cat"])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), record_cross_attention(sd.unet) as maps:
        sd.unet(x, 500, c)
    layers = sum(1 for name, _ in sd.unet.named_modules() if name.endswith("attn2"))
    assert len(maps) == layers and layers != 16
    ref = {name: torch.zeros_like(M) for name, M in maps.items()}
    per_layer = [(M ** 2).sum(dim=(-2, -1)).mean() for M in maps.values()]
    torch.testing.assert_close(attention_loss(maps, ref), 16 * torch.stack(per_layer).mean())


def test_full_size_sdxl_has_70_cross_attention_layers():
    from pix2pix_zero.loading.random_checkpoint import sdxl_models
    from pix2pix_zero.models.unet import UNet
    with torch.device("meta"):
        unet = UNet(sdxl_models(True)[0])
    assert sum(1 for name, _ in unet.named_modules() if name.endswith("attn2")) == 70


def test_the_diffusers_setting_refuses_sdxl(sdxl_files):
    sd = load_sd(sdxl_files[0])
    with pytest.raises(ValueError, match="diffusers setting.*SD 1.x/2.x only"):
        edit_image(sd, None, "a cat", "cat", ["dog"], EditConfig(setting="diffusers", num_steps=1),
                   torch.Generator(), size=(64, 64), progress=False)


def test_an_fp16_vae_overflow_is_caught_and_the_fix_named(sdxl_files):
    """SDXL's VAE overflows float16 (diffusers upcasts it for that reason): the NaN checks stop at the decoder
    and name the fixes, the fp32 VAE (the default) or the fp16-fixed community VAE."""
    from pix2pix_zero.editing import decode_latents
    from pix2pix_zero.finite import NonFiniteError
    sd = load_sd(sdxl_files[0])
    sd.vae.half()
    with pytest.raises(NonFiniteError, match=r"VAE decoding.*--vae-dtype fp32.*sdxl-vae-fp16-fix"):
        decode_latents(sd, torch.full((1, 4, 8, 8), 3e4))  # / 0.13025 -> 2.3e5: beyond float16's 65504
