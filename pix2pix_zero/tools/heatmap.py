"""Heat maps of one word's cross-attention over the image, summed over layers, heads and denoising steps.

Used by `train_free_edit.py --save-attention` to show where the reference trajectory attends to the source
word (the maps M_t^ref of arXiv:2302.03027, sec. 3.3). Every layer's (H_l * W_l) map is resized to the
image's size before summing, so coarse and fine layers count alike. Two pictures of it: `overlay` (for
people) and `grayscale` (the normalised map itself, 0..255, what evaluation/masks.py thresholds).
"""
import torch
import torch.nn.functional as F
from PIL import Image

from .image import tensor_to_pil


def word_token_indices(tokenizer, caption: str, word: str) -> list[int]:
    """Positions (in the 77 caption tokens) of the tokens of `word`; [] if the word is not in the caption."""
    ids = tokenizer(caption, truncation=True, max_length=77).input_ids
    word_ids = tokenizer(word, add_special_tokens=False).input_ids
    for i in range(len(ids) - len(word_ids) + 1):
        if word_ids and ids[i:i + len(word_ids)] == word_ids:
            return list(range(i, i + len(word_ids)))
    return []


class WordAttention:
    """Accumulates the attention to `token_indices` of the last batch row; call it with each step's maps."""

    def __init__(self, token_indices: list[int], latent_hw: tuple[int, int]):
        self.tokens, (self.H, self.W) = token_indices, latent_hw
        self.total: torch.Tensor | None = None

    def __call__(self, t: int, maps: dict[str, torch.Tensor]) -> None:
        for M in maps.values():  # (B, heads, N, L)
            N = M.shape[2]
            scale = (self.H * self.W / N) ** 0.5
            a = M[-1, :, :, self.tokens].float().mean(0).sum(-1)  # (N,)
            a = a.reshape(1, 1, round(self.H / scale), round(self.W / scale))
            a = F.interpolate(a, size=(self.H, self.W), mode="bilinear", align_corners=False)[0, 0]
            self.total = a if self.total is None else self.total + a

    def normalised(self, hw: tuple[int, int]) -> torch.Tensor:
        """(1, H, W) on the CPU: the summed map min-max scaled to [0, 1], resized (bilinear) to the image's (H, W)."""
        heat = self.total - self.total.min()
        heat = heat / heat.max().clamp_min(1e-12)
        return F.interpolate(heat[None, None].float().cpu(), size=hw, mode="bilinear", align_corners=False)[0]

    def grayscale(self, hw: tuple[int, int]) -> Image.Image:
        """The normalised map as an 8-bit grayscale image of the image's (H, W): 0 its minimum, 255 its peak."""
        heat = (self.normalised(hw)[0].clamp(0, 1) * 255).round().to(torch.uint8)
        return Image.fromarray(heat.numpy(), "L")

    def overlay(self, image: torch.Tensor) -> Image.Image:
        """The image (1, 3, H, W) in [-1, 1], darkened, with the normalised attention in red and yellow."""
        heat = self.normalised(tuple(image.shape[-2:]))
        base = (image[0].float().cpu() + 1) / 2 * 0.4  # (3, H, W) in [0, 0.4]
        color = torch.cat([heat, heat.pow(2), torch.zeros_like(heat)])  # black -> red -> yellow
        return tensor_to_pil((base + 0.6 * color) * 2 - 1)
