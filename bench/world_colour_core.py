"""Does a world-bench colour finding survive a colour measure that a redrawn background cannot fool?

  python bench/world_colour_core.py [--out outputs/world-grid-200] [--variants defaults guidance_off ...]

world-bench's colour_error is the mean colour of the edited object's mask, found where the edit differs from
the true background (world/measure.py, the issue's "mean inside the mask"). When an edit redraws part of the
background (white on brown stripes greyed), that part joins the "object" and its colour is scored, so the
colour error also counts background damage. This re-measures every saved edit (the PNGs of a world-bench
folder) inside the core: the source object's mask and the ideal edit's mask, intersected and eroded by a pixel,
where any correct edit keeps the object's colour whatever its outline; a pixel there that the edit did not
paint the object's colour is a colour error, a redrawn background outside it is not. Each variant is paired
with the defaults on the same scenes, as world-bench does, for both measures; the mask measure re-measured from
the 8-bit PNGs is checked against edits.csv (they differ by the rounding).
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from pix2pix_zero.tools.evaluation.stats import paired_difference, summarize
from pix2pix_zero.world import scenes
from pix2pix_zero.world.bench import parse_task
from pix2pix_zero.world.commands import read_csv
from pix2pix_zero.world.measure import colour_error, core_colour_error, object_mask, unit, without_rim


def colour_errors(row: dict) -> tuple[float, float]:
    """(the mask measure, the core measure) of one edits.csv row, from its saved PNG."""
    source, target = parse_task(row["task"])
    scene = scenes.sample_scene(row["seed"], shape=source)
    edit = np.array(Image.open(row["edit"]).convert("RGB"))  # a writable copy
    background = unit(scenes.render(scene)[2])
    inner = without_rim(object_mask(unit(edit), background))  # as measure_edit
    return colour_error(unit(edit), inner, scene.colour), core_colour_error(scene, target, edit)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/world-grid-200", help="a world-bench --out with --ablation folders")
    p.add_argument("--variants", nargs="*", help="folder names (default: every folder with edits.csv)")
    a = p.parse_args()
    out = Path(a.out)
    folders = [out / v for v in a.variants] if a.variants else sorted(f.parent for f in out.glob("*/edits.csv"))
    measured = {}
    for folder in folders:
        rows = sorted(read_csv(folder / "edits.csv"), key=lambda r: (r["task"], r["seed"]))
        measured[folder.name] = {(r["task"], r["seed"]): (r["colour_error"], *colour_errors(r)) for r in rows}
        print(f"{folder.name}: {len(rows)} edits re-measured", flush=True)
    rounding = max(abs(e[0] - e[1]) for errors in measured.values() for e in errors.values() if e[0] == e[0])
    print(f"\nlargest |edits.csv - PNG| of the mask measure (8-bit rounding): {rounding:.3g}")
    reference = measured.pop("defaults")
    print("\nmean (paired difference from the defaults [95% bootstrap interval]) on the scenes each variant has\n")
    print("| variant | scenes | colour error, mask (world-bench) | colour error, core |\n|---|---|---|---|")
    for name, errors in {"defaults": reference, **measured}.items():
        keys = [k for k in reference if k in errors]
        cells = []
        for m in (0, 2):
            b = [errors[k][m] for k in keys]
            if name == "defaults":
                cells.append(f"{summarize(b).mean:.3g}")
                continue
            d = paired_difference([reference[k][m] for k in keys], b)
            cells.append(f"{summarize(b).mean:.3g} ({d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}])")
        print(f"| {name} | {len(keys)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
