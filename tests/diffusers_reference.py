"""diffusers as the reference, shared by the parity tests of SD 1.x (test_unet.py), SD 2.x (test_sd2.py) and
SDXL (test_sdxl.py): its UNet and VAE from a tiny checkpoint in either layout (the single file converted by
diffusers' own code), its cross-attention probabilities recorded layer by layer, and the VAE comparison."""
from contextlib import contextmanager

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors.torch import load_file


class RecordingProcessor:
    """A diffusers attention processor that computes attention with an explicit softmax(Q K^T * scale) and
    appends (name, probabilities (B, h, N, L)) to `calls`, so call order and names can be compared with ours."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert attention_mask is None and hidden_states.ndim == 3
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*h, N, d), diffusers' own head split
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = torch.softmax(q @ k.transpose(1, 2) * attn.scale, dim=-1)  # (B*h, N, L)
        B = hidden_states.shape[0]
        self.calls.append((self.name, probs.reshape(B, attn.heads, *probs.shape[1:])))
        out = attn.batch_to_head_dim(probs @ v)
        return attn.to_out[1](attn.to_out[0](out))


@contextmanager
def recorded_cross_attention(unet: UNet2DConditionModel):
    """Every attn2 layer of diffusers' `unet` records through a RecordingProcessor named by its module path;
    yields the list they fill; the original processors come back on exit."""
    calls, original = [], unet.attn_processors
    unet.set_attn_processor({key: RecordingProcessor(key.removesuffix(".processor"), calls) if ".attn2." in key
                             else p for key, p in original.items()})
    try:
        yield calls
    finally:
        unet.set_attn_processor(original)


def diffusers_part(files: tuple, layout: str, cls=UNet2DConditionModel, subfolder: str = "unet",
                   convert=convert_ldm_unet_checkpoint):
    """diffusers' UNet (or, with AutoencoderKL, "vae", convert_ldm_vae_checkpoint: its VAE) of a tiny checkpoint
    (single file, diffusers folder): from the folder, or holding the single file's weights converted by
    diffusers' own code."""
    single, folder = files
    if layout == "diffusers":
        return cls.from_pretrained(folder, subfolder=subfolder).eval()
    config = cls.load_config(folder, subfolder=subfolder)
    model = cls.from_config(config).eval()
    model.load_state_dict(convert(load_file(single), config), strict=True)
    return model


def diffusers_unet(files: tuple, layout: str) -> UNet2DConditionModel:
    return diffusers_part(files, layout)


def diffusers_vae(files: tuple, layout: str) -> AutoencoderKL:
    return diffusers_part(files, layout, AutoencoderKL, "vae", convert_ldm_vae_checkpoint)


def assert_vae_matches(ours, theirs: AutoencoderKL, tol: float) -> None:
    """Posterior mean and log-variance of an image, and a decoded latent, within `tol` of diffusers'."""
    g = torch.Generator().manual_seed(0)
    x, z = torch.rand(1, 3, 32, 48, generator=g) * 2 - 1, torch.randn(1, 4, 4, 6, generator=g)
    with torch.no_grad():
        mean, logvar = ours.encode(x)
        posterior = theirs.encode(x).latent_dist
        assert (mean - posterior.mean).abs().max() <= tol and (logvar - posterior.logvar).abs().max() <= tol
        assert (ours.decode(z) - theirs.decode(z).sample).abs().max() <= tol
