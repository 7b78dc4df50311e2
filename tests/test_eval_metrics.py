"""tools/evaluation/metrics.py: MSE and PSNR by hand on a 4 x 4 example in both masked modes, inf for identical
images, and SSIM against torchmetrics' StructuralSimilarityIndexMeasure (the implementation PIE-Bench uses)."""
import math

import pytest
import torch
from torchmetrics.image import StructuralSimilarityIndexMeasure

from pix2pix_zero.tools.evaluation.metrics import (background_metrics, gaussian_window, mse, psnr,
                                                   reconstruction_quality, ssim, ssim_map, with_border)


def four_by_four():
    """Input all 0.5; the edit differs by 0.1 at (1, 1) (inside) and by 0.2 at (0, 2) (on the border), and by 0.4
    in the edited pixel (2, 2). Same in all three channels."""
    a = torch.full((3, 4, 4), 0.5, dtype=torch.float64)
    b = a.clone()
    b[:, 1, 1] += 0.1
    b[:, 0, 2] += 0.2
    b[:, 2, 2] += 0.4
    edited = torch.zeros(4, 4, dtype=torch.bool)
    edited[2, 2] = True
    return a, b, edited


def test_masked_mse_and_psnr_by_hand_in_both_modes():
    a, b, edited = four_by_four()
    # pie: the border and (2, 2) are zeroed in both images; over the 16 pixels only (1, 1) differs: 0.01 / 16
    assert mse(a, b, edited, "pie") == pytest.approx(0.01 / 16)
    assert psnr(a, b, edited, "pie") == pytest.approx(10 * math.log10(16 / 0.01))
    # exact: the 15 unedited pixels, border included: (0.01 + 0.04) / 15
    assert mse(a, b, edited, "exact") == pytest.approx(0.05 / 15)
    assert psnr(a, b, edited, "exact") == pytest.approx(10 * math.log10(15 / 0.05))
    # no mask: the whole frame, the edited pixel too
    assert mse(a, b) == pytest.approx((0.01 + 0.04 + 0.16) / 16)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    a = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    edited = torch.zeros(16, 16, dtype=torch.bool)
    edited[4:9, 4:9] = True
    assert psnr(a, a) == math.inf and psnr(a, a, edited, "pie") == math.inf and psnr(a, a, edited, "exact") == math.inf
    assert ssim(a, a) == pytest.approx(1.0) and ssim(a, a, edited, "exact") == pytest.approx(1.0)


def test_a_mask_over_everything_gives_nan_as_pie_bench():
    a, b, _ = four_by_four()
    everything = torch.ones(4, 4, dtype=torch.bool)
    assert math.isnan(psnr(a, b, everything, "pie")) and math.isnan(mse(a, b, everything, "exact"))
    inner = torch.zeros(4, 4, dtype=torch.bool)
    inner[1:3, 1:3] = True  # with the border rule nothing is left in pie mode; exact keeps the border
    assert math.isnan(mse(a, b, inner, "pie")) and not math.isnan(mse(a, b, inner, "exact"))


def test_border_rule_marks_the_one_pixel_frame():
    m = with_border(torch.zeros(4, 5, dtype=torch.bool))
    assert m.sum() == 4 * 5 - 2 * 3 and not m[1:3, 1:4].any()


def test_gaussian_window_is_normalised_and_symmetric():
    w = gaussian_window(11, 1.5)
    assert w.sum() == pytest.approx(1.0) and torch.equal(w, w.T) and w[5, 5] == w.max()


def test_ssim_matches_torchmetrics_whole_and_pie_masked():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 40, 52, generator=g)
    b = (a + 0.15 * torch.randn(3, 40, 52, generator=g)).clamp(0, 1)
    reference = StructuralSimilarityIndexMeasure(data_range=1.0)
    assert ssim(a, b) == pytest.approx(reference(b[None], a[None]).item(), abs=1e-5)
    edited = torch.zeros(40, 52, dtype=torch.bool)
    edited[10:25, 20:40] = True
    keep = (~with_border(edited)).float()
    assert ssim(a, b, edited, "pie") == pytest.approx(reference(b[None] * keep, a[None] * keep).item(), abs=1e-5)
    # exact: the same map, averaged over unedited pixels only
    full = ssim_map(a, b)
    assert ssim(a, b, edited, "exact") == pytest.approx(full[:, ~edited].mean().item(), abs=1e-6)
    assert ssim(a, b, edited, "exact") != pytest.approx(ssim(a, b), abs=1e-4)


def test_background_and_reconstruction_bundles():
    a, b, edited = four_by_four()
    a, b = (x.repeat(1, 4, 4) for x in (a, b))  # 16 x 16: room for SSIM's reflect padding
    edited = edited.repeat(4, 4)
    out = background_metrics(a, b, edited, "exact")
    assert set(out) == {"psnr_bg", "mse_bg", "ssim_bg"}
    assert out["psnr_bg"] == pytest.approx(10 * math.log10(1 / out["mse_bg"]))
    assert reconstruction_quality(a, b)["recon_psnr"] == pytest.approx(psnr(a, b))
    assert reconstruction_quality(a, b, recorded_psnr=31.5)["recon_psnr"] == 31.5  # the edit's own measurement


def test_bad_inputs_are_refused():
    a = torch.zeros(3, 4, 4)
    with pytest.raises(ValueError, match="one size"):
        mse(a, torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="mask"):
        mse(a, a, torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode"):
        mse(a, a, torch.zeros(4, 4, dtype=torch.bool), "nearly")
