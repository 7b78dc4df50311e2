"""The KL autoencoder of Stable Diffusion (Rombach et al., arXiv:2112.10752, sec. 3.1), written out.

encode: image (B, 3, H, W) in [-1, 1] -> posterior (mean, logvar), each (B, 4, H/8, W/8), unscaled.
decode: unscaled latents (B, 4, H/8, W/8) -> image (B, 3, H, W), roughly in [-1, 1].
The diffusion model works on latents multiplied by LATENT_SCALE. Module names follow the diffusers layout;
`convert.py` maps the original `encoder.down.i.block.j` names onto them by rule.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .unet import ResnetBlock2D, Upsample2D

LATENT_SCALE = 0.18215  # SD 1.x and 2.x: makes the latents roughly unit-variance (ldm configs, scale_factor)
# SDXL's VAE has this architecture with retrained weights and its own scale (sgm configs/inference/sd_xl_base.yaml,
# scale_factor). It overflows float16 (NaN images) where SD's does not: diffusers marks it force_upcast and decodes in
# fp32. Keep it fp32 (load_sd's vae_dtype default) or bf16, or use a VAE retrained to stay in fp16 range (the
# community madebyollin/sdxl-vae-fp16-fix).
SDXL_LATENT_SCALE = 0.13025


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    groups: int = 32

    @staticmethod
    def tiny() -> "VAEConfig":
        return VAEConfig(block_out_channels=(32, 64, 64, 64))


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv after padding right and bottom by one.

    NOTE(official): the original pads asymmetrically, (0, 1, 0, 1), instead of conv padding=1; the weights
    were trained that way, so it is kept.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the N = H*W positions, with GroupNorm and a residual."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        hidden = rearrange(self.group_norm(x), "b c H W -> b 1 (H W) c")
        hidden = F.scaled_dot_product_attention(self.to_q(hidden), self.to_k(hidden), self.to_v(hidden))
        hidden = rearrange(self.to_out[0](hidden), "b 1 (H W) c -> b c H W", H=H, W=W)
        return x + hidden


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, None, groups, eps=1e-6) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class DownLevel(nn.Module):
    """One encoder resolution level: resnets, then a downsample unless it is the last level."""

    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, down: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if j == 0 else out_ch, out_ch, None, groups, eps=1e-6) for j in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch)] if down else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in [*self.resnets, *self.downsamplers]:
            x = layer(x)
        return x


class UpLevel(nn.Module):
    """One decoder resolution level: resnets, then a 2x nearest upsample + conv unless it is the last level."""

    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, up: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if j == 0 else out_ch, out_ch, None, groups, eps=1e-6) for j in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)] if up else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in [*self.resnets, *self.upsamplers]:
            x = layer(x)
        return x


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        ch, n, g = config.block_out_channels, len(config.block_out_channels), config.groups
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownLevel(ch[max(i - 1, 0)], ch[i], config.layers_per_block, g, down=i < n - 1)
            for i in range(n)])
        self.mid_block = MidBlock(ch[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        rch, n, g = config.block_out_channels[::-1], len(config.block_out_channels), config.groups
        self.conv_in = nn.Conv2d(config.latent_channels, rch[0], 3, padding=1)
        self.mid_block = MidBlock(rch[0], g)
        self.up_blocks = nn.ModuleList([
            UpLevel(rch[max(i - 1, 0)], rch[i], config.layers_per_block + 1, g, up=i < n - 1)
            for i in range(n)])
        self.conv_norm_out = nn.GroupNorm(g, rch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(rch[-1], config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image in [-1, 1] -> diagonal Gaussian posterior q(z|x) as (mean, logvar), logvar clamped as in ldm."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


def sample_posterior(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z = mean + std * n, n ~ N(0, I) drawn from `generator` (on the generator's device, then moved)."""
    n = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype).to(mean.device)
    return mean + torch.exp(0.5 * logvar) * n
