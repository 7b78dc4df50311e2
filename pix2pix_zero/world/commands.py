"""The world's commands of train_free_edit.py: `world` edits one held-out scene with the baby SD and measures it;
`world-bench` edits many, prints a table with bootstrap intervals, writes a CSV and a contact sheet, and with
--ablation pairs each of the paper's choices against the defaults on the same scenes."""
import argparse
import csv
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path

from ..tools.arguments import DTYPES, HelpFormatter, config_args

FAST_TABLE = ("success", "centroid_error", "size_error", "colour_error", "psnr_bg", "ssim_bg", "psnr_recon",
              "seconds")


def world_args(p: argparse.ArgumentParser) -> None:
    from . import CHECKPOINT, SENTENCE_SOURCES, WORLD_DIR
    g = p.add_argument_group("world")
    g.add_argument("--weights", default=str(CHECKPOINT), help="the baby SD checkpoint")
    g.add_argument("--classifier", default=str(WORLD_DIR / "shape-classifier.safetensors"),
                   help="the shape classifier that judges edits")
    g.add_argument("--sentences", choices=SENTENCE_SOURCES, default="world",
                   help="edit direction from the world's own sentences, the template bank, or one sentence")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="UNet and text encoder")
    g.add_argument("--object-scale", type=float, default=1.0, help="held-out scenes with objects this many times "
                   "the world's size, for a model trained on them (`world.train --set object_scale=...`)")
    config_args(p)


def check_object_scale(a: argparse.Namespace) -> None:
    """A scale whose objects would not fit the frame: one line (the command line prints a ValueError so)."""
    from . import scenes
    try:
        scenes.check_object_scale(a.object_scale)
    except ValueError as e:
        raise ValueError(f"--object-scale: {e}") from None


def load_world(a: argparse.Namespace):
    """(sd, classifier), with one-line errors naming a missing file and how to get it."""
    from ..loading.load import load_sd
    from . import classifier
    if not Path(a.weights).exists():
        raise FileNotFoundError(f"{a.weights}: no baby SD checkpoint here; it ships in weights/world/ of the "
                                "repository, or train one with `python -m pix2pix_zero.world.train`")
    return load_sd(a.weights, a.device, DTYPES[a.dtype]), classifier.load(a.classifier, a.device)


def config_from(a: argparse.Namespace):
    from ..config import EditConfig
    return EditConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(EditConfig)})


def main_world(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="train_free_edit.py world", formatter_class=HelpFormatter,
                                description="Edit one held-out scene of the generated-scenes world with the baby SD "
                                            "and measure it against the truth.")
    p.add_argument("--task", default="circle2square", help="SOURCE2TARGET over circle, square, triangle, star")
    p.add_argument("--scene", type=int, default=0, help="which held-out scene of the source shape (0, 1, ...)")
    p.add_argument("--out", default="outputs/world", help="output folder")
    world_args(p)
    a = p.parse_args(argv)
    start = time.perf_counter()
    from ..tools.image import save_png, side_by_side, tensor_to_pil
    from ..tools.files import atomic_path
    from . import bench, scenes
    source, target = bench.parse_task(a.task)
    if a.scene < 0:
        p.error(f"--scene must be >= 0, not {a.scene}")
    check_object_scale(a)
    config = config_from(a)
    sd, clf = load_world(a)
    scene = bench.held_out_scene(source, a.scene, a.object_scale)
    direction = bench.world_direction(sd, source, target, a.sentences)
    edit_start = time.perf_counter()
    result = bench.edit_scene(sd, scene, target, config, direction)
    edit_seconds = time.perf_counter() - edit_start
    from .measure import measure_edit, object_mask, outline_verdict, unit
    row = measure_edit(scene, target, result.edits[0], result.reconstruction, clf)
    # a second opinion with a "none" answer (docs/world.md, "The shape judge, checked"); the classifier decides success
    row["outline"] = outline_verdict(object_mask(unit(result.edits[0]), unit(scenes.render(scene)[2])))
    out, stem = Path(a.out), f"scene{a.scene}-{a.task}"
    ideal = bench.to_model(scenes.render(scenes.with_shape(scene, target))[0])
    save_png(tensor_to_pil(result.edits[0]), out / f"{stem}.png")
    save_png(side_by_side([tensor_to_pil(x) for x in (result.image, result.reconstruction, result.edits[0], ideal)]),
             out / f"{stem}-side_by_side.png")
    # JSON has no NaN: a measure with nothing to measure (psnr_bg when the edit redrew the whole background) is null
    measured = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
    record = {"task": a.task, "scene": scene.to_dict(), "caption": scenes.caption(scene), "measured": measured,
              "edit_seconds": edit_seconds, "total_seconds": time.perf_counter() - start,
              "weights": a.weights, "settings": result.settings}
    with atomic_path(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, allow_nan=False))
    verdict = "edited" if row["success"] else "NOT edited"
    # psnr_bg is NaN when every pixel moved away from the true background (e.g. checks redrawn as another pattern)
    background = ("no background left unchanged to compare (the edit redrew it)" if math.isnan(row["psnr_bg"])
                  else f"background PSNR {row['psnr_bg']:.1f} dB")
    print(f"{scenes.caption(scene)}: {source} -> {target} {verdict} (classified {row['predicted']}; the outline judge: "
          f"{row['outline']}); {background}, "
          f"colour error {row['colour_error']:.0f}/255, centroid moved {row['centroid_error']:.1f} px; "
          f"edit {edit_seconds:.1f} s, total {record['total_seconds']:.1f} s")
    print(f"wrote {out / stem}.png, {stem}-side_by_side.png (input | reconstruction | edit | ideal), {stem}.json")
    return 0


def table_cells(rows: list[dict], metrics, group: str = "task", order=()) -> list[list[str]]:
    """[group, n, "mean [95% bootstrap interval]" per metric] per group (those named in `order` first, in its
    order) and over all rows; success in %."""
    from ..tools.evaluation.stats import summarize
    groups = {name: [] for name in order}
    for row in rows:
        groups.setdefault(row[group], []).append(row)
    groups = {name: members for name, members in groups.items() if members}
    groups["all"] = rows
    table = [[group, "n", *metrics]]
    for name, members in groups.items():
        cells = [name, str(len(members))]
        for m in metrics:
            s = summarize([r[m] for r in members], draws=2000)
            scale = 100 if m == "success" else 1
            cells.append(f"{scale * s.mean:.3g} [{scale * s.low:.3g}, {scale * s.high:.3g}]")
        table.append(cells)
    return table


def with_background(rows: list[dict]) -> list[dict]:
    """The rows with each scene's background kind, drawn again from its seed (a scene's background does not depend
    on the shape asked for or the object scale): for world-bench's table by background."""
    from . import scenes
    return [{**row, "background": scenes.sample_scene(int(row["seed"])).background} for row in rows]


def as_text(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(table[0]))]
    return "\n".join("".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in table)


def as_markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in table[1:]])


def write_csv(rows: list[dict], path: Path) -> None:
    from ..tools.files import atomic_path
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)


STRING_COLUMNS = ("task", "scene", "batch", "predicted", "stem", "input", "edit", "variant")


def read_csv(path: Path) -> list[dict]:
    """write_csv's rows back: the STRING_COLUMNS as text, the seed an int, every other column a float (an empty
    cell, a column the row lacked, is left out)."""
    with open(path, newline="") as f:
        return [{k: v if k in STRING_COLUMNS else int(v) if k == "seed" else float(v) for k, v in row.items() if v}
                for row in csv.DictReader(f)]


def made_with(a: argparse.Namespace) -> dict:
    """What every edit of a run depends on besides its variant's settings, flat. The CPU threads too: they change
    the order of float sums, so an edit made with other threads differs in its last bits."""
    import torch
    from ..tools.files import file_digest
    scale = {} if a.object_scale == 1 else {"object_scale": a.object_scale}  # runs before the option still resume
    return {"batch": a.batch, "device": a.device, "threads": torch.get_num_threads() if a.device == "cpu" else None,
            "dtype": a.dtype, "weights": file_digest(a.weights)[:16], "classifier": file_digest(a.classifier)[:16],
            **scale}


def earlier_edits(folder: Path, settings: dict) -> dict:
    """(task, seed) -> row of the edits a run with the same settings left in `folder` (none if it has none); a
    ValueError naming the settings that differ otherwise."""
    record, table = folder / "bench.json", folder / "edits.csv"
    if not record.is_file():
        if table.is_file():
            raise ValueError(f"{table}: these edits have no bench.json beside them saying how they were made, so "
                             "--resume cannot reuse them; use another --out, or leave out --resume to edit again")
        return {}
    before = json.loads(record.read_text())
    differ = [k for k in dict.fromkeys([*settings, *before]) if before.get(k) != settings.get(k)]
    if differ:
        raise ValueError(f"{record}: the edits in {folder} were made with other settings (" + ", ".join(
            f"{k} {before.get(k)!r}, now {settings.get(k)!r}" for k in differ) + "); use another --out, or leave "
            "out --resume to edit them again")
    return {(row["task"], row["seed"]): row for row in read_csv(table)} if table.is_file() else {}


def main_world_bench(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="train_free_edit.py world-bench",
                                formatter_class=HelpFormatter,
                                description="Edit held-out world scenes and measure them against the truth: a table "
                                            "with 95% bootstrap intervals, a CSV and a contact sheet.")
    p.add_argument("--tasks", nargs="+", default=["circle2square", "square2circle", "triangle2star", "star2triangle"],
                   help="SOURCE2TARGET tasks over circle, square, triangle, star")
    p.add_argument("--n", type=int, default=200, help="held-out scenes per task")
    p.add_argument("--out", default="outputs/world-bench", help="output folder")
    p.add_argument("--ablation", action="store_true", help="also run every variant of bench.VARIANTS on the same "
                                                            "scenes, paired against the defaults")
    p.add_argument("--variants", nargs="*", help="with --ablation: only these variant names")
    p.add_argument("--batch", type=int, default=16, help="scenes edited at once (the paper setting's loops on a "
                                                         "batch; results differ from one-at-a-time by the "
                                                         "regularizer's random draw)")
    p.add_argument("--resume", action="store_true", help="keep the edits an interrupted or smaller run with the "
                                                          "same settings left in --out (edits.csv, written after "
                                                          "every batch) and edit only the batches missing")
    world_args(p)
    a = p.parse_args(argv)
    from . import bench, scenes
    from ..tools.evaluation.sheet import contact_sheet
    from ..tools.files import atomic_path
    from ..tools.image import save_png, tensor_to_pil
    for task in a.tasks:
        bench.parse_task(task)
    if a.n < 1:
        p.error(f"--n must be at least 1, not {a.n}")
    check_object_scale(a)
    variants = [bench.Variant("defaults", sentences=a.sentences)]
    if a.ablation:
        known = {v.name: v for v in bench.VARIANTS}
        unknown = [v for v in a.variants or [] if v not in known]
        if unknown:
            p.error(f"unknown variants {unknown}; known: {list(known)}")
        variants = [known[v] for v in a.variants] if a.variants else bench.VARIANTS
        if variants[0].name != "defaults":
            variants = [known["defaults"], *variants]
    base = config_from(a)
    sd, clf = load_world(a)
    out, run = Path(a.out), made_with(a)
    plan = []  # every folder checked before the first edit: a refused --resume costs nothing
    for variant in variants:
        config = bench.variant_config(base, variant)
        folder = out / variant.name.split(" (")[0].replace(" ", "_")
        # bench.json: what the folder's edits depend on, compared by --resume
        settings = {"variant": variant.name, "sentences": variant.sentences, **run,
                    **{f"config.{k}": v for k, v in dataclasses.asdict(config).items()}}
        plan.append((variant, config, folder, settings, earlier_edits(folder, settings) if a.resume else {}))
    all_rows, markdown = {}, []
    for variant, config, folder, settings, done in plan:

        def save(row, result):
            stem = f"{row['task']}-{row['seed']}"
            row["stem"], row["input"], row["edit"] = stem, str(folder / f"{stem}-input.png"), str(folder / f"{stem}.png")
            row["variant"] = variant.name
            save_png(tensor_to_pil(result.image), row["input"])
            save_png(tensor_to_pil(result.edit), row["edit"])

        def keep(rows):
            """edits.csv, then bench.json (an interruption between the two leaves a pair --resume refuses or
            agrees with, never one it misreads); the earlier edits this run has not reached stay in the file."""
            measured = {(r["task"], r["seed"]) for r in rows}
            write_csv(rows + [r for key, r in done.items() if key not in measured], folder / "edits.csv")
            with atomic_path(folder / "bench.json") as tmp:
                tmp.write_text(json.dumps(settings, indent=2))

        start = time.perf_counter()
        rows = bench.run_bench(sd, clf, a.tasks, a.n, config, variant.sentences, on_edit=save, batch=a.batch,
                               done=done, on_batch=keep, object_scale=a.object_scale)
        reused = sum(1 for r in rows if done.get((r["task"], r["seed"])) is r)
        all_rows[variant.name] = rows
        seconds = time.perf_counter() - start
        print(f"\n{variant.name}: {len(rows)} edits ({reused} from an earlier run) in {seconds:.0f} s "
              f"(config {json.dumps(variant.changes)}, sentences {variant.sentences})")
        table = table_cells(rows, FAST_TABLE)
        backgrounds = table_cells(with_background(rows), FAST_TABLE, "background", scenes.BACKGROUNDS)
        print(as_text(table) + "\n\nby background:\n" + as_text(backgrounds))
        markdown.append(f"### {variant.name}\n\n{len(rows)} edits ({reused} from an earlier run), {seconds:.0f} s\n\n"
                        f"{as_markdown(table)}\n\nBy background:\n\n{as_markdown(backgrounds)}\n")
        keep(rows)
        # edits reused from an edits.csv copied without its PNGs (docs/world/grid-200 keeps only the tables)
        # are measured but cannot be shown
        pictured = [r for r in rows if Path(r["input"]).is_file() and Path(r["edit"]).is_file()]
        sheet = contact_sheet([{k: r[k] for k in ("stem", "input", "edit", "psnr_bg", "colour_error",
                                                   "centroid_error", "psnr_ideal")} for r in pictured],
                              folder / "contact-sheet.png")
        shown = sheet if len(pictured) == len(rows) else (f"{sheet or 'no contact sheet'} (the {len(pictured)} "
                                                          f"edits with PNGs here; {len(rows) - len(pictured)} "
                                                          "reused edits have none)")
        print(f"wrote {folder / 'edits.csv'}, {shown}")
        write_summary(out, argv, all_rows, markdown)  # after every variant: a long run keeps what it measured
    if len(variants) > 1:
        print(f"\n{ABLATION_TITLE}\n" + as_text(ablation_table(all_rows)))
    write_csv([r for rows in all_rows.values() for r in rows], out / "all-edits.csv")
    print(f"wrote {out / 'all-edits.csv'}, {out / 'summary.md'}")
    return 0


ABLATION_TITLE = "Ablation: mean (paired difference from the defaults [95% bootstrap interval])"


def ablation_table(all_rows: dict[str, list[dict]]) -> list[list[str]]:
    """One row per variant: each metric's mean and its paired difference from the defaults' rows (the same
    scenes) with a 95% bootstrap interval."""
    from . import bench
    from ..tools.evaluation.stats import paired_difference, summarize
    table = [["variant", *bench.ABLATION_METRICS]]
    reference = all_rows["defaults"]
    for name, rows in all_rows.items():
        cells = [name]
        for m in bench.ABLATION_METRICS:
            scale = 100 if m == "success" else 1
            mean = scale * summarize([r[m] for r in rows], draws=10).mean
            if name == "defaults":
                cells.append(f"{mean:.3g}")
                continue
            d = paired_difference([r[m] for r in reference], [r[m] for r in rows], draws=2000)
            cells.append(f"{mean:.3g} ({scale * d.mean:+.3g} [{scale * d.low:+.3g}, {scale * d.high:+.3g}])")
        table.append(cells)
    return table


def write_summary(out: Path, argv: list[str], all_rows: dict[str, list[dict]], markdown: list[str]) -> None:
    """summary.md: the command, the ablation table (once a variant besides the defaults has run), then each
    variant's table."""
    from ..tools.files import atomic_path
    head = [f"### {ABLATION_TITLE}\n\n{as_markdown(ablation_table(all_rows))}\n"] if len(all_rows) > 1 else []
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(f"`train_free_edit.py world-bench {shlex.join(argv)}`\n\n" + "\n".join(head + markdown))


if __name__ == "__main__":
    sys.exit(main_world_bench(sys.argv[1:]))
