"""tools/evaluation/structure.py: DINO's last-layer keys against an independent ViT forward written here from the
same state dict, the resize rule, the two preprocessing modes, and the distance's properties."""
import math

import pytest
import torch
import torch.nn.functional as F

from pix2pix_zero.tools.evaluation.structure import (Dino, last_layer_keys, preprocess, resized_hw, self_similarity,
                                                     structure_distance)


def keys_by_hand(state: dict, config, pixels: torch.Tensor) -> torch.Tensor:
    """ViT (Dosovitskiy et al. 2021) pre-norm blocks up to the last layer's input, then its LN and key projection."""
    w = lambda name: state[name].double()  # noqa: E731
    eps, L = config.layer_norm_eps, config.num_hidden_layers
    x = F.conv2d(pixels.double(), w("embeddings.patch_embeddings.projection.weight"),
                 w("embeddings.patch_embeddings.projection.bias"), stride=config.patch_size)  # (1, D, h, w)
    x = x.flatten(2).transpose(1, 2)  # (1, N, D)
    x = torch.cat([w("embeddings.cls_token"), x], dim=1) + w("embeddings.position_embeddings")
    heads, D = config.num_attention_heads, config.hidden_size
    for i in range(L):
        p = f"layers.{i}."
        h = F.layer_norm(x, (D,), w(p + "layernorm_before.weight"), w(p + "layernorm_before.bias"), eps)
        k = h @ w(p + "attention.k_proj.weight").T + w(p + "attention.k_proj.bias")
        if i == L - 1:
            return k
        q = h @ w(p + "attention.q_proj.weight").T + w(p + "attention.q_proj.bias")
        v = h @ w(p + "attention.v_proj.weight").T + w(p + "attention.v_proj.bias")
        split = lambda t: t.reshape(1, -1, heads, D // heads).transpose(1, 2)  # noqa: E731
        a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(D // heads), dim=-1) @ split(v)
        a = a.transpose(1, 2).reshape(1, -1, D)
        x = x + a @ w(p + "attention.o_proj.weight").T + w(p + "attention.o_proj.bias")
        h = F.layer_norm(x, (D,), w(p + "layernorm_after.weight"), w(p + "layernorm_after.bias"), eps)
        h = F.gelu(h @ w(p + "mlp.fc1.weight").T + w(p + "mlp.fc1.bias"))
        x = x + h @ w(p + "mlp.fc2.weight").T + w(p + "mlp.fc2.bias")


def test_hooked_keys_match_an_independent_vit_forward(tiny_dino):
    dino = Dino(tiny_dino)
    pixels = preprocess(torch.rand(3, 300, 300, generator=torch.Generator().manual_seed(0)))
    assert pixels.shape == (1, 3, 224, 224)
    keys = last_layer_keys(dino.model, pixels)
    assert keys.shape == (1, 1 + 28 * 28, 32)  # CLS and every patch
    expected = keys_by_hand(dino.model.state_dict(), dino.model.config, pixels)
    torch.testing.assert_close(keys.double(), expected, atol=1e-4, rtol=1e-4)


def test_resize_rule_as_torchvision_resize_224_max_480():
    assert resized_hw(512, 512) == (224, 224)
    assert resized_hw(512, 768) == (224, 336)
    assert resized_hw(768, 512) == (336, 224)
    assert resized_hw(300, 1000) == (int(480 * 224 / 746), 480)  # the longer side would pass 480


def test_pie_mode_is_splice_mode_on_0_255_values():
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(preprocess(x, "pie"), preprocess(x * 255, "splice"))
    with pytest.raises(ValueError, match="structure mode"):
        preprocess(x, "other")


def test_self_similarity_is_cosine():
    k = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    S = self_similarity(k)
    assert S[0, 1] == pytest.approx(2 ** -0.5) and S[0, 0] == pytest.approx(1.0) and S[2, 2] == 0.0


@pytest.mark.slow
def test_distance_zero_for_identical_and_larger_for_shuffled_than_noised(tiny_dino):
    dino = Dino(tiny_dino)
    g = torch.Generator().manual_seed(0)
    # a smooth image with structure: low-frequency noise upsampled
    image = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(96, 96), mode="bicubic")[0].clamp(0, 1)
    noised = (image + 0.02 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    blocks = image.reshape(3, 6, 16, 6, 16).permute(0, 1, 3, 2, 4).reshape(3, 36, 16, 16)
    shuffled = blocks[:, torch.randperm(36, generator=g)].reshape(3, 6, 6, 16, 16).permute(0, 1, 3, 2, 4)
    shuffled = shuffled.reshape(3, 96, 96)
    for mode in ("splice", "pie"):
        assert structure_distance(dino, image, image, mode) == 0.0
        assert structure_distance(dino, image, shuffled, mode) > structure_distance(dino, image, noised, mode) > 0
