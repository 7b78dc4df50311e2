"""Loss curves as a PNG, drawn with Pillow (no plotting library): one panel per curve, log-scale y, the raw
losses in light grey and a moving average on top."""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..tools.files import atomic_path


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_losses(curves: dict[str, list[float]], path: Path, width: int = 560, height: int = 220) -> Path:
    curves = {k: v for k, v in curves.items() if len(v) > 1}
    image = Image.new("RGB", (width, max(1, len(curves)) * height), "white")
    draw = ImageDraw.Draw(image)
    for row, (name, losses) in enumerate(curves.items()):
        y0, left, right, top, bottom = row * height, 60, width - 15, row * height + 25, row * height + height - 30
        raw = np.log10(np.maximum(np.asarray(losses, dtype=np.float64), 1e-8))
        smooth = moving_average(raw, len(raw) // 50 + 1)
        lo, hi = float(np.percentile(raw, 0.5)), float(raw.max())
        hi = hi if hi > lo else lo + 1
        to_xy = lambda i, v, n: (left + (right - left) * i / max(1, n - 1),
                                 bottom - (bottom - top) * (min(max(v, lo), hi) - lo) / (hi - lo))
        draw.rectangle([left, top, right, bottom], outline="black")
        draw.line([to_xy(i, v, len(raw)) for i, v in enumerate(raw)], fill=(200, 200, 200))
        offset = (len(raw) - len(smooth)) / 2
        draw.line([to_xy(i + offset, v, len(raw)) for i, v in enumerate(smooth)], fill=(200, 30, 30), width=2)
        draw.text((left, y0 + 6), f"{name}: {len(losses)} steps, last {10 ** smooth[-1]:.4g}", fill="black")
        for v in (lo, (lo + hi) / 2, hi):
            draw.text((4, to_xy(0, v, 2)[1] - 6), f"{10 ** v:.3g}", fill="black")
        for i in (0, len(raw) - 1):
            draw.text((to_xy(i, lo, len(raw))[0] - 10, bottom + 6), str(i + 1), fill="black")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
