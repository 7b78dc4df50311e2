"""Tests for pix2pix_zero.models.vae: encode (mean, logvar) and decode match diffusers' AutoencoderKL on the same random
weights (fp32), from a diffusers folder, a folder with the old VAE attention names (diffusers renames those
itself) and an original single file (diffusers converts it with its own code); sampling the posterior."""
import math

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from diffusers.utils import logging as diffusers_logging
from safetensors import safe_open
from safetensors.torch import load_file

from pix2pix_zero.loading.load import load_sd
from pix2pix_zero.loading.random_checkpoint import diffusers_configs, models
from pix2pix_zero.models.vae import AutoencoderKL as OurAutoencoderKL
from pix2pix_zero.models.vae import sample_posterior

diffusers_logging.set_verbosity_error()

TOL = 1e-4


def images(seed=0, B=2, H=32, W=48):
    """Images (B, 3, H, W) and latents (B, 4, H/8, W/8), non-square so a swapped H/W shows."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, H, W, generator=g) * 2 - 1, torch.randn(B, 4, H // 8, W // 8, generator=g)


def assert_vae_matches(ours, theirs, seed=0):
    x, z = images(seed)
    with torch.no_grad():
        mean, logvar = ours.encode(x)
        posterior = theirs.encode(x).latent_dist
        assert mean.shape == logvar.shape == (2, 4, 4, 6)
        assert (mean - posterior.mean).abs().max() <= TOL
        assert (logvar - posterior.logvar).abs().max() <= TOL
        decoded = theirs.decode(z).sample
        assert (ours.decode(z) - decoded).abs().max() <= TOL
    assert posterior.mean.abs().max() > 0.1 and decoded.abs().max() > 0.1  # real signals


def test_vae_from_diffusers_folder_matches_diffusers(sd, diffusers_folder):
    assert_vae_matches(sd.vae, AutoencoderKL.from_pretrained(diffusers_folder, subfolder="vae").eval())


def test_vae_with_legacy_attention_names_matches_diffusers(legacy_vae_folder):
    with safe_open(legacy_vae_folder / "vae" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert "encoder.mid_block.attentions.0.query.weight" in f.keys()  # the old names really are on disk
    ours = load_sd(legacy_vae_folder).vae
    assert_vae_matches(ours, AutoencoderKL.from_pretrained(legacy_vae_folder, subfolder="vae").eval(), seed=1)


def test_vae_from_single_file_matches_diffusers_own_conversion(sd_single, single_file, diffusers_folder):
    config = AutoencoderKL.load_config(diffusers_folder, subfolder="vae")
    reference = AutoencoderKL.from_config(config).eval()
    reference.load_state_dict(convert_ldm_vae_checkpoint(load_file(single_file), config), strict=True)
    assert_vae_matches(sd_single.vae, reference, seed=2)


@pytest.mark.parametrize("full_size", [False, True], ids=["tiny", "sd15"])
def test_module_tree_is_diffusers_tree(full_size):
    ucfg, vcfg, text_cfg = models(full_size)
    with torch.device("meta"):
        ours = OurAutoencoderKL(vcfg).state_dict()
        theirs = AutoencoderKL.from_config(diffusers_configs(ucfg, vcfg, text_cfg)["vae"]).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


# --- sampling the posterior -------------------------------------------------------------------------------------

def test_sample_posterior_is_reproducible_from_the_generator():
    mean, logvar = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    z1 = sample_posterior(mean, logvar, torch.Generator().manual_seed(7))
    z2 = sample_posterior(mean, logvar, torch.Generator().manual_seed(7))
    z3 = sample_posterior(mean, logvar, torch.Generator().manual_seed(8))
    assert torch.equal(z1, z2)
    assert not torch.allclose(z1, z3)
    g = torch.Generator().manual_seed(7)
    assert not torch.equal(sample_posterior(mean, logvar, g), sample_posterior(mean, logvar, g))  # draws advance g


def test_sample_posterior_has_the_posterior_mean_and_std():
    """Per channel, 2^18 draws of z ~ N(mean, exp(logvar)): sample mean and std within ~5 standard errors."""
    mu = torch.tensor([0.0, 1.5, -2.0, 0.3])
    logvar = torch.tensor([0.0, -2.0, 1.0, -6.0])
    shape = (4, 4, 256, 256)
    z = sample_posterior(mu[None, :, None, None].expand(shape), logvar[None, :, None, None].expand(shape),
                         torch.Generator().manual_seed(0))
    assert z.shape == shape and z.dtype == torch.float32
    n = z.numel() // 4
    std = torch.exp(0.5 * logvar)
    samples = z.transpose(0, 1).reshape(4, -1)
    assert ((samples.mean(1) - mu).abs() <= 5 * std / math.sqrt(n)).all()
    assert ((samples.std(1) / std - 1).abs() <= 5 / math.sqrt(2 * n)).all()
