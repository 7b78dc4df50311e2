"""Tests for pix2pix_zero.models.attention: the recorded cross-attention maps are distributions of the right shape,
recording does not change the UNet's output, gradients reach the latents through the maps (checked against
finite differences) but never the frozen weights, and the store is always detached."""
import copy

import pytest
import torch

from pix2pix_zero.models.attention import Attention, record_cross_attention

T = torch.tensor([10, 900])


def inputs(seed=0, B=2, H=16, W=24, D=64, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 4, H, W, generator=g, dtype=dtype), torch.randn(B, 77, D, generator=g, dtype=dtype)


def resolution_level(name: str) -> int:
    """0 for the full latent resolution, 3 for the lowest (the tiny UNet has 4 levels)."""
    part, index = name.split(".")[:2]
    if part == "mid_block":
        return 3
    return int(index) if part == "down_blocks" else 3 - int(index)


def test_maps_are_distributions_over_the_77_tokens(sd):
    x_t, c = inputs()
    with torch.no_grad(), record_cross_attention(sd.unet) as maps:
        sd.unet(x_t, T, c)
    assert len(maps) == 16 and all(name.endswith(".attn2") for name in maps)  # cross-attention only
    for name, M in maps.items():
        level = resolution_level(name)
        assert M.shape == (2, 8, (16 >> level) * (24 >> level), 77), name  # (B, h, N, L)
        assert (M >= 0).all(), name
        assert (M.sum(-1) - 1).abs().max() <= 1e-5, name
    assert {resolution_level(name) for name in maps} == {0, 1, 2, 3}


def test_recording_path_gives_the_fused_path_output(sd):
    x_t, c = inputs(seed=1)
    with torch.no_grad():
        fused = sd.unet(x_t, T, c)
        with record_cross_attention(sd.unet):
            explicit = sd.unet(x_t, T, c)
    assert (fused - explicit).abs().max() <= 1e-5


def test_weights_are_frozen_after_load(sd):
    assert not any(p.requires_grad for p in sd.unet.parameters())
    assert not any(p.requires_grad for p in sd.vae.parameters())
    assert not any(p.requires_grad for p in sd.text_encoder.parameters())


def token_attention_loss(maps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Attention paid to the first word token, summed over layers. (The sum of whole maps would be a constant:
    every row sums to 1, so its gradient is zero.)"""
    return sum(M[..., 1].sum() for M in maps.values())


def test_gradients_flow_from_maps_to_latents_not_to_weights(sd):
    x_t, c = inputs(seed=2)
    x_t.requires_grad_(True)
    with record_cross_attention(sd.unet) as maps:
        sd.unet(x_t, T, c)
    token_attention_loss(maps).backward()
    assert torch.isfinite(x_t.grad).all() and x_t.grad.abs().max() > 1e-3
    assert all(p.grad is None for p in sd.unet.parameters())


def test_map_gradient_matches_finite_differences(sd):
    """d loss / d x_t along a random direction, in float64: autograd vs a central difference."""
    unet = copy.deepcopy(sd.unet).double()
    x_t, c = inputs(seed=3, B=1, H=8, W=8, dtype=torch.float64)
    direction = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def loss(x):
        with record_cross_attention(unet) as maps:
            unet(x, 500, c)
        return token_attention_loss(maps)

    x = x_t.clone().requires_grad_(True)
    loss(x).backward()
    analytic = (x.grad * direction).sum()
    h = 1e-5  # truncation error ~1e-8 here, round-off ~1e-9
    with torch.no_grad():
        numeric = (loss(x_t + h * direction) - loss(x_t - h * direction)) / (2 * h)
    assert abs(analytic.item()) > 1e-3
    assert abs(analytic.item() - numeric.item()) <= 1e-6 * max(1.0, abs(numeric.item()))


def stores(model):
    return [m.store for m in model.modules() if isinstance(m, Attention)]


def test_store_is_attached_to_cross_attention_only_and_detached_on_exit(sd):
    x_t, c = inputs(seed=5)
    with record_cross_attention(sd.unet) as maps:
        attached = [(name, m.store is maps) for name, m in sd.unet.named_modules() if isinstance(m, Attention)]
    assert all(is_attached == name.endswith("attn2") for name, is_attached in attached)
    assert all(store is None for store in stores(sd.unet))
    with torch.no_grad():
        sd.unet(x_t, T, c)
    assert maps == {}  # a forward pass after the context records nothing


def test_store_is_detached_when_the_body_raises(sd):
    with pytest.raises(RuntimeError, match="inside the context"):
        with record_cross_attention(sd.unet):
            assert all(store is not None for store in stores(sd.unet)[1::2])  # attn2 layers (attn1, attn2, ...)
            raise RuntimeError("inside the context")
    assert all(store is None for store in stores(sd.unet))


def test_recording_a_model_without_cross_attention_is_an_error(sd):
    with pytest.raises(ValueError, match="no cross-attention"):
        with record_cross_attention(sd.vae):
            pass


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_maps_stay_float32_in_a_low_precision_layer_and_match_fp32(dtype):
    """In bf16/fp16 the probabilities M (what guidance compares) are float32, the layer's output is in the
    layer's dtype, and M is the fp32 layer's M up to the rounding of q and k (bf16: 8 bits of mantissa)."""
    torch.manual_seed(0)
    layer = Attention(query_dim=16, context_dim=8, heads=2, head_dim=8)
    x, context = torch.randn(1, 6, 16), torch.randn(1, 5, 8)
    maps, maps_low = {}, {}
    layer.store, layer.store_name = maps, "a"
    layer(x, context)
    layer.store = None
    low = copy.deepcopy(layer).to(dtype)
    low.store, low.store_name = maps_low, "a"
    out = low(x.to(dtype), context.to(dtype))
    assert maps_low["a"].dtype == torch.float32 and out.dtype == dtype
    torch.testing.assert_close(maps_low["a"], maps["a"], atol=2e-2, rtol=0)
    assert (maps_low["a"].sum(-1) - 1).abs().max() < 1e-6  # a float32 softmax: rows sum to 1 at fp32 precision
