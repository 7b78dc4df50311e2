"""CLIP's text encoder and tokenizer from a checkpoint: the tokenizer from the vocabulary carried in `clip_bpe/`
(no network), the config from tensor shapes, and checkpoint keys renamed to transformers' `CLIPTextModel`.
"""
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ..models.text import L, clip_text_config, transformer

BPE_DIR = Path(__file__).parent / "clip_bpe"
CHECKPOINT_PREFIX = "text_model."


def load_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """CLIP's tokenizer from the carried vocabulary, no network. SD 1.x and SDXL's CLIP ViT-L pad with
    <|endoftext|> (49407); SD 2.x and SDXL's ViT-bigG (OpenCLIP) pad with "!" (id 0)."""
    return CLIPTokenizer.from_pretrained(BPE_DIR, pad_token=pad_token, model_max_length=L)


def tiny_text_config(hidden_act: str = "quick_gelu") -> CLIPTextConfig:
    """A 2-layer, one-head text transformer with CLIP's real vocabulary and context, for tests."""
    return clip_text_config(64, 2, 256, 49408, L, hidden_act)


def text_config(shapes: Mapping[str, tuple[int, ...]], hidden_act: str = "quick_gelu") -> CLIPTextConfig:
    """The CLIPTextConfig that fits a checkpoint, read from its tensor shapes (keys with or without the
    `text_model.` prefix; a `text_projection.weight` sets projection_dim). The activation is not in the shapes,
    so the caller names it."""
    shapes = {k.removeprefix(CHECKPOINT_PREFIX): tuple(s) for k, s in shapes.items()}
    projection_dim = shapes["text_projection.weight"][0] if "text_projection.weight" in shapes else None
    vocab, D = shapes["embeddings.token_embedding.weight"]
    positions, _ = shapes["embeddings.position_embedding.weight"]
    intermediate, _ = shapes["encoder.layers.0.mlp.fc1.weight"]
    layers = {int(m[1]) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    if layers != set(range(len(layers))):
        raise ValueError(f"encoder layer indices are not 0..N-1: {sorted(layers)}")
    return clip_text_config(D, len(layers), intermediate, vocab, positions, hidden_act, projection_dim)


def text_encoder_state_dict(tensors: Mapping[str, Tensor], text_encoder: CLIPTextModel) -> dict[str, Tensor]:
    """Checkpoint tensors (keys `text_model.embeddings...`) renamed to `text_encoder`'s keys, which lack the
    `text_model.` level in transformers 5 (there `from_pretrained` renames them, `load_state_dict` does not).
    Older checkpoints also store `position_ids`, now a non-persistent buffer that `new_text_encoder` makes.
    Keys outside `text_model.` (CLIPTextModelWithProjection's `text_projection.weight`) keep their names."""
    prefix = CHECKPOINT_PREFIX if transformer(text_encoder) is not text_encoder else ""
    return {
        prefix + k.removeprefix(CHECKPOINT_PREFIX) if k.startswith(CHECKPOINT_PREFIX) else k: t
        for k, t in tensors.items()
        if not k.endswith("embeddings.position_ids")
    }


def new_text_encoder(config: CLIPTextConfig, device: torch.device | str,
                     projection: bool = False) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A CLIPTextModel (with projection: CLIPTextModelWithProjection, SDXL's second encoder) with its parameters
    on the meta device (no memory, no random init), ready for
    `model.load_state_dict(text_encoder_state_dict(tensors, model), strict=True, assign=True)`."""
    with torch.device("meta"):
        model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    # position_ids is a non-persistent buffer: no checkpoint fills it, so it must be real already.
    positions = torch.arange(config.max_position_embeddings, device=device)
    transformer(model).embeddings.position_ids = positions.expand(1, -1)  # (1, L)
    meta_buffers = [name for name, b in model.named_buffers() if b.is_meta]
    assert not meta_buffers, f"buffers no checkpoint would fill: {meta_buffers}"
    return model.eval()
