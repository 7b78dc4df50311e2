"""The text side of Stable Diffusion: CLIP's BPE tokenizer and text transformer (Radford et al., arXiv:2103.00020)
from transformers, built offline from the vocabulary in `clip_bpe/` and from checkpoint tensor shapes.

SD 1.x conditions on the last layer of CLIP ViT-L/14 (Rombach et al., arXiv:2112.10752, sec. 4.3); SD 2.x on the
penultimate layer of OpenCLIP ViT-H/14 (`FrozenOpenCLIPEmbedder(layer="penultimate")` in Stability-AI/stablediffusion).
Prompts become L = 77 token ids: <|startoftext|>, the text, <|endoftext|>, then padding; c has shape (B, L, D).
"""

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BPE_DIR = Path(__file__).parent / "clip_bpe"
L = 77  # CLIP's context length: every prompt is padded or truncated to it
HEAD_DIM = 64  # CLIP text transformers use 64-channel heads: h = D / 64
CHECKPOINT_PREFIX = "text_model."


def load_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """CLIP's tokenizer from the carried vocabulary, no network. SD 1.x pads with <|endoftext|> (49407);
    SD 2.x (OpenCLIP) pads with "!" (id 0)."""
    return CLIPTokenizer.from_pretrained(BPE_DIR, pad_token=pad_token, model_max_length=L)


def clip_text_config(
    D: int, n_layers: int, intermediate: int, vocab: int, positions: int, hidden_act: str
) -> CLIPTextConfig:
    """A CLIP text transformer config in SD's terms (D text width); heads follow from D."""
    if D % HEAD_DIM:
        raise ValueError(f"text width D = {D} is not a multiple of CLIP's {HEAD_DIM}-channel heads")
    return CLIPTextConfig(
        hidden_size=D,
        num_hidden_layers=n_layers,
        num_attention_heads=D // HEAD_DIM,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=positions,
        hidden_act=hidden_act,  # SD 1.x (OpenAI CLIP): quick_gelu; SD 2.x (OpenCLIP): gelu
    )


def tiny_text_config(hidden_act: str = "quick_gelu") -> CLIPTextConfig:
    """A 2-layer, one-head text transformer with CLIP's real vocabulary and context, for tests."""
    return clip_text_config(64, 2, 256, 49408, L, hidden_act)


def text_config(shapes: Mapping[str, tuple[int, ...]], hidden_act: str = "quick_gelu") -> CLIPTextConfig:
    """The CLIPTextConfig that fits a checkpoint, read from its tensor shapes (keys with or without the
    `text_model.` prefix). The activation is not in the shapes, so the caller names it."""
    shapes = {k.removeprefix(CHECKPOINT_PREFIX): tuple(s) for k, s in shapes.items()}
    vocab, D = shapes["embeddings.token_embedding.weight"]
    positions, _ = shapes["embeddings.position_embedding.weight"]
    intermediate, _ = shapes["encoder.layers.0.mlp.fc1.weight"]
    layers = {int(m[1]) for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    if layers != set(range(len(layers))):
        raise ValueError(f"encoder layer indices are not 0..N-1: {sorted(layers)}")
    return clip_text_config(D, len(layers), intermediate, vocab, positions, hidden_act)


def transformer(text_encoder: CLIPTextModel) -> torch.nn.Module:
    """The module holding `embeddings`, `encoder` and `final_layer_norm`: transformers 4 nests it as
    `text_model`; transformers 5 flattened it into CLIPTextModel itself."""
    return getattr(text_encoder, "text_model", text_encoder)


def text_encoder_state_dict(tensors: Mapping[str, Tensor], text_encoder: CLIPTextModel) -> dict[str, Tensor]:
    """Checkpoint tensors (keys `text_model.embeddings...`) renamed to `text_encoder`'s keys, which lack the
    `text_model.` level in transformers 5 (there `from_pretrained` renames them, `load_state_dict` does not).
    Older checkpoints also store `position_ids`, now a non-persistent buffer that `new_text_encoder` makes."""
    prefix = CHECKPOINT_PREFIX if transformer(text_encoder) is not text_encoder else ""
    return {
        prefix + k.removeprefix(CHECKPOINT_PREFIX): t
        for k, t in tensors.items()
        if not k.endswith("embeddings.position_ids")
    }


def new_text_encoder(config: CLIPTextConfig, device: torch.device | str) -> CLIPTextModel:
    """A CLIPTextModel with its parameters on the meta device (no memory, no random init), ready for
    `model.load_state_dict(text_encoder_state_dict(tensors, model), strict=True, assign=True)`."""
    with torch.device("meta"):
        model = CLIPTextModel(config)
    # position_ids is a non-persistent buffer: no checkpoint fills it, so it must be real already.
    positions = torch.arange(config.max_position_embeddings, device=device)
    transformer(model).embeddings.position_ids = positions.expand(1, -1)  # (1, L)
    meta_buffers = [name for name, b in model.named_buffers() if b.is_meta]
    assert not meta_buffers, f"buffers no checkpoint would fill: {meta_buffers}"
    return model.eval()


def encode_text(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str], layer: str = "last"
) -> Tensor:
    """The conditioning c, shape (B, L, D), for each prompt.

    layer="last": the final layer's output after the final layer norm (SD 1.x).
    layer="penultimate": the output of the second-to-last layer, then the final layer norm (SD 2.x on the full
    24-layer OpenCLIP tower). Diffusers-layout SD 2.x text encoders already dropped the last block (23 layers),
    and load_sd drops it from single files too (openclip.py): use "last" for those, as StableDiffusion does.
    """
    ids = tokenizer(prompts, padding="max_length", max_length=L, truncation=True, return_tensors="pt").input_ids
    ids = ids.to(text_encoder.device)  # (B, L)
    # As in SD, no padding mask: padding tokens are ordinary tokens under the causal mask.
    if layer == "last":
        return text_encoder(ids).last_hidden_state
    if layer == "penultimate":
        hidden = text_encoder(ids, output_hidden_states=True).hidden_states  # embeddings, then each layer's output
        return transformer(text_encoder).final_layer_norm(hidden[-2])
    raise ValueError(f"layer must be 'last' or 'penultimate', not {layer!r}")
