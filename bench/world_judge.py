"""Is the world's shape judge right? The shipped classifier against a geometric judge and against the eye.

  python bench/world_judge.py [--out outputs/world-grid-200] [--variants defaults ...] [--blind 12]
                              [--labels docs/world/judge/labels-by-eye.csv] [--object-scale 1]
                              [--classifier weights/world/shape-classifier.safetensors]

world-bench's success is the shipped CNN's forced choice among the world's four shapes for the edited object's
mask: it has no "none of these", so a lumpy blob gets the name of whichever shape it is least unlike. The second
judge fits each shape to the same mask: the shape's outline placed at the mask's centroid, its circumradius chosen
so its area equals the mask's, its rotation searched over a 3 degree grid, scored by IoU with the mask; it names
the best-fitting shape. It learns nothing, but it reads the outline strictly (a star with rounded tips fits a star
less well than the real thing) and has no "none" either. The third, the outline judge (measure.outline_verdict),
fits the shapes to the mask's outline (opened by a pixel, its largest piece: no stripe edge the decoder moved) and
says "none" unless one shape fits well and clearly better than the rest (thresholds: the 5th percentiles of the
best IoU and of its margin over the VAE round trips the fit names right, printed). The judges are first read on the
truth (held-out renders, and the same scenes through the shipped VAE, which no edit can beat), then on every saved
edit (the PNGs of a world-bench folder): success by each, by both, their agreement, and the classifier's
probability of the target when it names it. Then a blind sample of the first variant's edits (--blind a task,
seeded) is drawn as a sheet with no verdict on it, to be labelled by eye (the shape seen, or none); --labels reads
those labels back and sets the judges against them. A second sheet shows, per task, edits that only the classifier,
only the fit, and both call the target. --object-scale judges a world-bench run made with the same --object-scale
(and, with --classifier, by the classifier trained at that scale).
"""
import argparse
import csv
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pix2pix_zero import load_sd
from pix2pix_zero.editing import decode_latents
from pix2pix_zero.inversion import encode_image
from pix2pix_zero.tools.evaluation.stats import summarize
from pix2pix_zero.tools.files import atomic_path
from pix2pix_zero.world import CHECKPOINT, WORLD_DIR, classifier, scenes
from pix2pix_zero.world.bench import held_out_scene, parse_task, to_model
from pix2pix_zero.world.commands import read_csv
from pix2pix_zero.world.measure import (OUTLINE_IOU, OUTLINE_MARGIN, best_two, object_mask, outline, shape_fit, unit,
                                        verdict)

from common import object_scale

EYE = (*scenes.SHAPES, "none")  # what a label by eye may say
CLUTTERED = 0.6  # a mask that fits no shape better than this IoU holds more than the object


def judge(judge_cnn, masks: list[np.ndarray]) -> tuple[list[str], list[dict[str, float]], list[dict[str, float]],
                                                      list[dict[str, float]]]:
    """(the classifier's names, its probabilities, the fits, the fits of the outline) for masks (H, W) bool."""
    x = torch.from_numpy(np.stack(masks))[:, None].float()
    with torch.no_grad():
        probabilities = judge_cnn(x).softmax(-1)
    named = [scenes.SHAPES[i] for i in probabilities.argmax(-1)]
    as_dict = [dict(zip(scenes.SHAPES, p.tolist())) for p in probabilities]
    return named, as_dict, [shape_fit(m) for m in masks], [shape_fit(outline(torch.from_numpy(m))) for m in masks]


def on_the_truth(judge_cnn, n: int, object_scale: float = 1.0) -> None:
    """The judges on held-out renders and on the same scenes after the shipped VAE's round trip."""
    sd = load_sd(CHECKPOINT, "cpu", torch.float32)
    print("| shape | classifier, renders | fit, renders | outline judge, renders | classifier, VAE round trip | fit, "
          "VAE round trip | outline judge, VAE round trip (none) |\n|---|---|---|---|---|---|---|")
    named_right = []  # (IoU, margin) of the VAE round trips' outlines the fit names right
    for shape in scenes.SHAPES:
        chosen = [held_out_scene(shape, k, object_scale) for k in range(n)]
        rendered = [scenes.render(s) for s in chosen]
        with torch.no_grad():
            decoded = decode_latents(sd, encode_image(sd, torch.cat([to_model(r[0]) for r in rendered])))
        cells = []
        for masks in ([r[1] for r in rendered],
                      [object_mask(unit(decoded[i]), unit(r[2])).numpy() for i, r in enumerate(rendered)]):
            named, _, fits, outlines = judge(judge_cnn, masks)
            verdicts = [verdict(f) for f in outlines]
            cells += [f"{100 * np.mean([m == shape for m in named]):.0f}%",
                      f"{100 * np.mean([max(f, key=f.get) == shape for f in fits]):.0f}%",
                      f"{100 * np.mean([v == shape for v in verdicts]):.0f}% ({verdicts.count('none')})"]
        named_right += [best_two(f)[1:] for f in outlines if best_two(f)[0] == shape]  # the round trips' outlines
        print(f"| {shape} | " + " | ".join(cells) + " |", flush=True)
    iou, margin = np.percentile(np.array(named_right), 5, axis=0)
    print(f"\nThe VAE round trips' outlines the fit names right ({len(named_right)}): 5th percentile of the best IoU "
          f"{iou:.3f}, of its margin over the next shape {margin:.3f} (measure.OUTLINE_IOU {OUTLINE_IOU}, "
          f"OUTLINE_MARGIN {OUTLINE_MARGIN})")


def on_edits(judge_cnn, folder: Path, object_scale: float = 1.0) -> list[dict]:
    if not (folder / "edits.csv").is_file():
        raise SystemExit(f"error: {folder / 'edits.csv'}: no world-bench edits here; make them with "
                         f"`python train_free_edit.py world-bench --n 200 --batch 25 --out {folder.parent}` (add "
                         "--ablation --variants NAME for a variant)")
    rows = sorted(read_csv(folder / "edits.csv"), key=lambda r: (r["task"], r["seed"]))
    missing = [r["edit"] for r in rows if not Path(r["edit"]).is_file()]
    if missing:
        raise SystemExit(f"error: {missing[0]}: {len(missing)} of the {len(rows)} edits in {folder / 'edits.csv'} "
                         "have no PNG (a fresh clone holds only edits.csv); make them again with world-bench "
                         f"--out {folder.parent} (without --resume)")
    masks = []
    for r in rows:
        scene = scenes.sample_scene(r["seed"], shape=parse_task(r["task"])[0], object_scale=object_scale)
        edit = np.array(Image.open(r["edit"]).convert("RGB"))
        masks.append(object_mask(unit(edit), unit(scenes.render(scene)[2])).numpy())
    named, probabilities, fits, outlines = judge(judge_cnn, masks)
    for r, name, p, f, o in zip(rows, named, probabilities, fits, outlines):
        r |= {"target": parse_task(r["task"])[1], "from_png": name, "p_target": p[parse_task(r["task"])[1]],
              "fit": max(f, key=f.get), "fit_iou": f, "outline": verdict(o)}
    changed = sum(r["from_png"] != r["predicted"] for r in rows)
    print(f"\n{folder.name}: the classifier re-run on the 8-bit PNGs names another shape than edits.csv for "
          f"{changed} of {len(rows)} (rounding moves a pixel across the object threshold); the columns marked PNG "
          "below judge the PNGs")
    return rows


def summary(rows: list[dict], label: str) -> None:
    by_task = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    print(f"\n{label}: {len(rows)} edits, success % [95% bootstrap interval] by each judge\n\n| task | "
          "classifier, edits.csv (world-bench) | classifier, PNG | fit, PNG | both, PNG | judges agree | outline "
          "judge, PNG | outline judge: none | classifier's p(target) when it names the target, median [10th "
          "percentile] |\n|---|---|---|---|---|---|---|---|---|")
    for task, chosen in {**by_task, "all": rows}.items():
        cells = []
        for hit in (lambda r: r["predicted"] == r["target"], lambda r: r["from_png"] == r["target"],
                    lambda r: r["fit"] == r["target"],
                    lambda r: r["from_png"] == r["target"] == r["fit"], lambda r: r["from_png"] == r["fit"],
                    lambda r: r["outline"] == r["target"], lambda r: r["outline"] == "none"):
            m = summarize([100.0 * hit(r) for r in chosen])
            cells.append(f"{m.mean:.1f} [{m.low:.1f}, {m.high:.1f}]")
        p = [r["p_target"] for r in chosen if r["from_png"] == r["target"]]
        cells.append(f"{np.median(p):.2f} [{np.percentile(p, 10):.2f}]" if p else "-")
        print(f"| {task} | " + " | ".join(cells) + " |")
    cluttered = [r for r in rows if max(r["fit_iou"].values()) < CLUTTERED]
    print(f"\n{len(cluttered)} of the {len(rows)} masks fit no shape better than IoU {CLUTTERED} (background the "
          f"decoder moved, taken in as object); the classifier names the target for "
          f"{sum(r['from_png'] == r['target'] for r in cluttered)} of them")


def judges_sheet(rows: list[dict], path: Path, per_row: int = 10, tile: int = 96) -> None:
    """For each task, three rows of edits: those only the classifier calls the target, those only the fit does,
    and those both do (the first `per_row` of each, by scene)."""
    kinds = {"classifier only": lambda r: r["from_png"] == r["target"] != r["fit"],
             "fit only": lambda r: r["fit"] == r["target"] != r["from_png"],
             "both": lambda r: r["from_png"] == r["target"] == r["fit"]}
    tasks = sorted({r["task"] for r in rows})
    label = 26
    sheet = Image.new("RGB", (per_row * tile, len(tasks) * len(kinds) * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (task, (kind, hit)) in enumerate((t, k) for t in tasks for k in kinds.items()):
        chosen = [r for r in rows if r["task"] == task and hit(r)]
        y = i * (tile + label)
        for col, r in enumerate(chosen[:per_row]):
            x = col * tile
            sheet.paste(Image.open(r["edit"]).convert("RGB").resize((tile, tile)), (x, y + label))
            draw.text((x + 2, y + 1), f"{task[:3]}>{r['target'][:3]} {r['seed'] - scenes.HELD_OUT}", fill="black")
            draw.text((x + 2, y + 13), f"cnn {r['from_png'][:3]} {r['p_target']:.2f} fit {r['fit'][:3]}",
                      fill="black")
        if not chosen:
            draw.text((4, y + label + 4), f"{task}, {kind}: none", fill="black")
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"\nwrote {path}: for each task, the edits only the classifier calls the target, only the fit, both")


def blind_sample(rows: list[dict], per_task: int) -> list[dict]:
    """`per_task` edits of each task drawn by a seeded generator, in a fixed order: what is labelled by eye."""
    rng = np.random.default_rng(0)
    tasks = sorted({r["task"] for r in rows})
    return [r for t in tasks for r in rng.choice([r for r in rows if r["task"] == t], per_task, replace=False)]


def blind_sheet(sample: list[dict], path: Path, columns: int = 8, tile: int = 128) -> None:
    """The sample with its number, task and scene only (no judge's verdict): for labelling by eye."""
    label, rows = 14, math.ceil(len(sample) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * (tile + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(sample):
        x, y = i % columns * tile, i // columns * (tile + label)
        sheet.paste(Image.open(r["edit"]).convert("RGB").resize((tile, tile)), (x, y + label))
        draw.text((x + 2, y + 1), f"{i + 1}. {r['task']} {r['seed'] - scenes.HELD_OUT}", fill="black")
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    print(f"\nwrote {path}: {len(sample)} edits to label by eye, blind to both judges")


def by_eye(sample: list[dict], labels: Path) -> None:
    """The judges against labels by eye (a CSV: task, seed, eye = the shape seen, or none for a blob that is no
    world shape) on the blind sample."""
    with open(labels, newline="") as f:
        eye = {(r["task"], int(r["seed"])): r["eye"] for r in csv.DictReader(f)}
    wrong = [label for label in eye.values() if label not in EYE]
    if wrong:
        raise SystemExit(f"error: {labels}: the label {wrong[0]!r} is none of {', '.join(EYE)}")
    missing = [f"{r['task']} {r['seed']}" for r in sample if (r["task"], r["seed"]) not in eye]
    if missing:
        raise SystemExit(f"error: {labels}: no label for {len(missing)} edits of the sample, e.g. {missing[0]}; the "
                         "labels are for the blind sheet of the first --variants at the same --blind")
    print(f"\nBy eye ({labels}), {len(sample)} edits: success % [95% bootstrap interval]; then, of the edits each "
          "judge calls a success, the share the eye calls the target; then each judge's name for the object "
          "against the eye's (the classifier and the fit cannot say none)\n\n| task | eye | classifier | fit | "
          "outline judge | classifier's successes right by eye | fit's | outline judge's | the same name as the "
          "eye: classifier, fit, outline judge | what the eye saw |\n|---|---|---|---|---|---|---|---|---|---|")
    tasks = sorted({r["task"] for r in sample})
    judges = ("from_png", "fit", "outline")
    for task in [*tasks, "all"]:
        chosen = [r for r in sample if task in (r["task"], "all")]
        seen = [eye[r["task"], r["seed"]] for r in chosen]
        cells = []
        for hit in (lambda r, e: e == r["target"], *(lambda r, e, j=j: r[j] == r["target"] for j in judges)):
            m = summarize([100.0 * hit(r, e) for r, e in zip(chosen, seen)])
            cells.append(f"{m.mean:.0f} [{m.low:.0f}, {m.high:.0f}]")
        for judged in judges:
            right = [e == r["target"] for r, e in zip(chosen, seen) if r[judged] == r["target"]]
            cells.append(f"{sum(right)} of {len(right)}")
        cells.append(", ".join(f"{sum(r[j] == e for r, e in zip(chosen, seen))}" for j in judges))
        counts = {name: seen.count(name) for name in [*scenes.SHAPES, "none"] if seen.count(name)}
        cells.append(", ".join(f"{name} {n}" for name, n in counts.items()))
        print(f"| {task} | " + " | ".join(cells) + " |")
    print("\nThe outline judge (columns) against the eye (rows), all tasks:\n\n| eye | " + " | ".join(EYE) + " |\n|"
          + "---|" * (len(EYE) + 1))
    for seen in EYE:
        said = [r["outline"] for r in sample if eye[r["task"], r["seed"]] == seen]
        print(f"| {seen} | " + " | ".join(str(said.count(name)) for name in EYE) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/world-grid-200", help="a world-bench --out (its folders' PNGs)")
    p.add_argument("--variants", nargs="*", default=["defaults"], help="folder names under --out")
    p.add_argument("--n", type=int, default=32, help="held-out scenes a shape for the judges on the truth")
    p.add_argument("--sheet", default="outputs/world-judge.png", help="per task, the edits each judge and both "
                   "call the target, of the first variant")
    p.add_argument("--blind", type=int, default=12, help="edits a task of the first variant to label by eye")
    p.add_argument("--labels", help="the labels by eye of the blind sample (CSV: task, seed, eye)")
    p.add_argument("--object-scale", type=object_scale, default=1.0, help="the world-bench run's --object-scale")
    p.add_argument("--classifier", default=str(WORLD_DIR / classifier.FILE), help="the shape classifier")
    a = p.parse_args()
    judge_cnn = classifier.load(a.classifier)
    print(f"Both judges on the truth, {a.n} held-out scenes a shape (named right):\n")
    on_the_truth(judge_cnn, a.n, a.object_scale)
    for i, name in enumerate(a.variants):
        rows = on_edits(judge_cnn, Path(a.out) / name, a.object_scale)
        summary(rows, name)
        if i == 0:
            judges_sheet(rows, Path(a.sheet))
            sample = blind_sample(rows, a.blind)
            blind_sheet(sample, Path(a.sheet).with_name(Path(a.sheet).stem + "-blind.png"))
            if a.labels:
                by_eye(sample, Path(a.labels))


if __name__ == "__main__":
    main()
