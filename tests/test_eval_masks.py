"""tools/evaluation/masks.py: PIE-Bench's RLE decoder with its border rule on a hand-written mask, mask images
fitted to the edit's geometry, and the attention-map threshold rule (with heatmap.py's grayscale map)."""
import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_zero.tools.evaluation.masks import ATTENTION_THRESHOLD, attention_mask, decode_rle, fit_mask, read_mask
from pix2pix_zero.tools.heatmap import WordAttention
from pix2pix_zero.tools.image import plan_geometry


def test_rle_decoder_on_a_hand_written_mask_with_the_border_rule():
    # 5 x 6 image, row-major: pixels 8..10 (row 1, cols 2-4) and 14..15 (row 2, cols 2-3); a run past the end is cut
    m = decode_rle([8, 3, 14, 2, 28, 10], (5, 6))
    expected = np.array([[1, 1, 1, 1, 1, 1],
                         [1, 0, 1, 1, 1, 1],
                         [1, 0, 1, 1, 0, 1],
                         [1, 0, 0, 0, 0, 1],
                         [1, 1, 1, 1, 1, 1]], dtype=bool)
    assert m.dtype == torch.bool and np.array_equal(m.numpy(), expected)


def test_rle_without_runs_is_the_border_only_and_bad_rle_is_refused():
    m = decode_rle([], (4, 4))
    assert m.sum() == 12 and not m[1:3, 1:3].any()
    with pytest.raises(ValueError, match="item 7"):
        decode_rle([1, 2, 3], (4, 4), "item 7")
    with pytest.raises(ValueError, match="non-negative"):
        decode_rle([1, -2], (4, 4))


def test_mask_image_white_is_edited_and_is_fitted_to_the_edit(tmp_path):
    # a 96 x 64 (W x H) input edited at size 64: resized to 96 x 64, width cropped to 64 (16 px each side)
    g = plan_geometry(96, 64, 64)
    assert g.crop == (16, 0, 80, 64)
    mask = np.zeros((64, 96), np.uint8)
    mask[10:20, 16:26] = 255  # inside the crop: cols 0-9 of the edit
    mask[30:40, 0:10] = 200  # cropped away
    Image.fromarray(mask).save(tmp_path / "m.png")
    fitted = read_mask(tmp_path / "m.png", g, g.size)
    assert fitted.shape == (64, 64) and fitted.sum() == 100 and fitted[10:20, 0:10].all()
    already = torch.zeros(64, 64, dtype=torch.bool)
    assert fit_mask(already, g, (64, 64), "x") is already
    with pytest.raises(ValueError, match="50 x 50"):
        fit_mask(torch.zeros(50, 50, dtype=torch.bool), g, (64, 64), "x")


def test_attention_mask_thresholds_the_saved_grayscale_map(tmp_path):
    heat = WordAttention([1], (2, 2))
    heat.total = torch.tensor([[0.0, 1.0], [2.0, 4.0]])  # normalised 0, .25, .5, 1
    im = heat.grayscale((2, 2))
    assert im.mode == "L" and np.asarray(im).tolist() == [[0, 64], [128, 255]]
    im.save(tmp_path / "map.png")
    m = attention_mask(tmp_path / "map.png", (2, 2))
    # 128 / 255 >= 0.5, 64 / 255 < 0.5
    assert ATTENTION_THRESHOLD == 0.5 and m.tolist() == [[False, False], [True, True]]
    with pytest.raises(ValueError, match="attention map"):
        attention_mask(tmp_path / "map.png", (4, 4))
