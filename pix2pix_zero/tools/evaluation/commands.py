"""The `evaluate` and `pie-bench` commands of train_free_edit.py: their parsers and mains, from arguments to
evaluate.py (a folder of edits) and pie_bench.py (the benchmark). The model, method and sentence flags come
from tools/arguments.py; the models are imported inside the mains, so --help and argument errors stay fast.
"""
import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from pix2pix_zero.tools.arguments import (HelpFormatter, check_model_args, config_args, load_model, model_args,
                                          sentence_args, sentence_options)


def evaluation_args(p: argparse.ArgumentParser) -> None:
    """The scoring models and modes, shared by evaluate and pie-bench."""
    g = p.add_argument_group("evaluation models (tools/evaluation)")
    g.add_argument("--clip", help="a CLIP folder in transformers' layout (or hub id) for every CLIP metric (default: "
                                  "openai/clip-vit-base-patch32 for CLIP-Acc, openai/clip-vit-large-patch14 for the "
                                  "CLIP score, from --weights-dir or downloaded there)")
    g.add_argument("--dino", help="a DINO ViT folder in transformers' layout (or hub id) for the structure distance "
                                  "(default: facebook/dino-vitb8)")
    g.add_argument("--lpips", choices=["auto", "lpips", "torchmetrics", "off"], default="auto",
                   help="LPIPS, optional: the lpips package (AlexNet) or torchmetrics (SqueezeNet), if installed")
    g.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap intervals")


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_free_edit.py evaluate", description="Score edits against their inputs: "
                                "CLIP-Acc, CLIP score, structure distance, background and reconstruction fidelity.",
                                formatter_class=HelpFormatter)
    p.add_argument("--input", required=True, help="the image file or folder that was edited")
    p.add_argument("--edits", action="append", required=True, help="a folder of edits (the edit command's --out); "
                   "repeat to compare several side by side (differences against the first)")
    p.add_argument("--source", required=True, help="the edited word, as given to the edit")
    p.add_argument("--target", required=True, help="the word it was changed to")
    p.add_argument("--masks", help="a folder of masks named like the inputs (STEM.png, white = edited)")
    p.add_argument("--attention-masks", action="store_true", help="masks from the edits' saved attention maps "
                   "(STEM-attention-SOURCE-map.png, written by --save-attention; edited where >= 0.5 of the peak)")
    p.add_argument("--mask-mode", choices=["pie", "exact"], default="pie", help="pie: edited pixels zeroed in both "
                   "images, whole frame (PIE-Bench); exact: edited pixels left out")
    p.add_argument("--structure-mode", choices=["splice", "pie"], default="splice", help="DINO preprocessing: splice "
                   "(the original, [0, 1] pixels) or pie (PIE-Bench's 0..255)")
    p.add_argument("--csv", help="one CSV of every row, instead of evaluation-SOURCE2TARGET.csv in each --edits folder")
    p.add_argument("--weights-dir", default="weights", help="where models are looked for and downloaded")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluation_args(p)
    return p


def main_evaluate(argv: list[str]) -> int:
    """Pair, score, write the CSV and the contact sheet, print the summary (and the comparison). Exit status 1
    when some images could not be scored."""
    p = evaluate_parser()
    a = p.parse_args(argv)
    from pix2pix_zero.tools.evaluation import evaluate, report, sheet
    if a.masks and a.attention_masks:
        p.error("give --masks or --attention-masks, not both")
    if a.masks and not Path(a.masks).is_dir():
        raise FileNotFoundError(f"{a.masks}: no such mask folder (--masks)")
    for folder in a.edits:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder}: no such folder of edits (--edits)")
    evaluate.pair_edits(a.input, a.edits[0], a.source, a.target)  # the inputs are readable
    paths = evaluate.resolve_models(a.clip, a.dino, a.weights_dir)
    models = evaluate.load_models(paths, a.device, a.lpips)
    if models.lpips_note:
        print(f"note: {models.lpips_note}")
    options = evaluate.Options(a.source, a.target, a.masks, a.attention_masks, a.mask_mode, a.structure_mode)
    runs, failed = {}, False
    task = f"{a.source}2{a.target}"  # one file per task: evaluating another target keeps this one's
    for folder in a.edits:
        rows, problems = evaluate.evaluate_folder(a.input, folder, models, options, progress=not a.quiet,
                                                  log=lambda line: print(line, file=sys.stderr))
        failed |= bool(problems)
        runs[folder] = rows
        if not a.csv:
            print(f"rows: {report.write_csv(rows, Path(folder) / f'evaluation-{task}.csv')}")
        if written := sheet.contact_sheet(rows, Path(folder) / f"evaluation-sheet-{task}.png"):
            print(f"contact sheet: {written}")
        print(report.format_summary(report.summaries(rows, a.bootstrap_seed), f"\n{folder}: {len(rows)} images"))
    if a.csv:
        print(f"rows: {report.write_csv([row for rows in runs.values() for row in rows], a.csv)}")
    if len(runs) > 1:
        print("\n" + report.format_comparison(runs, a.bootstrap_seed))
    return 1 if failed else 0


def pie_bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_free_edit.py pie-bench", description="Edit PIE-Bench with pix2pix-zero, "
                                "write the edits where its evaluator reads them, and score them per category.",
                                formatter_class=HelpFormatter)
    g = p.add_argument_group("benchmark")
    g.add_argument("--data", required=True, help="the PIE-Bench folder: mapping_file.json and annotation_images/")
    g.add_argument("--out", required=True, help="output folder (edits/, output/METHOD/annotation_images/, "
                                                "pie-bench.csv); a rerun resumes")
    g.add_argument("--categories", default="0-9", help="editing_type_id values to run, e.g. 0-9 or 1,3")
    g.add_argument("--limit", type=int, help="at most this many items (after --categories), for a quick look")
    g.add_argument("--direction", choices=["words", "prompt-pair"], default="words", help="words: sentences about "
                   "blended_word's two words (--sentences); prompt-pair: the item's two prompts (as PIE-Bench ran "
                   "pix2pix-zero)")
    g.add_argument("--size", type=int, default=512, help="shorter image side (PIE-Bench's images are 512 x 512)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    sentence_args(p.add_argument_group("sentences (--direction words)"))
    evaluation_args(p)
    config_args(p)
    model_args(p)
    return p


def main_pie_bench(argv: list[str]) -> int:
    """Check everything (arguments, data, models' files) before loading a model; edit; score; report."""
    p = pie_bench_parser()
    a = p.parse_args(argv)
    from pix2pix_zero.config import EditConfig
    from pix2pix_zero.tools import folder
    from pix2pix_zero.tools.batch import Job
    from pix2pix_zero.tools.evaluation import evaluate, pie_bench, report
    a.source_sentences, a.target_sentences = None, []  # sentence_options' fields: words come from the data
    if a.limit is not None and a.limit < 1:
        p.error("--limit must be at least 1")
    if a.size <= 0 or a.size % 8:
        p.error(f"--size must be a positive multiple of 8 (e.g. 512), not {a.size}")
    if Path(a.out).resolve() == Path(a.data).resolve():
        raise ValueError(f"--out {a.out} is the --data folder: the benchmark is never written into; choose another")
    config = EditConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(EditConfig)})
    items = pie_bench.select(pie_bench.read_mapping(a.data), pie_bench.parse_categories(a.categories), a.limit)
    if not items:
        raise ValueError(f"{a.data}: no items in categories {a.categories}")
    folder.check_output_folder(a.out, None)
    options = sentence_options(a, p, not a.quiet)
    paths = evaluate.resolve_models(a.clip, a.dino, a.weights_dir)  # before an hour of editing
    weights = check_model_args(a)
    cache = a.cache_dir or f"{a.out}/.cache"
    if a.direction == "words" and options.sentences == "lm":
        from pix2pix_zero.tools.sentences import generate_missing_sentences
        words = sorted({w for item in items if (pair := item.words()) for w in pair})
        generate_missing_sentences(words, options, cache)

    def make_job(source, target, caption, source_file, target_file):
        return Job(source, [target], prompt=caption, source_sentences=str(source_file) if source_file else None,
                   target_sentences=[str(target_file)] if target_file else [], size=a.size, cache_dir=cache,
                   sentence_options=options)
    log_error = lambda line: print(line, file=sys.stderr)  # noqa: E731
    results = pie_bench.edit_items(items, a.data, a.out, make_job, config, lambda: load_model(a, weights),
                                   a.direction, not a.quiet, log_error=log_error)
    folder.release_memory()
    models = evaluate.load_models(paths, a.device, a.lpips)
    if models.lpips_note:
        print(f"note: {models.lpips_note}")
    rows = pie_bench.score_items(items, a.data, results, models,
                                 lambda s, t: evaluate.Options(s, t, mask_mode="pie", structure_mode="pie"),
                                 not a.quiet)
    print(f"rows: {report.write_csv(rows, Path(a.out) / 'pie-bench.csv')}")
    print(f"edits for PnPInversion's evaluator: {pie_bench.evaluator_root(a.out, config.inversion_method)}")
    scored = [row for row in rows if row["status"] == "done"]
    if scored:
        print(pie_bench.means_table(pie_bench.category_tables(scored, a.bootstrap_seed)))
        print(report.format_summary(report.summaries(scored, a.bootstrap_seed), "\nall categories"))
    failures = [row for row in rows if row["status"] != "done"]
    print(f"{len(scored)} scored, {len(failures)} failed")
    for row in failures:
        print(f"  failed: item {row['key']}: {row['reason']}")
    return 1 if failures else 0
