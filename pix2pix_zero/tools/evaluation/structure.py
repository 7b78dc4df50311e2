"""Structure distance (Tumanyan et al., "Splicing ViT Features for Semantic Appearance Transfer", CVPR 2022,
arXiv:2201.00424, sec. 3.1), the paper's measure of how much an edit kept the input's structure.

DINO ViT-B/8 (facebook/dino-vitb8 as a transformers ViTModel) reads each image; the keys of its last layer,
K (T, D) for all T tokens including CLS (heads concatenated), give the cosine self-similarity
S = cos(K_i, K_j) (T, T); the distance is mean((S(input) - S(edit))^2). Preprocessing, two modes:
  splice  the original: pixels in [0, 1], shorter side resized to 224 (longer at most 480), ImageNet
          normalisation;
  pie     PIE-Bench's evaluator: the same on 0..255 values, never divided by 255 (NOTE(official): a quirk of
          cure-lab/PnPInversion evaluation/matrics_calculator.py calculate_structure_distance).
Resizing is bilinear with antialiasing (torchvision's Resize on tensors).
"""
import math
import os

import torch
import torch.nn.functional as F

MODES = ("splice", "pie")
MODEL = "facebook/dino-vitb8"
FILES = ["config.json"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SHORT_SIDE, MAX_SIDE = 224, 480


def resized_hw(H: int, W: int, short: int = SHORT_SIDE, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """torchvision Resize(short, max_size=max_side): the shorter side to `short`, unless the longer would pass
    `max_side`, then the longer to `max_side` (integer truncation as torchvision)."""
    small, large = min(H, W), max(H, W)
    new_small, new_large = short, int(short * large / small)
    if new_large > max_side:
        new_small, new_large = int(max_side * new_small / new_large), max_side
    return (new_small, new_large) if H <= W else (new_large, new_small)


def preprocess(image: torch.Tensor, mode: str = "splice") -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (1, 3, h, w), DINO's input in `mode` (module docstring)."""
    if mode not in MODES:
        raise ValueError(f"structure mode must be one of {MODES}, not {mode!r}")
    x = image[None].float() * (255 if mode == "pie" else 1)
    x = F.interpolate(x, size=resized_hw(*x.shape[-2:]), mode="bilinear", align_corners=False, antialias=True)
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (x - mean) / std


def key_projection(model) -> torch.nn.Module:
    """The last layer's key Linear of a transformers ViTModel (its name changed in transformers 5)."""
    if hasattr(model, "layers"):
        return model.layers[-1].attention.k_proj
    return model.encoder.layer[-1].attention.attention.key  # transformers 4


def last_layer_keys(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, T, D): the last layer's keys, all tokens (CLS first), heads concatenated, read by a forward hook on
    the key projection (its output is K = LN_before(h) W_k + b_k)."""
    captured = []
    handle = key_projection(model).register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values, interpolate_pos_encoding=True)
    finally:
        handle.remove()
    return captured[-1]


def self_similarity(keys: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(T, D) -> (T, T) cosine similarity of every pair of tokens (norm products clamped at eps)."""
    norms = keys.norm(dim=-1, keepdim=True)
    return (keys @ keys.T) / (norms @ norms.T).clamp_min(eps)


class Dino:
    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu"):
        from transformers import ViTModel
        try:
            self.model = ViTModel.from_pretrained(str(folder), add_pooling_layer=False).to(device).eval()
        except (OSError, ValueError) as e:
            raise OSError(f"{folder}: not a ViT (DINO) model folder in transformers' layout (config.json and "
                          f"model.safetensors): {e}") from None
        self.device = torch.device(device)

    def similarity(self, image: torch.Tensor, mode: str) -> torch.Tensor:
        keys = last_layer_keys(self.model, preprocess(image, mode).to(self.device))[0].float()
        return self_similarity(keys)


def structure_distance(dino: Dino, a: torch.Tensor, b: torch.Tensor, mode: str = "splice") -> float:
    """mean((S(a) - S(b))^2) of two (3, H, W) images in [0, 1]; 0 for identical images."""
    if a.shape != b.shape:
        raise ValueError(f"images of different sizes: {tuple(a.shape)} and {tuple(b.shape)}")
    d = ((dino.similarity(a, mode) - dino.similarity(b, mode)) ** 2).mean().item()
    return d if math.isfinite(d) else math.nan
