"""The text side of Stable Diffusion: CLIP's text transformer (Radford et al., arXiv:2103.00020) from
transformers, its config in SD's terms, and the conditioning c it computes from a prompt.

SD 1.x conditions on the last layer of CLIP ViT-L/14 (Rombach et al., arXiv:2112.10752, sec. 4.3); SD 2.x on the
penultimate layer of OpenCLIP ViT-H/14 (`FrozenOpenCLIPEmbedder(layer="penultimate")` in Stability-AI/stablediffusion).
Prompts become L = 77 token ids: <|startoftext|>, the text, <|endoftext|>, then padding; c has shape (B, L, D).
"""

import torch
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

L = 77  # CLIP's context length: every prompt is padded or truncated to it
HEAD_DIM = 64  # CLIP text transformers use 64-channel heads: h = D / 64


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


def transformer(text_encoder: CLIPTextModel) -> torch.nn.Module:
    """The module holding `embeddings`, `encoder` and `final_layer_norm`: transformers 4 nests it as
    `text_model`; transformers 5 flattened it into CLIPTextModel itself."""
    return getattr(text_encoder, "text_model", text_encoder)


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
