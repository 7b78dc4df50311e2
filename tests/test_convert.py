"""Tests for pix2pix_zero.loading.convert: the rule tables rename every one of our UNet and VAE keys to an original (ldm)
key and back, one to one, for the tiny and the full-size SD 1.5 models (built on the meta device: no memory);
hand-known SD 1.5 name pairs; and diffusers' own ldm converter, fed our ldm names, produces exactly our keys."""
import functools

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

from pix2pix_zero.loading import convert
from pix2pix_zero.loading.random_checkpoint import diffusers_configs, models
from pix2pix_zero.models.unet import UNet
from pix2pix_zero.models.vae import AutoencoderKL

SIZES = pytest.mark.parametrize("full_size", [False, True], ids=["tiny", "sd15"])


@functools.cache
def meta_models(full_size: bool):
    """(UNet state dict, VAE state dict, their diffusers configs), all tensors on the meta device; shared, read only."""
    ucfg, vcfg, text_cfg = models(full_size)
    with torch.device("meta"):
        unet, vae = UNet(ucfg), AutoencoderKL(vcfg)
    return unet.state_dict(), vae.state_dict(), diffusers_configs(ucfg, vcfg, text_cfg)


def tables(full_size: bool):
    ucfg, vcfg, _ = models(full_size)
    return (convert.unet_table(len(ucfg.block_out_channels), ucfg.layers_per_block, list(ucfg.attention_levels)),
            convert.vae_table(len(vcfg.block_out_channels), vcfg.layers_per_block))


def assert_bijective(ours: list[str], table) -> list[str]:
    """Every key has an ldm name that renames back to it, and no two keys share an ldm name."""
    ldm = [convert.rename(k, table, to_ours=False) for k in ours]
    assert None not in ldm, [k for k, n in zip(ours, ldm) if n is None]
    assert [convert.rename(n, table) for n in ldm] == ours
    assert len(set(ldm)) == len(ldm)
    return ldm


@SIZES
def test_unet_rules_round_trip_one_to_one(full_size):
    unet, _, _ = meta_models(full_size)
    ldm = assert_bijective(list(unet), tables(full_size)[0])
    ucfg = models(full_size)[0]
    assert convert.unet_layout(ldm) == (4, ucfg.layers_per_block, list(ucfg.attention_levels))


@SIZES
def test_vae_rules_round_trip_one_to_one(full_size):
    _, vae, _ = meta_models(full_size)
    ldm = assert_bijective(list(vae), tables(full_size)[1])
    assert convert.vae_layout(ldm) == (4, 2)


SD15_PAIRS = [  # (ldm name, our name), as in v1-5-pruned-emaonly.safetensors and the diffusers SD 1.5 folder
    ("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
    ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
    ("input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"),
    ("input_blocks.11.0.emb_layers.1.bias", "down_blocks.3.resnets.1.time_emb_proj.bias"),
    ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
    ("output_blocks.5.2.conv.weight", "up_blocks.1.upsamplers.0.conv.weight"),
    ("output_blocks.8.1.proj_out.bias", "up_blocks.2.attentions.2.proj_out.bias"),
    ("output_blocks.11.0.out_layers.3.weight", "up_blocks.3.resnets.2.conv2.weight"),
    ("middle_block.0.in_layers.0.weight", "mid_block.resnets.0.norm1.weight"),
    ("middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
     "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"),
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("out.0.weight", "conv_norm_out.weight"),
]
SD15_VAE_PAIRS = [
    ("decoder.up.3.block.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight"),
    ("decoder.up.1.upsample.conv.weight", "decoder.up_blocks.2.upsamplers.0.conv.weight"),
    ("decoder.up.0.block.0.nin_shortcut.weight", "decoder.up_blocks.3.resnets.0.conv_shortcut.weight"),
    ("encoder.mid.attn_1.q.weight", "encoder.mid_block.attentions.0.to_q.weight"),
    ("decoder.mid.attn_1.proj_out.bias", "decoder.mid_block.attentions.0.to_out.0.bias"),
    ("encoder.down.2.downsample.conv.weight", "encoder.down_blocks.2.downsamplers.0.conv.weight"),
    ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
]


@pytest.mark.parametrize("part, ldm, ours", [("unet", *p) for p in SD15_PAIRS] + [("vae", *p) for p in SD15_VAE_PAIRS])
def test_hand_known_sd15_pairs(part, ldm, ours):
    unet, vae, _ = meta_models(full_size=True)
    table = tables(full_size=True)[part == "vae"]
    assert ours in (unet if part == "unet" else vae)
    assert convert.rename(ldm, table) == ours
    assert convert.rename(ours, table, to_ours=False) == ldm


def test_keys_outside_the_tables_are_not_renamed():
    unet_table, vae_table = tables(full_size=False)
    assert convert.rename("label_emb.0.0.weight", unet_table) is None
    assert convert.rename("encoder.foo.weight", vae_table) is None


def test_legacy_vae_attention_names_round_trip():
    _, vae, _ = meta_models(full_size=False)
    legacy = [convert.rename_legacy_vae(k, to_ours=False) for k in vae]
    assert "decoder.mid_block.attentions.0.proj_attn.weight" in legacy
    assert "encoder.mid_block.attentions.0.query.bias" in legacy
    assert not any(".to_q." in k or ".to_out." in k for k in legacy)
    assert [convert.rename_legacy_vae(k) for k in legacy] == list(vae)


@SIZES
def test_diffusers_converter_maps_our_ldm_names_onto_our_keys(full_size):
    """Diffusers' own single-file converter, given tensors under our ldm names (meta tensors, the VAE attention
    as 1x1 convolutions as in real files), returns exactly our key set with our shapes."""
    unet, vae, configs = meta_models(full_size)
    unet_table, vae_table = tables(full_size)
    checkpoint = {"model.diffusion_model." + convert.rename(k, unet_table, to_ours=False): v for k, v in unet.items()}
    for k, v in vae.items():
        ldm = convert.rename(k, vae_table, to_ours=False)
        checkpoint["first_stage_model." + ldm] = v[:, :, None, None] if ".attn_1." in ldm and v.ndim == 2 else v
    converted_unet = convert_ldm_unet_checkpoint(checkpoint, configs["unet"])
    converted_vae = convert_ldm_vae_checkpoint(checkpoint, configs["vae"])
    assert {k: tuple(v.shape) for k, v in converted_unet.items()} == {k: tuple(v.shape) for k, v in unet.items()}
    assert {k: tuple(v.shape) for k, v in converted_vae.items()} == {k: tuple(v.shape) for k, v in vae.items()}
