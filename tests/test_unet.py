"""Tests for pix2pix_zero.models.unet: parity with diffusers' UNet2DConditionModel on the same random weights (fp32),
for its output and for every cross-attention map, from a diffusers folder and from an original single file that
diffusers converts with its own code; and our module tree is diffusers' tree, name for name and shape for shape."""
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import load_file

from diffusers_reference import recorded_cross_attention
from pix2pix_zero.models.attention import record_cross_attention
from pix2pix_zero.loading.random_checkpoint import diffusers_configs, models
from pix2pix_zero.models.unet import UNet

diffusers_logging.set_verbosity_error()  # "accelerate not found" notices

TOL = 1e-4
T_PAIR = torch.tensor([10, 900])  # two different timesteps, one per batch item


def inputs(seed=0, B=2, H=16, W=24, D=64):
    """Latents x_t (B, 4, H, W), non-square so a swapped H/W shows, and text context c (B, 77, D)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 4, H, W, generator=g), torch.randn(B, 77, D, generator=g)


@pytest.fixture(scope="module")
def reference(diffusers_folder):
    return UNet2DConditionModel.from_pretrained(diffusers_folder, subfolder="unet").eval()


@pytest.mark.parametrize("t", [T_PAIR, 500], ids=["t-per-item", "t-int"])
def test_unet_output_matches_diffusers(sd, reference, t):
    x_t, c = inputs()
    with torch.no_grad():
        ours = sd.unet(x_t, t, c)
        theirs = reference(x_t, t, encoder_hidden_states=c).sample
    assert ours.shape == theirs.shape == x_t.shape
    assert (ours - theirs).abs().max() <= TOL
    assert theirs.abs().max() > 0.1  # a real signal, not two zero outputs


def test_every_cross_attention_map_matches_diffusers(sd, diffusers_folder):
    reference = UNet2DConditionModel.from_pretrained(diffusers_folder, subfolder="unet").eval()
    x_t, c = inputs(seed=1)
    with torch.no_grad(), record_cross_attention(sd.unet) as maps, recorded_cross_attention(reference) as calls:
        ours = sd.unet(x_t, T_PAIR, c)
        theirs = reference(x_t, T_PAIR, encoder_hidden_states=c).sample
    assert (ours - theirs).abs().max() <= TOL  # the explicit-softmax reference computes the same UNet
    assert list(maps) == [name for name, _ in calls]  # same names, in the same call order
    assert len(maps) == 16  # SD 1.x: 6 down, 1 mid, 9 up cross-attention layers
    for name, M_ref in calls:
        assert maps[name].shape == M_ref.shape, name
        assert (maps[name] - M_ref).abs().max() <= TOL, name


def test_unet_from_single_file_matches_diffusers_own_conversion(sd_single, single_file, diffusers_folder):
    """The reference reads the original-layout file with diffusers' converter, not ours."""
    config = UNet2DConditionModel.load_config(diffusers_folder, subfolder="unet")
    reference = UNet2DConditionModel.from_config(config).eval()
    reference.load_state_dict(convert_ldm_unet_checkpoint(load_file(single_file), config), strict=True)
    x_t, c = inputs(seed=2)
    for t in (T_PAIR, 999):
        with torch.no_grad():
            ours, theirs = sd_single.unet(x_t, t, c), reference(x_t, t, encoder_hidden_states=c).sample
        assert (ours - theirs).abs().max() <= TOL


@pytest.mark.parametrize("full_size", [False, True], ids=["tiny", "sd15"])
def test_module_tree_is_diffusers_tree(full_size):
    """Same parameter names and shapes as diffusers' UNet built from the same config (built on meta: no memory)."""
    ucfg, vcfg, text_cfg = models(full_size)
    with torch.device("meta"):
        ours = UNet(ucfg).state_dict()
        theirs = UNet2DConditionModel.from_config(diffusers_configs(ucfg, vcfg, text_cfg)["unet"]).state_dict()
    assert set(ours) == set(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    if full_size:
        assert len(ours) == 686 and sum(v.numel() for v in ours.values()) == 859_520_964  # SD 1.5's UNet
