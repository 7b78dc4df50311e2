"""Evaluation results as files and tables: a CSV with one row per image (its stem, the files, every metric;
inf written `inf`, NaN `nan`), read back with text columns kept as text (a stem "000000000000" stays one),
and the summary tables printed at the end of `evaluate` and `pie-bench`.
"""
import csv
import io
import math
import os
from pathlib import Path

from ..files import atomic_path
from .stats import Summary, paired_difference, summarize

TEXT_COLUMNS = ("edits", "stem", "input", "edit", "mask", "category", "key", "status", "reason", "source", "target",
                "target_prompt")
# Whether a larger value is better, by metric (the contact sheet's best and worst; the tables' arrows).
HIGHER_IS_BETTER = {"clip_acc": True, "clip_score": True, "clip_score_edited": True, "structure_distance": False,
                    "psnr_bg": True, "mse_bg": False, "ssim_bg": True, "lpips_bg": False,
                    "recon_psnr": True, "recon_ssim": True, "recon_lpips": False,
                    # the generated-scenes world (world/measure.py)
                    "success": True, "centroid_error": False, "size_error": False, "colour_error": False,
                    "psnr_ideal": True, "psnr_recon": True}


def metric_columns(rows: list[dict]) -> list[str]:
    """The metric columns present in any row, in HIGHER_IS_BETTER's order, then any others."""
    present = {k for row in rows for k in row if k not in TEXT_COLUMNS}
    return [m for m in HIGHER_IS_BETTER if m in present] + sorted(present - set(HIGHER_IS_BETTER))


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                else repr(value))
    return str(value)


def write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """One row per image; columns: the text columns present, then metric_columns (atomic write)."""
    text = [c for c in TEXT_COLUMNS if any(c in row for row in rows)]
    columns = text + metric_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: cell(row.get(c)) for c in columns})
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return Path(path)


def read_csv(path: str | os.PathLike) -> list[dict]:
    """write_csv's rows back: metric cells as floats ("" -> NaN, "inf" -> inf), text columns as strings."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v if k in TEXT_COLUMNS else (float(v) if v != "" else math.nan) for k, v in row.items()}
            for row in rows]


def summaries(rows: list[dict], seed: int = 0) -> dict[str, Summary]:
    return {m: summarize([row.get(m, math.nan) for row in rows], seed) for m in metric_columns(rows)}


def number(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def arrow(metric: str) -> str:
    return {True: " (higher better)", False: " (lower better)"}.get(HIGHER_IS_BETTER.get(metric), "")


def format_summary(stats: dict[str, Summary], title: str = "") -> str:
    """One line per metric: mean, median, the 95% bootstrap interval, count (and NaN left out)."""
    width = max([len(m) for m in stats] + [6])
    lines = [title] if title else []
    lines.append(f"{'metric':<{width}}  {'mean':>9}  {'median':>9}  {'95% interval':>21}  {'n':>5}  {'nan':>4}")
    for m, s in stats.items():
        lines.append(f"{m:<{width}}  {number(s.mean):>9}  {number(s.median):>9}  "
                     f"{'[' + number(s.low) + ', ' + number(s.high) + ']':>21}  {s.count:>5}  {s.nan:>4}{arrow(m)}")
    return "\n".join(lines)


def format_comparison(runs: dict[str, list[dict]], seed: int = 0) -> str:
    """Several edit folders of the same inputs side by side: each one's mean [95% interval], then each later
    folder minus the first, paired by stem (paired bootstrap interval of the mean difference)."""
    names = list(runs)
    by_stem = {name: {row["stem"]: row for row in rows} for name, rows in runs.items()}
    stems = sorted(set.intersection(*(set(s) for s in by_stem.values())))
    metrics = metric_columns([row for rows in runs.values() for row in rows])
    labels = [f"[{i}]" for i in range(len(names))]
    lines = [f"{label} {name}" for label, name in zip(labels, names)]
    lines.append(f"{len(stems)} images in every folder; differences are [i] - [0] over them")
    header = ["metric"] + labels + [f"{label} - [0]" for label in labels[1:]]
    table = [header]
    for m in metrics:
        line = [m]
        for name in names:
            s = summarize([by_stem[name][stem].get(m, math.nan) for stem in stems], seed)
            line.append(f"{number(s.mean)} [{number(s.low)}, {number(s.high)}]")
        base = [by_stem[names[0]][stem].get(m, math.nan) for stem in stems]
        for name in names[1:]:
            d = paired_difference(base, [by_stem[name][stem].get(m, math.nan) for stem in stems], seed)
            line.append(f"{number(d.mean)} [{number(d.low)}, {number(d.high)}]")
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    return "\n".join(lines)
