"""pix2pix-zero from the command line: edit real or synthetic images with no training and no prompt editing.

`pix2pix-zero ...` (the console script) and `python train_free_edit.py ...` run this module's `main`.

  python train_free_edit.py --input examples/cat.png --task cat2dog   (BLIP writes the caption)
  python train_free_edit.py --input cat.png --prompt "a photo of a cat" --source cat --target dog
  python train_free_edit.py --input photos/ --task cat2dog --sentences lm   (every image; sentences from Flan-T5)
  python train_free_edit.py --inversion outputs/cat-inversion.safetensors --source cat --target dog --target fox
  python train_free_edit.py --prompt "a cat sitting on a sofa" --source cat --target dog   (synthetic)
  python train_free_edit.py directions --source cat --target dog [--sentences lm] [--out cat2dog.safetensors]
  python train_free_edit.py directions --list
  python train_free_edit.py evaluate --input photos/ --edits outputs/ --source cat --target dog [--masks masks/]
  python train_free_edit.py pie-bench --data PIE-Bench_v1 --out pie-out [--categories 0-9] [--limit N]
  python train_free_edit.py world --task circle2square   (the baby SD of the generated-scenes world, offline)
  python train_free_edit.py world-bench --tasks circle2square square2circle --n 200 [--ablation]
  python train_free_edit.py app   (the web app on the baby SD; --weights for Stable Diffusion)

The first word picks the command (`edit`, the default, `directions`, `evaluate`, `pie-bench`, `world`,
`world-bench` or `app`). Every method flag maps onto one field of pix2pix_zero.config.EditConfig; docs/ explains
each and the two --setting choices.
"""
import argparse
import dataclasses
import sys
from pathlib import Path

from pix2pix_zero.loading.checkpoint import CheckpointError
from pix2pix_zero.tools.arguments import (COMMANDS_HELP, DEFAULT_SIZE, DTYPES, HelpFormatter, check_model_args,
                                          config_args, load_model, model_args, sentence_args, sentence_options)
from pix2pix_zero.tools.evaluation.commands import main_evaluate, main_pie_bench
from pix2pix_zero.world.commands import main_world, main_world_bench

COMMANDS = ("edit", "directions", "evaluate", "pie-bench", "world", "world-bench", "app")
# Errors that end a run with exit status 2 and one line naming the problem (no traceback): bad arguments or
# files, a model that cannot load, an output folder that cannot be written.
ERRORS = (CheckpointError, ValueError, OSError, ConnectionError)


def concept_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("edit direction")
    g.add_argument("--source", help="the word to change, e.g. cat")
    g.add_argument("--target", action="append", default=[], help="the word to change it to; repeat for several")
    g.add_argument("--task", help="shorthand SOURCE2TARGET, e.g. cat2dog")
    g.add_argument("--source-sentences", help="text file, one sentence a line, describing the source; or the "
                                              "authors' mean embedding of the word (.pt, (1, 77, D))")
    g.add_argument("--target-sentences", action="append", default=[], help="the same per --target")
    sentence_args(g)


def edit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_free_edit.py [edit]", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter, epilog=COMMANDS_HELP)
    g = p.add_argument_group("input and output")
    g.add_argument("--input", help="an image file or a folder of images (omit for a synthetic image)")
    g.add_argument("--inversion", help="a saved STEM-inversion.safetensors to edit again without inverting")
    g.add_argument("--prompt", help="the caption c of the input (default: BLIP writes it), or the synthetic prompt")
    g.add_argument("--captioner", default="base", help="BLIP for captions: base, large, a hub id or a local folder "
                                                       "in transformers' layout")
    g.add_argument("--caption-only", action="store_true", help="print the captions of the inputs and stop")
    g.add_argument("--negative-prompt", help="default: the caption for real images, empty for synthetic")
    g.add_argument("--size", type=int, help="shorter image side (default: the checkpoint's: 1024 for SDXL, 768 for "
                   "SD 2.x v-models, else 512); then each side is centre-cropped to a multiple of 64, the longer side "
                   "capped at 2 x size (docs/images.md: size policy)")
    g.add_argument("--pad", action="store_true", help="pad each side to a multiple of 64 instead of cropping")
    g.add_argument("--shard", help="I/N: edit only shard I (0-based) of N of the sorted inputs (SLURM arrays, "
                                   "several machines); under torchrun the ranks shard by themselves")
    g.add_argument("--out", default="outputs", help="output folder")
    g.add_argument("--overwrite", action="store_true", help="replace edits made in --out under the same names with "
                                                            "other settings (without it such a run stops and says so)")
    g.add_argument("--save-attention", action="store_true", help="save heat maps of the source word's attention")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    concept_args(p)
    p.add_argument("--direction", action="append", default=[], metavar="FILE",
                   help="delta_c from `directions --out FILE`, one per --target, instead of sentences")
    config_args(p)
    model_args(p)
    return p


def directions_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_free_edit.py directions",
                                description="Compute delta_c = mean c(target sentences) - mean c(source sentences).")
    concept_args(p)
    p.add_argument("--out", help="also write delta_c to this .safetensors file (a folder with several --target), "
                                 "for `edit --direction`")
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


def given(p: argparse.ArgumentParser, argv: list[str], dest: str) -> bool:
    """Whether the command line set `dest` itself (any of its spellings, also as --flag=value)."""
    options = [o for action in p._actions if action.dest == dest for o in action.option_strings]
    return any(arg == o or arg.startswith(o + "=") for o in options for arg in argv)


def inversion_settings(a: argparse.Namespace, p: argparse.ArgumentParser, argv: list[str]) -> None:
    """A saved inversion fixes the steps, the prediction type and the inversion method: take them from the file;
    a flag that names another value is refused."""
    from pix2pix_zero.tools.inversion_file import Inversion
    stored = Inversion.load(a.inversion).settings
    for dest, key in (("num_steps", "num_steps"), ("inversion_method", "inversion_method"),
                      ("prediction_type", "prediction_type")):
        if key not in stored:
            continue
        if given(p, argv, dest) and getattr(a, dest) != stored[key]:
            p.error(f"--inversion {a.inversion} was made with {key} {stored[key]}, not {getattr(a, dest)}: drop the "
                    f"flag (the file's value is used) or invert again")
        setattr(a, dest, stored[key])


def main_edit(argv: list[str]) -> int:
    """Check every argument, then edit each input (tools.folder.edit_inputs) and write the summary. Returns the
    exit status: 0 all done, 1 some inputs failed, 2 a usage or model error (raised, see main)."""
    import time

    from pix2pix_zero.config import EditConfig
    p = edit_parser()
    a = p.parse_args(argv)  # --help ends here, before the modules below load the model code
    from pix2pix_zero.tools import distributed, folder
    from pix2pix_zero.tools.batch import Job
    if not a.caption_only:
        source, targets = concepts(a, p)
    if a.direction and not a.caption_only and (len(a.direction) != len(targets) or a.target_sentences):
        p.error("give one --direction file per --target (and no --target-sentences: a direction replaces them)")
    for file in a.direction:
        if not Path(file).is_file():
            p.error(f"--direction {file}: no such file (make one with `directions --source WORD --target WORD "
                    "--out FILE`)")
    if a.input and a.inversion:
        p.error("give --input or --inversion, not both")
    if a.caption_only and not a.input:
        p.error("--caption-only needs --input")
    if a.size is not None and (a.size <= 0 or a.size % 8):
        p.error(f"--size must be a positive multiple of 8 (e.g. 512), not {a.size}")
    if a.inversion:
        inversion_settings(a, p, argv)
    config = EditConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(EditConfig)})
    rank = distributed.current_rank(a.shard)
    a.device = distributed.rank_device(a.device, rank)
    images = folder.input_images(a.input) if a.input else [None]
    stems = folder.output_stems(images) if a.input else {None: None}
    if a.caption_only:
        from pix2pix_zero.tools.captions import caption_files
        good, bad = folder.usable_images(images, a.size or DEFAULT_SIZE, a.pad)
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
              target_sentences=a.target_sentences, direction_files=a.direction, overwrite=a.overwrite, size=a.size, pad=a.pad, save_attention=a.save_attention,
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
    # only a run over a folder (or its shards) writes summary.json: one image's run must not replace a folder's
    many = (a.input is not None and Path(a.input).is_dir()) or rank.count > 1
    record, written = folder.finish_summary(record, a.out, rank) if many else (record, None)
    if rank.index == 0 or not rank.torchrun:
        folder.report(record)
        if written is not None:
            print(f"summary: {written}")
    return record["exit_status"]


def main_directions(argv: list[str]) -> int:
    p = directions_parser()
    a = p.parse_args(argv)
    from pix2pix_zero.tools.sentences import generate_missing_sentences, print_cached_directions, word_direction, \
        write_direction
    cache_dir = a.cache_dir or "outputs/.cache"
    if a.list:
        return print_cached_directions(cache_dir)
    source, targets = concepts(a, p)
    if a.out and len(targets) > 1 and Path(a.out).suffix:
        p.error(f"--out {a.out}: with several targets --out is a folder (one SOURCE2TARGET.safetensors each)")
    options = sentence_options(a, p)
    weights = check_model_args(a)
    if options.sentences == "lm":
        words = ([source] if a.source_sentences is None else []) + ([] if a.target_sentences else targets)
        if words:
            generate_missing_sentences(words, options, cache_dir)
    sd = load_model(a, weights)
    for i, target in enumerate(targets):
        sentences = a.target_sentences[i] if a.target_sentences else None
        d = word_direction(sd, source, target, a.source_sentences, sentences, cache_dir, options)
        for word, side in ((source, d.source), (target, d.target)):
            count = "a mean embedding" if side.count is None else f"{side.count} sentences"
            print(f"{word}: {count} from {side.origin}")
        print(f"|delta_c| = {d.norm:.4f}   cos(mean c({source}), mean c({target})) = {d.cosine:.4f}")
        print(f"cached: {d.path}")
        if a.out:
            out = Path(a.out) / f"{source}2{target}.safetensors" if len(targets) > 1 else Path(a.out)
            write_direction(out, d, source, target, sd.identity)
            print(f"{out}: delta_c {tuple(d.delta_c.shape)} for {source} -> {target} (edit with --direction {out})")
    return 0


def main_app(argv: list[str]) -> int:
    """The web app; Gradio is an optional extra, imported only here."""
    try:
        from pix2pix_zero.tools.app import main_app as app
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "gradio":
            print('error: the app needs Gradio: pip install -e ".[app]"', file=sys.stderr)
            return 2
        raise
    return app(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else "edit"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    try:
        return {"edit": main_edit, "directions": main_directions, "evaluate": main_evaluate,
                "pie-bench": main_pie_bench, "world": main_world, "world-bench": main_world_bench,
                "app": main_app}[command](rest)
    except ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # 128 + SIGINT, as a shell reports it
        resume = {"edit": " (edits and inversions already written are whole and are skipped: run the same command "
                          "again to go on)",
                  "world-bench": " (every batch measured is in edits.csv: run the same command with --resume to "
                                 "go on)"}.get(command, "")
        print(f"\ninterrupted: nothing half-written is left{resume}", file=sys.stderr)
        return 130
