"""Pixel metrics of an edit against its input: MSE, PSNR and SSIM, on the whole frame or on the unedited region.

Images are (3, H, W) float tensors in [0, 1] (8-bit values / 255); a mask is (H, W) bool, True = edited.
Two masked modes:
  pie    PIE-Bench's evaluator (cure-lab/PnPInversion evaluation/matrics_calculator.py): both images multiplied
         by the unedited mask (edited pixels zeroed, the 1-pixel border counted as edited), then the metric over
         the whole frame, so the zeroed pixels count as agreeing;
  exact  the edited pixels are left out: the mean runs over unedited pixels only (SSIM: its map, computed on
         the unmasked images, averaged over unedited pixels; windows at the mask's edge see edited pixels).
SSIM is torchmetrics' StructuralSimilarityIndexMeasure(data_range=1.0) as PIE-Bench uses it (Wang et al., 2004:
11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, reflect padding), written out here.
"""
import math

import torch
import torch.nn.functional as F

MODES = ("pie", "exact")
SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03


def with_border(edited: torch.Tensor) -> torch.Tensor:
    """The mask with its 1-pixel frame marked edited.
    NOTE(official): PIE-Bench's mask_decode does this "to avoid annotation errors in boundary"."""
    edited = edited.clone()
    edited[0, :] = edited[-1, :] = edited[:, 0] = edited[:, -1] = True
    return edited


def check_pair(a: torch.Tensor, b: torch.Tensor, edited: torch.Tensor | None, mode: str) -> None:
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"images must both be (3, H, W) of one size, not {tuple(a.shape)} and {tuple(b.shape)}")
    if edited is not None and tuple(edited.shape) != tuple(a.shape[-2:]):
        raise ValueError(f"the mask is {tuple(edited.shape)}, the images {tuple(a.shape[-2:])}")
    if mode not in MODES:
        raise ValueError(f"mask mode must be one of {MODES}, not {mode!r}")


def zero_edited(a: torch.Tensor, b: torch.Tensor, edited: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PIE-Bench's masking: both images times the unedited mask (border counted as edited)."""
    keep = (~with_border(edited)).to(a.dtype)
    return a * keep, b * keep


def mse(a: torch.Tensor, b: torch.Tensor, edited: torch.Tensor | None = None, mode: str = "pie") -> float:
    """Mean squared error; with a mask, of the unedited region in `mode` (module docstring). NaN when no pixel
    is unedited (PIE-Bench writes "nan" there)."""
    check_pair(a, b, edited, mode)
    if edited is None:
        return ((a - b) ** 2).mean().item()
    if (~with_border(edited) if mode == "pie" else ~edited).sum() == 0:
        return math.nan
    if mode == "pie":
        a, b = zero_edited(a, b, edited)
        return ((a - b) ** 2).mean().item()
    keep = (~edited).expand_as(a)
    return ((a - b)[keep] ** 2).mean().item()


def psnr_from_mse(error: float, peak: float = 1.0) -> float:
    """PSNR = 10 log10(peak^2 / MSE) in dB; identical images (MSE 0) give inf."""
    if math.isnan(error):
        return math.nan
    return math.inf if error == 0 else 10 * math.log10(peak ** 2 / error)


def psnr(a: torch.Tensor, b: torch.Tensor, edited: torch.Tensor | None = None, mode: str = "pie") -> float:
    return psnr_from_mse(mse(a, b, edited, mode))


def gaussian_window(size: int, sigma: float, dtype=torch.float64) -> torch.Tensor:
    """(size, size) normalised Gaussian, the outer product of a 1-D one centred on the middle tap."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x / sigma) ** 2 / 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004, eq. 13) of two (C, H, W) images -> (C, H, W).

    Local means, variances and covariance under a Gaussian window, images reflect-padded so the map has the
    images' size. NOTE(official): as torchmetrics 1.9.0, the window side is 2 * int(3.5 sigma + 0.5) + 1 (11 for
    sigma 1.5) and negative variances from rounding are clamped to 0."""
    size = 2 * int(3.5 * sigma + 0.5) + 1
    pad = (size - 1) // 2
    C = a.shape[0]
    window = gaussian_window(size, sigma, a.dtype).to(a.device).expand(C, 1, size, size)
    x = F.pad(torch.stack([a, b]), (pad, pad, pad, pad), mode="reflect")  # (2, C, H + 2p, W + 2p)
    p, t = x[0:1], x[1:2]
    stats = F.conv2d(torch.cat([p, t, p * p, t * t, p * t]), window, groups=C)  # (5, C, H, W)
    mu_p, mu_t, pp, tt, pt = stats
    var_p = (pp - mu_p ** 2).clamp_min(0)
    var_t = (tt - mu_t ** 2).clamp_min(0)
    cov = pt - mu_p * mu_t
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))


def ssim(a: torch.Tensor, b: torch.Tensor, edited: torch.Tensor | None = None, mode: str = "pie") -> float:
    """Mean SSIM; with a mask, of the unedited region in `mode` (module docstring)."""
    check_pair(a, b, edited, mode)
    if edited is None:
        return ssim_map(a, b).mean().item()
    if (~with_border(edited) if mode == "pie" else ~edited).sum() == 0:
        return math.nan
    if mode == "pie":
        return ssim_map(*zero_edited(a, b, edited)).mean().item()
    return ssim_map(a, b)[(~edited).expand_as(a)].mean().item()


def background_metrics(a: torch.Tensor, b: torch.Tensor, edited: torch.Tensor, mode: str = "pie",
                       lpips=None) -> dict[str, float]:
    """Background preservation of edit `b` against input `a`: PSNR, MSE, SSIM (and LPIPS, `lpips.py`, when a
    scorer is given) of the unedited region."""
    error = mse(a, b, edited, mode)
    out = {"psnr_bg": psnr_from_mse(error), "mse_bg": error, "ssim_bg": ssim(a, b, edited, mode)}
    if lpips is not None:
        out["lpips_bg"] = lpips.masked(a, b, edited, mode)
    return out


def reconstruction_quality(image: torch.Tensor, reconstruction: torch.Tensor, lpips=None,
                           recorded_psnr: float | None = None) -> dict[str, float]:
    """How faithfully the inversion reconstructs the input: PSNR, SSIM (and LPIPS) of the whole frame.
    recorded_psnr: the PSNR the edit measured itself (pipeline.reconstruction_errors' psnr_input_db, in the
    settings JSON, before 8-bit rounding), used instead of measuring the PNGs again."""
    measured = psnr(image, reconstruction) if recorded_psnr is None else recorded_psnr
    out = {"recon_psnr": measured, "recon_ssim": ssim(image, reconstruction)}
    if lpips is not None:
        out["recon_lpips"] = lpips(image, reconstruction)
    return out
