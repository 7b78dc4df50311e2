"""tools/evaluation/report.py and sheet.py: the CSV round trip (inf as `inf`, text columns kept as text), the
summary and comparison tables, the contact sheet; and lpips.py's message when no LPIPS package is there."""
import math
import sys

import numpy as np
from PIL import Image

from pix2pix_zero.tools.evaluation.lpips import load_lpips
from pix2pix_zero.tools.evaluation.report import (format_comparison, format_summary, metric_columns, read_csv,
                                                  summaries, write_csv)
from pix2pix_zero.tools.evaluation.sheet import contact_sheet, ranked


def rows_for(tmp_path, n=4, shift=0.0):
    rows = []
    for i in range(n):
        for kind in ("input", "edit"):
            Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}-{kind}.png")
        rows.append({"stem": f"{i:012d}", "input": str(tmp_path / f"{i}-input.png"),
                     "edit": str(tmp_path / f"{i}-edit.png"),
                     "psnr_bg": math.inf if i == 0 else 20.0 + i + shift, "structure_distance": 0.01 * i,
                     "clip_acc": float(i % 2), "ssim_bg": math.nan if i == 3 else 0.5})
    return rows


def test_csv_round_trip_keeps_inf_nan_and_text(tmp_path):
    rows = rows_for(tmp_path)
    path = write_csv(rows, tmp_path / "e.csv")
    text = path.read_text()
    assert text.splitlines()[0] == "stem,input,edit,clip_acc,structure_distance,psnr_bg,ssim_bg"
    assert ",inf," in text and ",nan" in text
    back = read_csv(path)
    assert back[0]["stem"] == "000000000000" and back[0]["psnr_bg"] == math.inf and math.isnan(back[3]["ssim_bg"])
    assert back[2]["structure_distance"] == rows[2]["structure_distance"]  # repr: exact


def test_summary_and_comparison_tables(tmp_path):
    rows = rows_for(tmp_path)
    stats = summaries(rows)
    assert list(stats) == metric_columns(rows) and stats["ssim_bg"].nan == 1 and stats["clip_acc"].mean == 0.5
    table = format_summary(stats, "title")
    assert table.startswith("title") and "structure_distance" in table and "(lower better)" in table
    other = rows_for(tmp_path, shift=1.5)
    comparison = format_comparison({"ddim": rows, "direct": other})
    line = next(l for l in comparison.splitlines() if l.startswith("psnr_bg"))
    assert "1.5 [1.5, 1.5]" in line  # the paired difference of a constant shift (inf - inf left out)
    assert "[0] ddim" in comparison and "[1] direct" in comparison


def test_contact_sheet_ranks_by_direction_and_writes_a_band_per_metric(tmp_path):
    rows = rows_for(tmp_path)
    best, worst = ranked(rows, "structure_distance", 1)
    assert best[0]["stem"].endswith("0") and worst[0]["stem"].endswith("3")  # lower is better
    best, worst = ranked(rows, "psnr_bg", 2)
    assert [r["stem"][-1] for r in best] == ["0", "3"] and [r["stem"][-1] for r in worst] == ["1", "2"]
    path = contact_sheet(rows, tmp_path / "sheet.png", k=2)
    assert Image.open(path).height > 4 * 2 * 128  # four metrics, each a band of input-over-edit tiles
    assert contact_sheet([], tmp_path / "none.png") is None


def test_lpips_absent_gives_a_clear_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    monkeypatch.setitem(sys.modules, "torchmetrics.image.lpip", None)
    scorer, why = load_lpips("auto")
    assert scorer is None and "lpips: unavailable" in why and "torchmetrics: unavailable" in why
    assert "pip install lpips" in why
    assert load_lpips("off") == (None, "LPIPS off (--lpips off)")
