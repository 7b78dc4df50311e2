"""Heat maps of a word's cross-attention (pix2pix_zero.tools.heatmap): token positions, and a known map
through `WordAttention` to a known image."""
import numpy as np
import torch

from pix2pix_zero.loading.clip_text import load_tokenizer
from pix2pix_zero.tools.heatmap import WordAttention, word_token_indices


def test_word_token_indices_finds_the_word_after_the_start_token():
    tokenizer = load_tokenizer()
    assert word_token_indices(tokenizer, "a photo of a cat", "cat") == [5]  # <start> a photo of a cat
    assert word_token_indices(tokenizer, "a photo of a cat", "dog") == []


def test_a_known_map_gives_a_known_image():
    """2 x 2 latent, token 3. Layer a: head 0 attends to position 0 with 1, head 1 to position 3 with 0.5 (mean
    over heads: [0.5, 0, 0, 0.25]); layer b: both heads 0.25 at position 3. Sum over layers [0.5, 0, 0, 0.5],
    normalised [1, 0, 0, 1]. On a mid-grey image (0.5) darkened to 0.2, hot pixels get + 0.6 (1, 1^2, 0):
    (0.8, 0.8, 0.2) -> (204, 204, 51); cold ones stay (0.2, 0.2, 0.2) -> 51."""
    a, b = torch.zeros(1, 2, 4, 77), torch.zeros(1, 2, 4, 77)
    a[0, 0, 0, 3], a[0, 1, 3, 3] = 1.0, 0.5
    b[0, :, 3, 3] = 0.25
    heat = WordAttention([3], (2, 2))
    heat(1, {"a": a, "b": b})
    torch.testing.assert_close(heat.total, torch.tensor([[0.5, 0.0], [0.0, 0.5]]))
    image = np.asarray(heat.overlay(torch.zeros(1, 3, 2, 2)))  # grey in [-1, 1]
    hot, cold = [204, 204, 51], [51, 51, 51]
    assert image.tolist() == [[hot, cold], [cold, hot]]
