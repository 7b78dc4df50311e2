"""The Stable Diffusion UNet (Rombach et al., arXiv:2112.10752, sec. 3.3 and appendix), written out.

Module names follow the diffusers layout (`down_blocks.i.resnets.j`, `...attentions.j.transformer_blocks.0
.attn2.to_q`), so a diffusers-format folder loads with no renaming; `convert.py` maps the original
`input_blocks.N` layout onto these names by rule. SD 1.x and 2.x differ only in `UNetConfig`:
8 heads vs 64-channel heads, conv vs linear proj_in/proj_out, context width 768 vs 1024. SDXL (Podell et al.,
arXiv:2307.01952, sec. 2.1-2.2) is a config too: three levels (320, 640, 1280), no attention at the first,
1/2/10 transformer blocks per spatial transformer, context 2048, and an added embedding of the pooled text
embedding and six size/crop numbers (`add_embedding`, the original's `label_emb`) summed into the timestep's.
Tensors: latents (B, C, H, W), text context (B, L, D), N = H*W positions.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import Attention


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_levels: tuple[bool, ...] = (True, True, True, False)  # down levels with cross-attention
    context_dim: int = 768  # CLIP ViT-L/14 width; SD 2.x: 1024 (OpenCLIP ViT-H/14)
    num_heads: int | None = 8  # SD 1.x: 8 heads at every width
    head_dim: int | None = None  # SD 2.x: heads of 64 channels (set this, num_heads=None)
    linear_projection: bool = False  # SD 2.x: proj_in/proj_out are Linear, not 1x1 Conv
    groups: int = 32  # GroupNorm groups everywhere
    # Transformer blocks in each spatial transformer, per level; the mid block's is the last level's, as in
    # sgm's openaimodel.py (transformer_depth_middle) and diffusers. SD 1.x/2.x: 1 everywhere; SDXL: 1, 2, 10.
    transformer_depth: tuple[int, ...] = (1, 1, 1, 1)
    # SDXL's added conditioning: add_embedding maps [pooled text embedding (pooled_dim) | a sinusoid of
    # time_id_dim channels for each of the num_time_ids size/crop numbers] to the timestep embedding's width.
    pooled_dim: int | None = None  # SDXL: 1280 (OpenCLIP ViT-bigG/14's projection); None: no added embedding
    time_id_dim: int = 256  # sgm's ConcatTimestepEmbedderND(outdim=256); diffusers' addition_time_embed_dim
    num_time_ids: int = 6  # original (h, w), crop (top, left), target (h, w); the refiner's 5 are not supported

    def __post_init__(self):
        levels = len(self.block_out_channels)
        if len(self.attention_levels) != levels or len(self.transformer_depth) != levels:
            raise ValueError(f"UNetConfig: {levels} levels of block_out_channels, but attention_levels has "
                             f"{len(self.attention_levels)} and transformer_depth {len(self.transformer_depth)}")

    def heads(self, channels: int) -> int:
        return self.num_heads if self.num_heads else channels // self.head_dim

    @property
    def added_dim(self) -> int:
        """Inputs of add_embedding (0 without one): SDXL base 1280 + 6 x 256 = 2816."""
        return self.pooled_dim + self.num_time_ids * self.time_id_dim if self.pooled_dim else 0

    @staticmethod
    def tiny(**changes) -> "UNetConfig":
        """SD 1.x topology with tiny widths (still 32 groups, 8 heads) for tests."""
        return UNetConfig(block_out_channels=(32, 64, 128, 128), context_dim=64, **changes)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al., arXiv:1706.03762, sec. 3.5) of t (B,) -> (B, dim), [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(channels, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(emb)))


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-Conv twice, plus the timestep embedding after the first conv (if temb_dim)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int | None, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=eps)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, out_ch) if temb_dim else None
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=eps)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            hidden = hidden + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        hidden = self.conv2(F.silu(self.norm2(hidden)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + hidden


class GEGLU(nn.Module):
    """GLU with a GELU gate (Shazeer, arXiv:2002.05202): one projection to 2x width, split, gate."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention (attn1), cross-attention to the text (attn2), GEGLU feed-forward."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, None, heads, dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim // heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """Spatial transformer: GroupNorm, project in, `depth` transformer blocks over the N = H*W positions, out."""

    def __init__(self, channels: int, config: UNetConfig, depth: int = 1):
        super().__init__()
        self.linear = config.linear_projection
        proj = (lambda: nn.Linear(channels, channels)) if self.linear else (lambda: nn.Conv2d(channels, channels, 1))
        self.norm = nn.GroupNorm(config.groups, channels, eps=1e-6)
        self.proj_in = proj()
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, config.context_dim, config.heads(channels)) for _ in range(depth)])
        self.proj_out = proj()

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        hidden = self.norm(x)
        if not self.linear:
            hidden = self.proj_in(hidden)
        hidden = rearrange(hidden, "b c H W -> b (H W) c")
        if self.linear:
            hidden = self.proj_in(hidden)
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        if self.linear:
            hidden = self.proj_out(hidden)
        hidden = rearrange(hidden, "b (H W) c -> b c H W", H=H, W=W)
        if not self.linear:
            hidden = self.proj_out(hidden)
        return x + hidden


class Downsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """One resolution level of the encoder half: (resnet [+ transformer]) x layers, then maybe downsample."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, config: UNetConfig, attention: bool, down: bool,
                 depth: int = 1):
        super().__init__()
        n = config.layers_per_block
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(in_ch if j == 0 else out_ch, out_ch, temb_dim, config.groups) for j in range(n)])
        self.attentions = nn.ModuleList(
            [Transformer2DModel(out_ch, config, depth) for _ in range(n)] if attention else [])
        self.downsamplers = nn.ModuleList([Downsample2D(out_ch)] if down else [])

    def forward(self, x, temb, context, skips: list[torch.Tensor]) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[j](x, context)
            skips.append(x)
        for downsampler in self.downsamplers:
            x = downsampler(x)
            skips.append(x)
        return x


class UpBlock(nn.Module):
    """One level of the decoder half: (concat skip, resnet [+ transformer]) x (layers + 1), maybe upsample."""

    def __init__(self, in_ch: int, prev_ch: int, out_ch: int, temb_dim: int, config: UNetConfig,
                 attention: bool, up: bool, depth: int = 1):
        super().__init__()
        n = config.layers_per_block + 1
        skip_ch = [out_ch] * (n - 1) + [in_ch]
        self.resnets = nn.ModuleList([ResnetBlock2D((prev_ch if j == 0 else out_ch) + skip_ch[j], out_ch, temb_dim,
                                                    config.groups) for j in range(n)])
        self.attentions = nn.ModuleList(
            [Transformer2DModel(out_ch, config, depth) for _ in range(n)] if attention else [])
        self.upsamplers = nn.ModuleList([Upsample2D(out_ch)] if up else [])

    def forward(self, x, temb, context, skips: list[torch.Tensor]) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions:
                x = self.attentions[j](x, context)
        for upsampler in self.upsamplers:
            x = upsampler(x)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, temb_dim: int, config: UNetConfig):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb_dim, config.groups) for _ in range(2)])
        self.attentions = nn.ModuleList([Transformer2DModel(channels, config, config.transformer_depth[-1])])

    def forward(self, x, temb, context) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


class UNet(nn.Module):
    """eps_theta(x_t, t, c) (or v, or x0: the checkpoint's prediction type) for latents x_t (B, 4, H, W)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        ch = config.block_out_channels
        levels = len(ch)
        temb_dim = 4 * ch[0]
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb_dim)
        # SDXL: the original's label_emb.0 (Linear, SiLU, Linear), diffusers' add_embedding
        self.add_embedding = TimestepEmbedding(config.added_dim, temb_dim) if config.pooled_dim else None
        self.down_blocks = nn.ModuleList([
            DownBlock(ch[max(i - 1, 0)], ch[i], temb_dim, config, config.attention_levels[i], down=i < levels - 1,
                      depth=config.transformer_depth[i])
            for i in range(levels)])
        self.mid_block = MidBlock(ch[-1], temb_dim, config)
        rch, rattn, rdepth = ch[::-1], config.attention_levels[::-1], config.transformer_depth[::-1]
        self.up_blocks = nn.ModuleList([
            UpBlock(rch[min(i + 1, levels - 1)], rch[max(i - 1, 0)], rch[i], temb_dim, config, rattn[i],
                    up=i < levels - 1, depth=rdepth[i])
            for i in range(levels)])
        self.conv_norm_out = nn.GroupNorm(config.groups, ch[0])
        self.conv_out = nn.Conv2d(ch[0], config.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: int | torch.Tensor, context: torch.Tensor, *,
                pooled: torch.Tensor | None = None, time_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B, 4, H, W), timestep(s) t, text context c (B, L, D) -> the prediction (B, 4, H, W).

        SDXL only (keywords, required there and refused elsewhere): `pooled` (B, pooled_dim), the pooled text
        embedding, and `time_ids` (B, 6) or (6,), the numbers (original h, original w, crop top, crop left,
        target h, target w) in pixels; diffusers calls them added_cond_kwargs' text_embeds and time_ids. Or
        both packed into c as one more row (`pack_conditioning`, what the method passes around).
        """
        if self.add_embedding is not None and pooled is None and context.shape[1] == TOKENS + 1:
            context, pooled, time_ids = unpack_conditioning(context, self.config)
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        temb = self.time_embedding(timestep_embedding(t, self.config.block_out_channels[0]).to(x.dtype))
        if self.add_embedding is not None or pooled is not None or time_ids is not None:
            temb = temb + self.added_embedding(pooled, time_ids, x.shape[0]).to(x.dtype)
        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x = block(x, temb, context, skips)
        x = self.mid_block(x, temb, context)
        for block in self.up_blocks:
            x = block(x, temb, context, skips)
        return self.conv_out(F.silu(self.conv_norm_out(x)))

    def added_embedding(self, pooled: torch.Tensor | None, time_ids: torch.Tensor | None, B: int) -> torch.Tensor:
        """SDXL's added conditioning, summed into the timestep embedding: add_embedding([pooled | emb(ids)]),
        each of the six ids embedded like a timestep (sgm ConcatTimestepEmbedderND; SDXL paper, sec. 2.2)."""
        cfg = self.config
        if self.add_embedding is None:
            raise ValueError("pooled/time_ids given, but this UNet has no added embedding (only SDXL's has)")
        if pooled is None or time_ids is None:
            raise ValueError("this UNet (SDXL) needs pooled= (B, pooled_dim), the pooled text embedding, and "
                             f"time_ids= (B, {cfg.num_time_ids}): original h, w, crop top, left, target h, w")
        if pooled.shape != (B, cfg.pooled_dim):
            raise ValueError(f"pooled has shape {tuple(pooled.shape)}; this UNet takes ({B}, {cfg.pooled_dim})")
        time_ids = time_ids.to(pooled.device).reshape(-1, cfg.num_time_ids).expand(B, -1)
        emb = timestep_embedding(time_ids.reshape(-1), cfg.time_id_dim)  # (B * 6, time_id_dim)
        emb = rearrange(emb, "(b n) d -> b (n d)", b=B)  # (B, 6 * time_id_dim)
        return self.add_embedding(torch.cat([pooled, emb.to(pooled.dtype)], dim=-1))  # (B, temb_dim)


TOKENS = 77  # CLIP's context length L; SDXL's packed conditioning has one row more

# SDXL's conditioning as one tensor. The method treats c as a single tensor: it adds delta_c to it, stacks
# [c_neg; c] for classifier-free guidance, averages sentences' embeddings. SDXL conditions on three things
# (c, the pooled embedding, the size/crop numbers), so they travel packed: the L = 77 token rows of c, then one
# row [pooled (pooled_dim) | time_ids (num_time_ids) | zeros] of the same width D = 2048. Each operation of the
# method then acts on the pooled embedding as on c (delta_c's last row is the sentences' pooled mean
# difference), and the size/crop numbers, equal in every prompt of a run, cancel in delta_c. In bf16 the
# numbers are held to 8 significant bits (1023 reads as 1024): a change well inside what SDXL was trained on.

def pack_conditioning(c: torch.Tensor, pooled: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
    """c (B, L, D), pooled (B, P), time_ids (B, 6) or (6,) -> (B, L + 1, D)."""
    B, _, D = c.shape
    time_ids = time_ids.to(c).reshape(-1, time_ids.shape[-1]).expand(B, -1)
    row = torch.cat([pooled.to(c), time_ids, c.new_zeros(B, D - pooled.shape[-1] - time_ids.shape[-1])], dim=-1)
    return torch.cat([c, row[:, None]], dim=1)


def unpack_conditioning(packed: torch.Tensor, config: UNetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L + 1, D) -> c (B, L, D), pooled (B, pooled_dim), time_ids (B, num_time_ids)."""
    row = packed[:, -1]
    P, n = config.pooled_dim, config.num_time_ids
    return packed[:, :-1], row[:, :P], row[:, P:P + n].float()
