"""Tests for pix2pix_zero.models.text and loading.clip_text: CLIP token ids from the carried vocabulary, padding for SD 1.x / 2.x, configs
read from shapes, meta-device construction + assign-loading, and the "last" / "penultimate" layers checked
against a CLIP text transformer written out in this file."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from transformers import CLIPTextModel

from pix2pix_zero.loading.clip_text import (load_tokenizer, new_text_encoder, text_config, text_encoder_state_dict,
                                            tiny_text_config)
from pix2pix_zero.models.text import L, clip_text_config, encode_text, transformer

BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def random_text_encoder(config, seed=0):
    """A CLIPTextModel whose every weight (layer norms included) is random, in eval mode."""
    g = torch.Generator().manual_seed(seed)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(centre + 0.1 * torch.randn(p.shape, generator=g))
    return model


def plain_state_dict(model):
    """Keys without the `text_model.` level, which only transformers 4 has."""
    return {k.removeprefix("text_model."): v.detach().clone() for k, v in model.state_dict().items()}


def checkpoint_tensors(model):
    """The model's weights as an SD checkpoint names them (`text_model.` prefix, stored position_ids)."""
    tensors = {f"text_model.{k}": v for k, v in plain_state_dict(model).items()}
    tensors["text_model.embeddings.position_ids"] = torch.arange(L)[None]
    return tensors


# --- tokenizer ---------------------------------------------------------------------------------------------------


def test_known_clip_ids(tokenizer):
    # Reference ids of HF's CLIPTokenizer for openai/clip-vit-large-patch14 (SD 1.x's tokenizer).
    assert tokenizer("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]
    astronaut = [BOS, 320, 8853, 539, 550, 18376, 6765, 320, 4558, EOS]
    assert tokenizer("A photograph of an astronaut riding a horse").input_ids == astronaut


def test_vocab_layout_is_clips(tokenizer):
    # byte symbols, byte symbols + </w>, merges in rank order (merges.txt starts with "i n"), specials.
    assert len(tokenizer) == 49408
    tokens = tokenizer.convert_ids_to_tokens([0, 255, 256, 511, 512, BOS, EOS])
    assert tokens == ["!", "Ń", "!</w>", "Ń</w>", "in", "<|startoftext|>", "<|endoftext|>"]


@pytest.mark.parametrize(
    "text",
    [
        "A Photo Of A CAT",
        "a watercolor painting of a dog, trending on artstation!",
        "Hello, World! It's a naïve café... (zero-shot) — 東京 🐱",
        "antidisestablishmentarianism supercalifragilisticexpialidocious",
    ],
)
def test_decode_inverts_encode_up_to_case_and_word_breaks(tokenizer, text):
    # CLIP lowercases, and its decoder writes a space after every word-final token (`</w>`), also before
    # punctuation; the characters themselves survive.
    decoded = tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True)
    assert decoded.replace(" ", "") == text.lower().replace(" ", "")
    if text.replace(" ", "").isalpha():
        assert decoded == text.lower()


def test_word_pieces_join_to_the_word(tokenizer):
    word = "antidisestablishmentarianism"
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(word, add_special_tokens=False).input_ids)
    assert len(pieces) > 1 and "".join(pieces) == word + "</w>"


def test_digits_are_single_tokens(tokenizer):
    # CLIP's pre-tokenizer splits every digit (\p{N}) off on its own.
    assert tokenizer.convert_ids_to_tokens(tokenizer("2024", add_special_tokens=False).input_ids) == [
        "2</w>", "0</w>", "2</w>", "4</w>"
    ]  # fmt: skip


def test_padding_sd1_with_endoftext_sd2_with_exclamation(tokenizer):
    sd1 = tokenizer("a photo of a cat", padding="max_length", max_length=L).input_ids
    sd2 = load_tokenizer(pad_token="!")("a photo of a cat", padding="max_length", max_length=L).input_ids
    head = [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert sd1 == head + [EOS] * (L - 7)
    assert sd2 == head + [0] * (L - 7)
    assert tokenizer.model_max_length == L


def test_long_prompts_keep_bos_and_eos(tokenizer):
    ids = tokenizer(" ".join(["cat"] * 100), padding="max_length", max_length=L, truncation=True).input_ids
    assert ids == [BOS] + [2368] * (L - 2) + [EOS]


# --- configs and loading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["text_model.", ""])
def test_text_config_reads_shapes(prefix):
    tiny = tiny_text_config()
    shapes = {f"{prefix}{k}": tuple(v.shape) for k, v in plain_state_dict(CLIPTextModel(tiny)).items()}
    got = text_config(shapes, hidden_act="gelu")
    for field in ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"]:
        assert getattr(got, field) == getattr(tiny, field), field
    assert got.max_position_embeddings == L and got.hidden_act == "gelu"
    # SD 1.x's ViT-L/14 text tower: D = 768 -> 12 heads.
    sd1 = {"embeddings.token_embedding.weight": (49408, 768), "embeddings.position_embedding.weight": (77, 768)}
    sd1 |= {f"encoder.layers.{i}.mlp.fc1.weight": (3072, 768) for i in range(12)}
    assert (text_config(sd1).num_attention_heads, text_config(sd1).num_hidden_layers) == (12, 12)


def test_text_config_rejects_width_without_64_channel_heads():
    with pytest.raises(ValueError, match="64"):
        clip_text_config(96, 1, 256, 49408, L, "quick_gelu")


def test_new_text_encoder_is_empty_until_assigned():
    model = new_text_encoder(tiny_text_config(), "cpu")
    assert all(p.is_meta for p in model.parameters())
    assert torch.equal(transformer(model).embeddings.position_ids, torch.arange(L)[None])
    tensors = text_encoder_state_dict(checkpoint_tensors(random_text_encoder(model.config)), model)
    result = model.load_state_dict(tensors, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not any(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("layer", ["last", "penultimate"])
def test_assign_loaded_encoder_equals_normally_built_one(tokenizer, layer):
    reference = random_text_encoder(tiny_text_config())
    model = new_text_encoder(reference.config, "cpu")
    model.load_state_dict(text_encoder_state_dict(checkpoint_tensors(reference), model), strict=True, assign=True)
    prompts = ["a photo of a cat", "a watercolor painting of a dog"]
    c = encode_text(tokenizer, model, prompts, layer)
    assert c.shape == (2, L, 64)
    assert torch.equal(c, encode_text(tokenizer, reference, prompts, layer))


def test_sdpa_and_eager_attention_agree(tokenizer):
    sdpa = random_text_encoder(tiny_text_config())
    eager = random_text_encoder(tiny_text_config())  # its own config: models share the config object they get
    eager.set_attn_implementation("eager")
    assert sdpa.config._attn_implementation == "sdpa"  # transformers 5's default on CPU
    c_sdpa = encode_text(tokenizer, sdpa, ["a photo of a cat"])
    torch.testing.assert_close(c_sdpa, encode_text(tokenizer, eager, ["a photo of a cat"]), rtol=1e-5, atol=1e-5)


# --- the layers SD conditions on ---------------------------------------------------------------------------------


def clip_hidden_states(w, ids, n_layers, h, act):
    """CLIP's text transformer written out: pre-LN blocks, causal self-attention, MLP. Returns the input to the
    final layer norm after each of the first n_layers blocks."""

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)

    def linear(x, name):
        return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

    x = w["embeddings.token_embedding.weight"][ids] + w["embeddings.position_embedding.weight"][: ids.shape[1]]
    future = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).triu(1)
    for i in range(n_layers):
        p = f"encoder.layers.{i}"
        y = ln(x, f"{p}.layer_norm1")
        q, k, v = (rearrange(linear(y, f"{p}.self_attn.{n}_proj"), "b n (h d) -> b h n d", h=h) for n in "qkv")
        scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(future, -math.inf)
        a = rearrange(scores.softmax(-1) @ v, "b h n d -> b n (h d)")
        x = x + linear(a, f"{p}.self_attn.out_proj")
        y = linear(ln(x, f"{p}.layer_norm2"), f"{p}.mlp.fc1")
        x = x + linear(act(y), f"{p}.mlp.fc2")
    return ln(x, "final_layer_norm")


ACTS = {"quick_gelu": lambda y: y * torch.sigmoid(1.702 * y), "gelu": F.gelu}


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_last_and_penultimate_layers_match_clip_written_out(tokenizer, hidden_act):
    config = clip_text_config(128, 3, 256, 49408, L, hidden_act)  # 2 heads, so head splitting is exercised
    model = random_text_encoder(config)
    prompts = ["a photo of a cat", "a sketch of a horse"]
    ids = tokenizer(prompts, padding="max_length", max_length=L, return_tensors="pt").input_ids
    w = plain_state_dict(model)
    with torch.no_grad():
        last = encode_text(tokenizer, model, prompts, "last")
        penultimate = encode_text(tokenizer, model, prompts, "penultimate")
    act = ACTS[hidden_act]
    torch.testing.assert_close(last, clip_hidden_states(w, ids, 3, 2, act), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(penultimate, clip_hidden_states(w, ids, 2, 2, act), rtol=1e-5, atol=1e-5)
    assert (last - penultimate).abs().max() > 0.1


def test_encode_text_keeps_gradients_and_rejects_unknown_layers(tokenizer):
    model = random_text_encoder(tiny_text_config())
    assert encode_text(tokenizer, model, ["a cat"]).requires_grad  # callers choose no_grad, not encode_text
    with pytest.raises(ValueError, match="penultimate"):
        encode_text(tokenizer, model, ["a cat"], layer="first")
