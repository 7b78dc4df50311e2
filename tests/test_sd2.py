"""Tests for Stable Diffusion 2.x (pix2pix_zero.loading.openclip, ldm_config, and the SD 2.x paths of sd and tiny):
the UNet, its cross-attention maps, the VAE and DDIM with v-prediction match diffusers on tiny SD 2.x weights in
both layouts (diffusers converts the single file with its own code); the OpenCLIP text tower matches one written
out here (fused in_proj, causal mask, penultimate block + ln_final); padding with "!" (id 0); the family comes from
keys and shapes, not file names; the prediction type from the scheduler config, the .yaml, the argument or the
SD 2.x single-file default (with a warning); SD 2.1's full-size shapes."""
import json
import math
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMInverseScheduler, DDIMScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from einops import rearrange
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

from diffusers_reference import assert_vae_matches, diffusers_unet, diffusers_vae, recorded_cross_attention
from pix2pix_zero.loading import openclip
from pix2pix_zero.models.attention import record_cross_attention
from pix2pix_zero.loading.checkpoint import CheckpointError
from pix2pix_zero.models.ddim import alphas_cumprod, ddim_inverse_step, ddim_step, inversion_schedule, sampling_schedule
from pix2pix_zero.loading.ldm_config import yaml_heads, yaml_value
from pix2pix_zero.loading.load import folder_heads, load_sd
from pix2pix_zero.models.text import L
from pix2pix_zero.loading.random_checkpoint import diffusers_configs, main, make_checkpoint, models
from pix2pix_zero.models.unet import UNet

diffusers_logging.set_verbosity_error()

TOL = 1e-4
BOS, EOS = 49406, 49407
CAT = [BOS, 320, 1125, 539, 320, 2368, EOS]  # "a photo of a cat"
PROMPTS = ["a photo of a cat", "a watercolor painting of a dog"]


@pytest.fixture(scope="module")
def sd2_files(tmp_path_factory):
    """A tiny SD 2.x single file (no .yaml) and diffusers folder with the same weights (seed 0)."""
    folder = tmp_path_factory.mktemp("sd2")
    return (make_checkpoint(folder / "tiny-sd2.safetensors", "single", family="sd2"),
            make_checkpoint(folder / "tiny-sd2-diffusers", "diffusers", family="sd2"))


@pytest.fixture(scope="module")
def sd2_single(sd2_files):
    with pytest.warns(UserWarning, match="assuming v_prediction"):
        return load_sd(sd2_files[0])


@pytest.fixture(scope="module")
def sd2(sd2_files):
    return load_sd(sd2_files[1])


def no_warnings_load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_sd(path, **kwargs)


# --- loading: family, both layouts, skip rule ------------------------------------------------------------------

def test_both_layouts_load_the_same_sd2_models(sd2, sd2_single):
    assert sd2.family == sd2_single.family == "sd2"
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(sd2, part).state_dict(), getattr(sd2_single, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert sd2.unet.config.linear_projection and sd2.unet.config.head_dim == 64 and sd2.unet.config.context_dim == 128
    assert sd2.text_encoder.config.hidden_act == "gelu" and sd2.text_encoder.config.num_attention_heads == 2


def test_the_last_openclip_block_is_skipped_by_rule(sd2_single, sd2_files):
    stored = {k for k in load_file(sd2_files[0]) if k.startswith(openclip.PREFIX + "transformer.resblocks.")}
    assert {k.split(".")[4] for k in stored} == {"0", "1", "2"}  # three OpenCLIP blocks on disk ...
    assert sd2_single.text_encoder.config.num_hidden_layers == 2  # ... two in the model
    text_skipped = {k for k in sd2_single.skipped if k.startswith(openclip.PREFIX)}
    last = {k for k in stored if k.startswith(openclip.PREFIX + "transformer.resblocks.2.")}
    assert len(last) == 12  # ln_1, in_proj, out_proj, ln_2, c_fc, c_proj: weight and bias each
    assert text_skipped == last | {openclip.PREFIX + "text_projection", openclip.PREFIX + "logit_scale"}


def test_openclip_names_round_trip():
    model = CLIPTextModel(models(False, "sd2")[2])
    ours = {k.removeprefix("text_model."): v for k, v in model.state_dict().items() if "position_ids" not in k}
    stored = openclip.to_openclip(ours)
    assert "transformer.resblocks.0.attn.in_proj_weight" in stored and stored["positional_embedding"].shape == (L, 128)
    assert stored["transformer.resblocks.1.attn.in_proj_bias"].shape == (3 * 128,)
    assert len(stored) == len(ours) - 4 * 3  # per block, q/k/v weight and bias -> in_proj weight and bias
    for name in stored:
        if "in_proj" not in name:
            assert ours[openclip.rename(name)] is stored[name], name
    assert openclip.rename("transformer.resblocks.0.attn.unknown.weight") is None


def test_family_comes_from_shapes_not_file_names(tmp_path, sd2_files, single_file):
    v15, v21 = tmp_path / "v1-5-pruned-emaonly.safetensors", tmp_path / "v2-1_768-ema-pruned.safetensors"
    os.symlink(sd2_files[0], v15)
    os.symlink(single_file, v21)
    assert no_warnings_load(v15, prediction_type="v_prediction").family == "sd2"
    assert no_warnings_load(v21).family == "sd1"


def test_mixed_families_are_refused(tmp_path, sd2_files, single_file):
    sd1 = {k: v for k, v in load_file(single_file).items() if not k.startswith("cond_stage_model.")}
    sd2_text = {k: v for k, v in load_file(sd2_files[0]).items() if k.startswith(openclip.PREFIX)}
    save_file(sd1 | sd2_text, tmp_path / "mixed.safetensors")
    with pytest.raises(CheckpointError, match=r"mixed families: the UNet is SD 1\.x .* text encoder is OpenCLIP"):
        load_sd(tmp_path / "mixed.safetensors")


# --- text: tokenizer padding and the OpenCLIP tower ------------------------------------------------------------

def test_sd2_pads_with_exclamation_sd1_with_endoftext(sd2, sd2_single, sd):
    for model in (sd2, sd2_single):
        ids = model.tokenizer(PROMPTS[:1], padding="max_length", max_length=L).input_ids[0]
        assert ids == CAT + [0] * (L - len(CAT))  # "!" is id 0, as open_clip.tokenize pads
    assert sd.tokenizer(PROMPTS[:1], padding="max_length", max_length=L).input_ids[0] == CAT + [EOS] * (L - 7)


def openclip_text(w: dict, ids: torch.Tensor, n_blocks: int, heads: int) -> torch.Tensor:
    """open_clip's text transformer written out on its own tensors (keys without cond_stage_model.model.):
    token + positional embedding, n_blocks pre-LN blocks with a fused-in_proj causal attention and a GELU MLP,
    then ln_final, as Stability-AI's FrozenOpenCLIPEmbedder.encode_with_transformer runs it."""

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)

    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    x = w["token_embedding.weight"][ids] + w["positional_embedding"]
    mask = torch.full((ids.shape[1], ids.shape[1]), -math.inf).triu(1)  # open_clip's build_attention_mask
    for i in range(n_blocks):
        p = f"transformer.resblocks.{i}"
        qkv = ln(x, f"{p}.ln_1") @ w[f"{p}.attn.in_proj_weight"].T + w[f"{p}.attn.in_proj_bias"]
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=heads)
        attn = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask).softmax(-1) @ v
        x = x + linear(rearrange(attn, "b h n d -> b n (h d)"), f"{p}.attn.out_proj")
        x = x + linear(F.gelu(linear(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc")), f"{p}.mlp.c_proj")
    return ln(x, "ln_final")


@pytest.mark.parametrize("layout", ["single", "diffusers"])
def test_text_encoder_is_openclip_penultimate_layer(sd2_files, sd2, sd2_single, layout):
    model = sd2_single if layout == "single" else sd2
    w = {k.removeprefix(openclip.PREFIX): v for k, v in load_file(sd2_files[0]).items()}
    dog = model.tokenizer(PROMPTS[1]).input_ids
    ids = torch.tensor([CAT + [0] * (L - 7), dog + [0] * (L - len(dog))])  # SD 2.x's padding, by hand
    with torch.no_grad():
        c = model.encode_text(PROMPTS)
    penultimate = openclip_text(w, ids, n_blocks=2, heads=2)
    assert c.shape == (2, L, 128)
    torch.testing.assert_close(c, penultimate, rtol=1e-5, atol=1e-5)
    assert (c - openclip_text(w, ids, n_blocks=3, heads=2)).abs().max() > 0.1  # the last block would matter


# --- UNet, cross-attention maps, VAE, DDIM with v-prediction against diffusers ----------------------------------

def inputs(seed=0, B=2, H=8, W=16, D=128):
    """Latents x_t (B, 4, H, W), non-square so a swapped H/W shows, and text context c (B, L, D)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 4, H, W, generator=g), torch.randn(B, L, D, generator=g)


@pytest.fixture(scope="module")
def reference_unet(sd2_files):
    return diffusers_unet(sd2_files, "diffusers")


@pytest.fixture(scope="module")
def converted_unet(sd2_files):
    return diffusers_unet(sd2_files, "single")


@pytest.mark.parametrize("layout", ["single", "diffusers"])
def test_unet_matches_diffusers(sd2, sd2_single, reference_unet, converted_unet, layout):
    ours, theirs = (sd2_single.unet, converted_unet) if layout == "single" else (sd2.unet, reference_unet)
    assert theirs.config.use_linear_projection and theirs.config.cross_attention_dim == 128
    x_t, c = inputs()
    with torch.no_grad():
        for t in (torch.tensor([10, 900]), 500):
            out, ref = ours(x_t, t, c), theirs(x_t, t, encoder_hidden_states=c).sample
            assert (out - ref).abs().max() <= TOL
    assert ref.abs().max() > 0.1


def test_cross_attention_maps_match_diffusers(sd2, reference_unet):
    x_t, c = inputs(seed=1)
    with torch.no_grad(), record_cross_attention(sd2.unet) as maps, recorded_cross_attention(reference_unet) as calls:
        sd2.unet(x_t, 300, c)
        reference_unet(x_t, 300, encoder_hidden_states=c)
    assert list(maps) == [name for name, _ in calls] and len(maps) == 16
    heads = {M.shape[1] for M in maps.values()}
    assert heads == {1, 2}  # 64-channel heads at widths 64 and 128
    for name, M_ref in calls:
        assert maps[name].shape == M_ref.shape and (maps[name] - M_ref).abs().max() <= TOL, name


@pytest.mark.parametrize("layout", ["single", "diffusers"])
def test_vae_matches_diffusers(sd2_files, sd2, sd2_single, layout):
    assert_vae_matches((sd2_single if layout == "single" else sd2).vae, diffusers_vae(sd2_files, layout), TOL)


def test_ddim_sampling_and_inversion_with_v_prediction_match_diffusers(sd2, sd2_files, reference_unet):
    """Our UNet + ddim.py driven by the loaded prediction type vs diffusers' UNet + DDIM schedulers configured
    by the folder's scheduler_config.json (prediction_type v_prediction): 4 steps each way."""
    assert sd2.prediction_type == "v_prediction"
    scheduler = DDIMScheduler.from_pretrained(sd2_files[1], subfolder="scheduler")
    inverse = DDIMInverseScheduler.from_pretrained(sd2_files[1], subfolder="scheduler")
    assert scheduler.config.prediction_type == inverse.config.prediction_type == "v_prediction"
    scheduler.set_timesteps(4)
    inverse.set_timesteps(4)
    alpha_bar = alphas_cumprod()
    x, c = inputs(seed=3, B=1, H=8, W=8)
    with torch.no_grad():
        c = sd2.encode_text(PROMPTS[:1])
        ours = theirs = x
        for (t, a_t, a_prev), t_ref in zip(sampling_schedule(4, alpha_bar), scheduler.timesteps, strict=True):
            ours = ddim_step(sd2.unet(ours, t, c), ours, a_t, a_prev, sd2.prediction_type)
            theirs = scheduler.step(reference_unet(theirs, t_ref, encoder_hidden_states=c).sample, t_ref, theirs)
            theirs = theirs.prev_sample
            assert t == t_ref and (ours - theirs).abs().max() <= TOL
        for (t, a_t, a_prev), t_ref in zip(inversion_schedule(4, alpha_bar), inverse.timesteps, strict=True):
            ours = ddim_inverse_step(sd2.unet(ours, t, c), ours, a_t, a_prev, sd2.prediction_type)
            theirs = inverse.step(reference_unet(theirs, t_ref, encoder_hidden_states=c).sample, t_ref, theirs)
            theirs = theirs.prev_sample
            assert t == t_ref and (ours - theirs).abs().max() <= TOL
        out = sd2.unet(x, 751, c)
    # the prediction type matters here: the same output read as eps gives another sample
    as_eps = ddim_step(out, x, alpha_bar[751], alpha_bar[501], "epsilon")
    assert (as_eps - ddim_step(out, x, alpha_bar[751], alpha_bar[501], "v_prediction")).abs().max() > 0.1


# --- prediction type: scheduler config, .yaml, argument, single-file default ---------------------------------------

def test_default_size_is_768_for_v_models_and_512_for_eps(sd2_files, tmp_path):
    """--size's default follows the checkpoint: SD 2.x v-prediction models (2.0-v, 2.1) were trained at 768 px,
    the 512-base eps ones at 512; --prediction-type epsilon on the v folder makes it 512 too."""
    import argparse

    from pix2pix_zero.tools.arguments import check_model_args
    eps_file = make_checkpoint(tmp_path / "tiny-sd2-eps.safetensors", "single", family="sd2",
                               prediction_type="epsilon")  # with an LDM .yaml saying eps beside it
    for weights, override, size in ((sd2_files[1], None, 768), (sd2_files[0], None, 768), (eps_file, None, 512),
                                    (sd2_files[1], "epsilon", 512)):
        a = argparse.Namespace(weights=str(weights), weights_dir="weights", device="cpu", dtype="fp32",
                               vae_dtype="fp32", size=None, prediction_type=override)
        check_model_args(a)
        assert a.size == size, (weights, override)


V_YAML = """model:
  base_learning_rate: 1.0e-4
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"  # v-prediction
    linear_start: 0.00085
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        num_head_channels: 64 # need to fix for flash-attn
        use_linear_in_transformer: True
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params:
        freeze: True
        layer: "penultimate"
"""


@pytest.mark.parametrize("params, expected", [
    ("num_head_channels: 64 # need to fix for flash-attn", (None, 64)),  # v2-inference-v.yaml
    ("num_heads: 8", (8, None)),  # v1-inference.yaml
    ("num_heads: -1\n        num_head_channels: 32", (None, 32)),  # LDM's "width decides" form
    ("use_linear_in_transformer: True", None),  # neither: the family's convention
])
def test_heads_from_the_ldm_yaml(tmp_path, params, expected):
    path = tmp_path / "m.yaml"
    path.write_text(V_YAML.replace("num_head_channels: 64 # need to fix for flash-attn", params))
    assert yaml_heads(path) == expected
    assert yaml_heads(tmp_path / "absent.yaml") is None


@pytest.mark.parametrize("config, expected", [
    ({"attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280]}, (8, None)),  # SD 1.x: a count
    ({"attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280]}, (None, 64)),  # SD 2.x
    ({"num_attention_heads": [1, 2, 4, 4], "attention_head_dim": 8, "block_out_channels": [32, 64, 128, 128]},
     (None, 32)),
])
def test_heads_from_the_diffusers_unet_config(tmp_path, config, expected):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert folder_heads(path) == expected


def test_heads_of_unequal_width_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"attention_head_dim": [5, 5, 5, 5], "block_out_channels": [320, 640, 1280, 1280]}))
    with pytest.raises(CheckpointError, match="config.json: heads per level"):
        folder_heads(path)


def test_yaml_value_reads_the_nested_key_only():
    assert yaml_value(V_YAML, "model.params.parameterization") == "v"
    assert yaml_value(V_YAML, "model.params.unet_config.params.num_head_channels") == "64"
    assert yaml_value(V_YAML, "model.params.cond_stage_config.params.layer") == "penultimate"
    assert yaml_value(V_YAML, "model.params.layer") is None
    nested_only = V_YAML.replace('    parameterization: "v"  # v-prediction\n', "")
    nested_only = nested_only.replace("        freeze: True", "        freeze: True\n        parameterization: v")
    assert yaml_value(nested_only, "model.params.parameterization") is None


def linked(tmp_path, target, name="model.safetensors", yaml=None):
    path = tmp_path / name
    os.symlink(target, path)
    if yaml is not None:
        path.with_suffix(".yaml").write_text(yaml)
    return path


@pytest.mark.parametrize("yaml, expected", [
    (V_YAML, "v_prediction"),
    (V_YAML.replace('"v"', "eps"), "epsilon"),
    (V_YAML.replace('    parameterization: "v"  # v-prediction\n', ""), "epsilon"),  # v2-inference.yaml (base)
])
def test_single_file_prediction_type_from_the_yaml_beside_it(tmp_path, sd2_files, yaml, expected):
    assert no_warnings_load(linked(tmp_path, sd2_files[0], yaml=yaml)).prediction_type == expected


def test_unsupported_parameterization_is_refused(tmp_path, sd2_files):
    with pytest.raises(CheckpointError, match="x0"):
        load_sd(linked(tmp_path, sd2_files[0], yaml=V_YAML.replace('"v"', "x0")))


def test_sd2_single_file_defaults_to_v_with_a_warning_naming_the_override(sd2_files, single_file):
    with pytest.warns(UserWarning, match="prediction-type epsilon") as record:
        assert load_sd(sd2_files[0]).prediction_type == "v_prediction"
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert no_warnings_load(sd2_files[0], prediction_type="epsilon").prediction_type == "epsilon"
    assert no_warnings_load(single_file).prediction_type == "epsilon"  # SD 1.x: eps, no warning


def test_tiny_maker_cli_sd2(tmp_path, capsys):
    main([str(tmp_path / "eps"), "--layout", "diffusers", "--family", "sd2", "--prediction-type", "epsilon"])
    main([str(tmp_path / "v.safetensors"), "--family", "sd2", "--prediction-type", "v_prediction"])
    assert capsys.readouterr().out.split() == [str(tmp_path / "eps"), str(tmp_path / "v.safetensors")]
    folder = tmp_path / "eps"
    assert json.loads((folder / "scheduler/scheduler_config.json").read_text())["prediction_type"] == "epsilon"
    assert json.loads((folder / "tokenizer/tokenizer_config.json").read_text())["pad_token"] == "!"
    text = json.loads((folder / "text_encoder/config.json").read_text())
    assert (text["num_hidden_layers"], text["hidden_act"], text["hidden_size"]) == (2, "gelu", 128)
    assert no_warnings_load(folder).prediction_type == "epsilon"
    assert no_warnings_load(tmp_path / "v.safetensors").prediction_type == "v_prediction"  # from v.yaml


# --- full size: SD 2.1's shapes --------------------------------------------------------------------------------

def test_full_size_sd2_is_sd21():
    ucfg, vcfg, text_cfg = models(True, "sd2")
    configs = diffusers_configs(ucfg, vcfg, text_cfg)
    assert configs["unet"]["attention_head_dim"] == [5, 10, 20, 20]  # SD 2.1's unet/config.json (heads per level)
    with torch.device("meta"):
        ours = UNet(ucfg).state_dict()
        theirs = UNet2DConditionModel.from_config(configs["unet"]).state_dict()
        text = CLIPTextModel(type(text_cfg).from_dict(text_cfg.to_dict() | {"num_hidden_layers": 23}))
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert sum(v.numel() for v in ours.values()) == 865_910_724  # SD 2.1's UNet
    assert (text_cfg.num_hidden_layers, text_cfg.num_attention_heads, text_cfg.intermediate_size) == (24, 16, 4096)
    assert sum(p.numel() for p in text.parameters()) == 340_387_840  # SD 2.1's text_encoder/ (23 blocks)


# --- v-prediction through the method --------------------------------------------------------------------------

@pytest.mark.slow
def test_v_prediction_pipeline_matches_diffusers_in_the_diffusers_setting(sd2, sd2_files, diffusers_pix2pix_zero):
    """Tiny SD 2.x folder predicting v: the regularized inversion (which steps the v output, as diffusers does)
    and the guided edit match diffusers' pipeline within 1e-4."""
    from test_diffusers_compat import pipeline_parity
    assert sd2.prediction_type == "v_prediction"
    (x_inv, ref_inv), (x_edit, ref_edit), _ = pipeline_parity(sd2, diffusers_pix2pix_zero(sd2_files[1]))
    torch.testing.assert_close(x_inv, ref_inv, atol=1e-4, rtol=0)
    torch.testing.assert_close(x_edit, ref_edit, atol=1e-4, rtol=0)


def test_v_prediction_inversion_reconstructs_in_the_paper_setting(sd2):
    """Regularizer off, guidance 1: invert and sample back. The v output is converted to eps at the UNet's level;
    measured RMS errors 0.146 (N = 10) and 0.034 (N = 50) for latents of RMS 1."""
    from pix2pix_zero.config import EditConfig
    from pix2pix_zero.editing import edit
    from pix2pix_zero.inversion import invert
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c = sd2.encode_text(["a photo of a cat"])
    errors = []
    for N in (10, 50):
        config = EditConfig(num_steps=N, lambda_ac=0, lambda_kl=0, lambda_xa=0, guidance_scale=1)
        x_rec, _ = edit(sd2, invert(sd2, x0, c, config, torch.Generator(), progress=False), c, [], c, config,
                        progress=False)
        errors.append(((x_rec - x0) ** 2).mean().sqrt().item())
    assert errors[1] < errors[0] and errors[1] < 0.05


def test_an_explicit_prediction_type_overrides_config_and_yaml(tmp_path, sd2_files):
    assert load_sd(sd2_files[1], prediction_type="epsilon").prediction_type == "epsilon"  # scheduler says v
    single = make_checkpoint(tmp_path / "v.safetensors", "single", family="sd2", prediction_type="v_prediction")
    assert load_sd(single).prediction_type == "v_prediction"  # from v.yaml
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_sd(single, prediction_type="epsilon").prediction_type == "epsilon"
