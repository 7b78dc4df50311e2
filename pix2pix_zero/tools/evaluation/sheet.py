"""A contact sheet: for each metric, a row of the best and the worst edits (input above edit, each labelled
with its stem and value), to see at a glance what a number means and to find failures."""
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw

from ..image import read_image, save_png
from .report import HIGHER_IS_BETTER, metric_columns, number

THUMB = 128
LABEL = 14


def ranked(rows: list[dict], metric: str, k: int) -> tuple[list[dict], list[dict]]:
    """(the k best, the k worst) rows by `metric` (NaN left out; the same row never in both)."""
    usable = [r for r in rows if not math.isnan(float(r.get(metric, math.nan)))]
    higher = HIGHER_IS_BETTER.get(metric, True)
    order = sorted(usable, key=lambda r: float(r[metric]), reverse=higher)
    best = order[:k]
    worst = [r for r in order[::-1][:k] if r not in best]
    return best, worst


def tile(row: dict, metric: str) -> Image.Image:
    """Input over edit, THUMB wide each, with "stem value" below."""
    out = Image.new("RGB", (THUMB, 2 * THUMB + LABEL), "white")
    for i, key in enumerate(("input", "edit")):
        im = read_image(row[key])
        im.thumbnail((THUMB, THUMB))
        out.paste(im, ((THUMB - im.width) // 2, i * THUMB + (THUMB - im.height) // 2))
    ImageDraw.Draw(out).text((2, 2 * THUMB), f"{row['stem'][:12]} {number(float(row[metric]))}", fill="black")
    return out


def contact_sheet(rows: list[dict], path: str | os.PathLike, k: int = 3) -> Path | None:
    """One band per metric: its name, then the k best and the k worst edits; None when no row has a value."""
    bands = []
    for metric in metric_columns(rows):
        best, worst = ranked(rows, metric, k)
        if not best:
            continue
        tiles = [tile(r, metric) for r in best + worst]
        band = Image.new("RGB", (max(1, len(tiles)) * (THUMB + 4), 2 * THUMB + 2 * LABEL + 4), "white")
        ImageDraw.Draw(band).text((2, 0), f"{metric}: best {len(best)} | worst {len(worst)}", fill="black")
        for i, t in enumerate(tiles):
            band.paste(t, (i * (THUMB + 4), LABEL + 2))
        bands.append(band)
    if not bands:
        return None
    sheet = Image.new("RGB", (max(b.width for b in bands), sum(b.height for b in bands)), "white")
    y = 0
    for b in bands:
        sheet.paste(b, (0, y))
        y += b.height
    return save_png(sheet, path)
