"""Multi-head attention written out, and the store that exposes cross-attention maps for guidance.

Attention (Vaswani et al., arXiv:1706.03762, eq. 1): softmax(Q K^T / sqrt(d)) V with h heads of width d.
pix2pix-zero (arXiv:2302.03027, sec. 3.3) guides editing with the cross-attention probabilities
M = softmax(Q K^T / sqrt(d)) of every cross-attention layer of the UNet, shape (B, h, N, L) for N = H*W
image positions and L = 77 text tokens. Self-attention never builds its N x N matrix (torch's
scaled_dot_product_attention); cross-attention builds M explicitly only while a store is attached.
"""
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """M = softmax(Q K^T / sqrt(d)) for q (B, h, N, d), k (B, h, L, d) -> (B, h, N, L), in at least float32.

    q is scaled before the product and the softmax runs in at least float32, so fp16 scores cannot overflow;
    M stays at that precision (the maps, and the attention loss on them, are float32 in a bf16/fp16 run).
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    return scores.softmax(dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))


class Attention(nn.Module):
    """h-head attention of x (B, N, query_dim) over context (B, L, context_dim); self-attention if no context.

    While `store` is a dict (see `record_cross_attention`), the probabilities are computed explicitly,
    kept differentiable and written to store[store_name]. While `explicit` is set (see
    `explicit_cross_attention`) they are computed the same way but not kept. Otherwise the fused kernel runs.
    """

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, head_dim: int, bias: bool = False):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.is_cross = context_dim is not None
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])
        self.store: dict[str, torch.Tensor] | None = None
        self.store_name = ""
        self.explicit = False

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads)
                   for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        if self.store is not None or self.explicit:
            M = attention_probs(q, k)  # (B, h, N, L)
            if self.store is not None:
                self.store[self.store_name] = M
            out = M.to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](rearrange(out, "b h n d -> b n (h d)"))


def cross_attention_layers(model: nn.Module) -> list[tuple[str, Attention]]:
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, Attention) and m.is_cross]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no cross-attention layers")
    return layers


@contextmanager
def explicit_cross_attention(model: nn.Module) -> Iterator[None]:
    """Run every cross-attention layer of `model` through the explicit softmax (`attention_probs`) instead of
    the fused kernel, without keeping the maps; restored on exit.

    The two paths agree to float rounding only. A prediction that must equal one made while recording (the
    edit trajectory's, against the reference's) runs under this switch.
    """
    layers = cross_attention_layers(model)
    for _, layer in layers:
        layer.explicit = True
    try:
        yield
    finally:
        for _, layer in layers:
            layer.explicit = False


@contextmanager
def record_cross_attention(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Attach one store to every cross-attention layer of `model`; always detach it on exit.

    Yields a dict that each forward pass fills, layer name -> M (B, h, N, L), in the order the model calls
    the layers (a later forward overwrites the entries of the earlier one). Names are module paths, e.g.
    'down_blocks.0.attentions.0.transformer_blocks.0.attn2'. Gradients flow through the stored maps.
    """
    maps: dict[str, torch.Tensor] = {}
    layers = cross_attention_layers(model)
    for name, layer in layers:
        layer.store, layer.store_name = maps, name
    try:
        yield maps
    finally:
        for _, layer in layers:
            layer.store = None
