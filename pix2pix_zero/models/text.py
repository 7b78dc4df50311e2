"""The text side of Stable Diffusion: CLIP's text transformer (Radford et al., arXiv:2103.00020) from
transformers, its config in SD's terms, and the conditioning c it computes from a prompt.

SD 1.x conditions on the last layer of CLIP ViT-L/14 (Rombach et al., arXiv:2112.10752, sec. 4.3); SD 2.x on the
penultimate layer of OpenCLIP ViT-H/14 (`FrozenOpenCLIPEmbedder(layer="penultimate")` in Stability-AI/stablediffusion);
SDXL (Podell et al., arXiv:2307.01952, sec. 2.1) on the penultimate layers of CLIP ViT-L/14 and OpenCLIP ViT-bigG/14
side by side, plus bigG's pooled embedding (`encode_text_sdxl`).
Prompts become L = 77 token ids: <|startoftext|>, the text, <|endoftext|>, then padding; c has shape (B, L, D).
"""

import torch
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

L = 77  # CLIP's context length: every prompt is padded or truncated to it
HEAD_DIM = 64  # CLIP text transformers use 64-channel heads: h = D / 64


def clip_text_config(
    D: int, n_layers: int, intermediate: int, vocab: int, positions: int, hidden_act: str,
    projection_dim: int | None = None,
) -> CLIPTextConfig:
    """A CLIP text transformer config in SD's terms (D text width); heads follow from D. projection_dim: the
    width of the pooled, projected embedding (SDXL's bigG: 1280), for CLIPTextModelWithProjection."""
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
        **({"projection_dim": projection_dim} if projection_dim else {}),
    )


def transformer(text_encoder: CLIPTextModel) -> torch.nn.Module:
    """The module holding `embeddings`, `encoder` and `final_layer_norm`: transformers 4 nests it as
    `text_model`; transformers 5 flattened it into CLIPTextModel itself."""
    return getattr(text_encoder, "text_model", text_encoder)


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str], device) -> Tensor:
    """Token ids (B, L) on `device`: each prompt padded (with the tokenizer's pad token) or truncated to L."""
    ids = tokenizer(prompts, padding="max_length", max_length=L, truncation=True, return_tensors="pt").input_ids
    # As in SD, no padding mask: padding tokens are ordinary tokens under the causal mask.
    return ids.to(device)


def encode_text(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str], layer: str = "last"
) -> Tensor:
    """The conditioning c, shape (B, L, D), for each prompt.

    layer="last": the final layer's output after the final layer norm (SD 1.x).
    layer="penultimate": the output of the second-to-last layer, then the final layer norm (SD 2.x on the full
    24-layer OpenCLIP tower). Diffusers-layout SD 2.x text encoders already dropped the last block (23 layers),
    and load_sd drops it from single files too (openclip.py): use "last" for those, as StableDiffusion does.
    """
    ids = tokenize(tokenizer, prompts, text_encoder.device)
    if layer == "last":
        return text_encoder(ids).last_hidden_state
    if layer == "penultimate":
        hidden = text_encoder(ids, output_hidden_states=True).hidden_states  # embeddings, then each layer's output
        return transformer(text_encoder).final_layer_norm(hidden[-2])
    raise ValueError(f"layer must be 'last' or 'penultimate', not {layer!r}")


def encode_text_sdxl(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, tokenizer_2: CLIPTokenizer,
    text_encoder_2: CLIPTextModelWithProjection, prompts: list[str]
) -> tuple[Tensor, Tensor]:
    """SDXL's conditioning for each prompt: c (B, L, D1 + D2) and pooled (B, P).

    c: the output of the penultimate layer of each encoder, with NO final layer norm (SD 2.x applies one),
    side by side: CLIP ViT-L/14 (D1 = 768; sgm's FrozenCLIPEmbedder(layer="hidden", layer_idx=11) returns
    hidden_states[11] of 13) then OpenCLIP ViT-bigG/14 (D2 = 1280; FrozenOpenCLIPEmbedder2(layer="penultimate",
    legacy=False) returns the input of its last block). pooled: bigG's full last layer and final layer norm at
    the <|endoftext|> token, times text_projection (FrozenOpenCLIPEmbedder2.pool: the row of the largest token
    id, i.e. the first <|endoftext|>, as CLIPTextModelWithProjection's text_embeds takes it). diffusers'
    StableDiffusionXLPipeline.encode_prompt reads the same: hidden_states[-2] of both, text_embeds.
    """
    # NOTE(official): CLIP ViT-L's last layer and final layer norm run although SDXL never reads them.
    c_1 = text_encoder(tokenize(tokenizer, prompts, text_encoder.device), output_hidden_states=True).hidden_states[-2]
    out_2 = text_encoder_2(tokenize(tokenizer_2, prompts, text_encoder_2.device), output_hidden_states=True)
    c = torch.cat([c_1, out_2.hidden_states[-2].to(c_1.device)], dim=-1)  # (B, L, D1 + D2)
    return c, out_2.text_embeds.to(c_1.device)
