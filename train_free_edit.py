#!/usr/bin/env python3
"""pix2pix-zero from the command line: edit real or synthetic images with no training and no prompt editing.

  python train_free_edit.py --input examples/cat.png --task cat2dog   (BLIP writes the caption)
  python train_free_edit.py --input cat.png --prompt "a photo of a cat" --source cat --target dog
  python train_free_edit.py --input photos/ --task cat2dog --sentences lm   (every image; sentences from Flan-T5)
  python train_free_edit.py --inversion outputs/cat-inversion.safetensors --source cat --target dog --target fox
  python train_free_edit.py --prompt "a cat sitting on a sofa" --source cat --target dog   (synthetic)
  python train_free_edit.py directions --source cat --target dog [--sentences lm] [--out cat2dog.safetensors]
  python train_free_edit.py directions --list
  python train_free_edit.py evaluate --input photos/ --edits outputs/ --source cat --target dog [--masks masks/]
  python train_free_edit.py pie-bench --data PIE-Bench_v1 --out pie-out [--categories 0-9] [--limit N]

The first word picks the command (`edit`, the default, `directions`, `evaluate` or `pie-bench`). Every method
flag maps onto one field of pix2pix_zero.config.EditConfig; the README explains each and the two --setting choices.
"""
import argparse
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

import torch

from pix2pix_zero.loading.checkpoint import CheckpointError

COMMANDS = ("edit", "directions", "evaluate", "pie-bench")
# Errors that end a run with exit status 2 and one line naming the problem (no traceback): bad arguments or
# files, a model that cannot load, an output folder that cannot be written.
ERRORS = (CheckpointError, ValueError, OSError, ConnectionError)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", help="checkpoint: a .safetensors file or diffusers folder (default: the one in "
                                     "weights/, else download CompVis/stable-diffusion-v1-4)")
    g.add_argument("--weights-dir", default="weights", help="where to look for checkpoints (default: weights)")
    g.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], help="override the checkpoint's")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="UNet and text encoder (bf16: fast on "
                   "CPUs with AVX-512 BF16/AMX and on GPUs; fp16: GPUs only)")
    g.add_argument("--vae-dtype", choices=list(DTYPES), default="fp32", help="the VAE's (fp16 may overflow)")
    g.add_argument("--cache-dir", default=None, help="cache of sentences, mean embeddings and directions "
                                                     "(default: OUT/.cache, and outputs/.cache for directions)")


def concept_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("edit direction")
    g.add_argument("--source", help="the word to change, e.g. cat")
    g.add_argument("--target", action="append", default=[], help="the word to change it to; repeat for several")
    g.add_argument("--task", help="shorthand SOURCE2TARGET, e.g. cat2dog")
    g.add_argument("--source-sentences", help="text file, one sentence a line, describing the source; or the "
                                              "authors' mean embedding of the word (.pt, (1, 77, D))")
    g.add_argument("--target-sentences", action="append", default=[], help="the same per --target")
    sentence_args(g)


def sentence_args(g) -> None:
    g.add_argument("--sentences", choices=["templates", "lm"], default="templates",
                   help="for words without a file: the built-in templates (offline), or a language model's")
    g.add_argument("--lm", default=None, help="language model for --sentences lm: flan-t5-large, flan-t5-xl, a hub id "
                                              "or a local folder (default: google/flan-t5-large)")
    g.add_argument("--num-sentences", type=int, default=1000, help="sentences per word from the language model")
    g.add_argument("--lm-seed", type=int, default=0, help="seed of the language model's sampling")


# Earlier spellings of EditConfig flags, kept working beside the field names.
ALIASES = {"num_steps": ["--steps"], "lambda_xa": ["--xa-guidance"], "num_reg_steps": ["--reg-steps"],
           "num_ac_rolls": ["--ac-rolls"]}


def field_comments(cls) -> dict[str, str]:
    """name -> the comment after a dataclass field's definition, read from the class's source."""
    comments = {}
    for line in inspect.getsource(cls).splitlines():
        if m := re.match(r"\s+(\w+): .*?  # (.*)$", line):
            comments[m[1]] = m[2]
    return comments


def config_args(p: argparse.ArgumentParser) -> None:
    """One flag per EditConfig field (--num-steps for num_steps, ...): type, default, choices and help come
    from the field, so a new hyperparameter needs no edit here."""
    from pix2pix_zero.config import EditConfig
    g = p.add_argument_group("method (pix2pix_zero.config.EditConfig)")
    comments = field_comments(EditConfig)
    for f in dataclasses.fields(EditConfig):
        kind, choices = f.type, None
        if typing.get_origin(kind) is typing.Literal:
            choices = [c for c in typing.get_args(kind) if c is not None]
            kind = type(choices[0])
        names = ["--" + f.name.replace("_", "-"), *ALIASES.get(f.name, [])]
        if kind is bool:  # --flag / --no-flag: argparse's type=bool would read "False" as True
            g.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                           help=comments.get(f.name, ""))
            continue
        g.add_argument(*names, dest=f.name, type=kind, choices=choices, default=f.default,
                       help=comments.get(f.name, ""))


def edit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_free_edit.py [edit]", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("input and output")
    g.add_argument("--input", help="an image file or a folder of images (omit for a synthetic image)")
    g.add_argument("--inversion", help="a saved STEM-inversion.safetensors to edit again without inverting")
    g.add_argument("--prompt", help="the caption c of the input (default: BLIP writes it), or the synthetic prompt")
    g.add_argument("--captioner", default="base", help="BLIP for captions: base, large, a hub id or a local folder "
                                                       "in transformers' layout")
    g.add_argument("--caption-only", action="store_true", help="print the captions of the inputs and stop")
    g.add_argument("--negative-prompt", help="default: the caption for real images, empty for synthetic")
    g.add_argument("--size", type=int, default=512, help="shorter image side; then each side is centre-cropped to a "
                   "multiple of 64, the longer side capped at 2 x size (README: size policy)")
    g.add_argument("--pad", action="store_true", help="pad each side to a multiple of 64 instead of cropping")
    g.add_argument("--shard", help="I/N: edit only shard I (0-based) of N of the sorted inputs (SLURM arrays, "
                                   "several machines); under torchrun the ranks shard by themselves")
    g.add_argument("--out", default="outputs", help="output folder")
    g.add_argument("--save-attention", action="store_true", help="save heat maps of the source word's attention")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    concept_args(p)
    config_args(p)
    model_args(p)
    return p


def directions_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_free_edit.py directions",
                                description="Compute delta_c = mean c(target sentences) - mean c(source sentences).")
    concept_args(p)
    p.add_argument("--out", help="also write delta_c to this .safetensors file")
    p.add_argument("--list", action="store_true", help="list the cached directions with their provenance")
    model_args(p)
    return p


def concepts(a: argparse.Namespace, p: argparse.ArgumentParser) -> tuple[str, list[str]]:
    if a.task:
        source, sep, target = a.task.partition("2")
        if not (sep and source and target):
            p.error(f"--task must look like SOURCE2TARGET (e.g. cat2dog), not {a.task!r}")
        if a.source and a.source != source:
            p.error(f"--task {a.task} and --source {a.source} disagree")
        a.source, a.target = source, [target, *a.target]
    if not a.source or not a.target:
        p.error("give --source and --target (or --task SOURCE2TARGET)")
    if a.target_sentences and len(a.target_sentences) != len(a.target):
        p.error("give one --target-sentences file per --target, or none")
    return a.source, a.target


def load_model(a: argparse.Namespace, weights: Path):
    from pix2pix_zero import load_sd
    return load_sd(weights, device=a.device, dtype=DTYPES[a.dtype], prediction_type=a.prediction_type,
                   vae_dtype=DTYPES[a.vae_dtype])


def check_model_args(a: argparse.Namespace) -> Path:
    """Before anything loads: the device runs the dtypes, and the checkpoint is one this project reads (headers
    only). Returns the checkpoint's path."""
    from pix2pix_zero.loading.device import device_problem
    from pix2pix_zero.loading.hub import resolve_weights
    from pix2pix_zero.loading.load import read_layout
    for dtype in dict.fromkeys((a.dtype, a.vae_dtype)):
        if warning := device_problem(a.device, DTYPES[dtype]):
            print(f"warning: {warning}", file=sys.stderr)
    weights = resolve_weights(a.weights, a.weights_dir)
    read_layout(weights)
    return weights


def sentence_options(a: argparse.Namespace, p: argparse.ArgumentParser, progress: bool = True):
    """Check the sentence arguments (files readable, UTF-8, not empty) and say where sentences come from."""
    from pix2pix_zero.tools.sentences import SentenceOptions, read_sentence_file
    if a.num_sentences < 1:
        p.error("--num-sentences must be at least 1")
    for file in [a.source_sentences, *a.target_sentences]:
        if file is not None and Path(file).suffix != ".pt":  # .pt: a mean embedding, checked against the model
            read_sentence_file(file)
        elif file is not None and not Path(file).is_file():
            raise FileNotFoundError(f"{file}: no such mean-embedding file")
    return SentenceOptions(a.sentences, a.lm, a.num_sentences, a.lm_seed, a.weights_dir, a.device, DTYPES[a.dtype],
                           progress)


def main_edit(argv: list[str]) -> int:
    """Check every argument, then edit each input (tools.folder.edit_inputs) and write the summary. Returns the
    exit status: 0 all done, 1 some inputs failed, 2 a usage or model error (raised, see main)."""
    import time

    from pix2pix_zero.config import EditConfig
    from pix2pix_zero.tools import distributed, folder
    from pix2pix_zero.tools.batch import Job
    p = edit_parser()
    a = p.parse_args(argv)
    if not a.caption_only:
        source, targets = concepts(a, p)
    if a.input and a.inversion:
        p.error("give --input or --inversion, not both")
    if a.caption_only and not a.input:
        p.error("--caption-only needs --input")
    if a.size <= 0 or a.size % 8:
        p.error(f"--size must be a positive multiple of 8 (e.g. 512), not {a.size}")
    config = EditConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(EditConfig)})
    rank = distributed.current_rank(a.shard)
    a.device = distributed.rank_device(a.device, rank)
    images = folder.input_images(a.input) if a.input else [None]
    stems = folder.output_stems(images) if a.input else {None: None}
    if a.caption_only:
        from pix2pix_zero.tools.captions import caption_files
        good, bad = folder.usable_images(images, a.size, a.pad)
        for reason in bad.values():
            print(f"error: {reason}", file=sys.stderr)
        captions, name = caption_files(good, stems, a.out, a.captioner, a.weights_dir, a.device, DTYPES[a.dtype],
                                       progress=not a.quiet) if good else ({}, "")
        for image in good:
            print(f"{image}: caption \"{captions[image]}\" ({name})")
        return folder.EXIT_SOME_FAILED if bad else folder.EXIT_DONE
    folder.check_output_folder(a.out, a.input)
    options = sentence_options(a, p, not a.quiet)
    weights = check_model_args(a)
    job = Job(source, targets, prompt=a.prompt, negative_prompt=a.negative_prompt, source_sentences=a.source_sentences,
              target_sentences=a.target_sentences, size=a.size, pad=a.pad, save_attention=a.save_attention,
              cache_dir=a.cache_dir or f"{a.out}/.cache", sentence_options=options)
    captioner = None if a.prompt or not a.input else \
        {"spec": a.captioner, "weights_dir": a.weights_dir, "device": a.device, "dtype": DTYPES[a.dtype]}
    mine = folder.shard(images, rank.index, rank.count)
    distributed.start(rank, a.device)
    start = time.perf_counter()
    try:
        outcomes = folder.edit_inputs(mine, stems, job, config, a.out, lambda: load_model(a, weights), a.inversion,
                                      captioner, progress=not a.quiet)
        record = folder.summary_record(outcomes, (rank.index, rank.count), time.perf_counter() - start)
    except ERRORS as e:
        if not rank.torchrun:
            raise
        print(f"error: rank {rank.index}: {e}", file=sys.stderr)  # the other ranks go on; the summary says why
        record = folder.summary_record([folder.Outcome(str(i), stems[i], "failed", f"rank {rank.index}: {e}")
                                        for i in mine], (rank.index, rank.count))
        record["exit_status"] = folder.EXIT_USAGE
    written = folder.write_summary(record, folder.summary_path(a.out, (rank.index, rank.count)))
    if rank.torchrun:
        records = distributed.gather_json(record, rank)
        if records is not None:
            record = folder.merge_summaries(records)
            written = folder.write_summary(record, folder.summary_path(a.out))
        distributed.finish()
    elif rank.count > 1:
        written = folder.merge_shard_files(a.out, rank.count) or written
    if rank.index == 0 or not rank.torchrun:
        folder.report(record)
        print(f"summary: {written}")
    return record["exit_status"]


def list_directions(cache_dir: str) -> int:
    from pix2pix_zero.tools.sentences import cached_directions
    found = cached_directions(cache_dir)
    if not found:
        print(f"no cached directions in {cache_dir}/directions/")
    for path, meta in found:
        if "damaged" in meta or "source" not in meta:
            print(f"{path}: damaged (rebuilt on next use)")
            continue
        print(f"{path}: {meta['source']} -> {meta['target']}, |delta_c| {meta['norm']}, cosine {meta['cosine']}, "
              f"text encoder {meta['text_encoder']}\n"
              f"    {meta['source']}: {meta['source_count']} sentences, {meta['source_origin']}\n"
              f"    {meta['target']}: {meta['target_count']} sentences, {meta['target_origin']}")
    return 0


def main_directions(argv: list[str]) -> int:
    from safetensors.torch import save_file

    from pix2pix_zero.tools.files import atomic_path
    from pix2pix_zero.tools.sentences import word_direction
    p = directions_parser()
    a = p.parse_args(argv)
    cache_dir = a.cache_dir or "outputs/.cache"
    if a.list:
        return list_directions(cache_dir)
    source, targets = concepts(a, p)
    if len(targets) != 1:
        p.error("directions takes one --target")
    options = sentence_options(a, p)
    weights = check_model_args(a)
    if options.sentences == "lm":
        from pix2pix_zero.tools.sentences import generate_missing_sentences
        words = ([source] if a.source_sentences is None else []) + ([] if a.target_sentences else targets)
        if words:
            generate_missing_sentences(words, options, cache_dir)
    sd = load_model(a, weights)
    sentences = a.target_sentences[0] if a.target_sentences else None
    d = word_direction(sd, source, targets[0], a.source_sentences, sentences, cache_dir, options)
    for word, side in ((source, d.source), (targets[0], d.target)):
        count = "a mean embedding" if side.count is None else f"{side.count} sentences"
        print(f"{word}: {count} from {side.origin}")
    print(f"|delta_c| = {d.norm:.4f}   cos(mean c({source}), mean c({targets[0]})) = {d.cosine:.4f}")
    print(f"cached: {d.path}")
    if a.out:
        out = Path(a.out)
        with atomic_path(out) as tmp:
            save_file({"delta_c": d.delta_c.contiguous().cpu()}, tmp,
                      metadata={"source": source, "target": targets[0], "checkpoint": sd.identity})
        print(f"{out}: delta_c {tuple(d.delta_c.shape)} for {source} -> {targets[0]}")
    return 0


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
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    p.add_argument("--csv", help="one CSV of every row, instead of evaluation.csv in each --edits folder")
    p.add_argument("--weights-dir", default="weights", help="where models are looked for and downloaded")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluation_args(p)
    return p


def main_evaluate(argv: list[str]) -> int:
    """Pair, score, write the CSV and the contact sheet, print the summary (and the comparison). Exit status 1
    when some images could not be scored."""
    from pix2pix_zero.tools.evaluation import evaluate, report, sheet
    p = evaluate_parser()
    a = p.parse_args(argv)
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
    for folder in a.edits:
        rows, problems = evaluate.evaluate_folder(a.input, folder, models, options, progress=not a.quiet,
                                                  log=lambda line: print(line, file=sys.stderr))
        failed |= bool(problems)
        runs[folder] = rows
        if not a.csv:
            print(f"rows: {report.write_csv(rows, Path(folder) / 'evaluation.csv')}")
        if written := sheet.contact_sheet(rows, Path(folder) / "evaluation-sheet.png"):
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
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    from pix2pix_zero.config import EditConfig
    from pix2pix_zero.tools import folder
    from pix2pix_zero.tools.batch import Job
    from pix2pix_zero.tools.evaluation import evaluate, pie_bench, report
    p = pie_bench_parser()
    a = p.parse_args(argv)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else "edit"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    try:
        return {"edit": main_edit, "directions": main_directions, "evaluate": main_evaluate,
                "pie-bench": main_pie_bench}[command](rest)
    except ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
