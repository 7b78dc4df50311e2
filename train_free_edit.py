#!/usr/bin/env python3
"""pix2pix-zero from the command line: edit real or synthetic images with no training and no prompt editing.

  python train_free_edit.py --input examples/cat.png --task cat2dog   (BLIP writes the caption)
  python train_free_edit.py --input cat.png --prompt "a photo of a cat" --source cat --target dog
  python train_free_edit.py --input photos/ --task cat2dog --sentences lm   (every image; sentences from Flan-T5)
  python train_free_edit.py --inversion outputs/cat-inversion.safetensors --source cat --target dog --target fox
  python train_free_edit.py --prompt "a cat sitting on a sofa" --source cat --target dog   (synthetic)
  python train_free_edit.py directions --source cat --target dog [--sentences lm] [--out cat2dog.safetensors]
  python train_free_edit.py directions --list

The first word picks the command (`edit`, the default, or `directions`). Every method flag maps onto one
field of pix2pix_zero.config.EditConfig; the README explains each and the two --setting choices.
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

COMMANDS = ("edit", "directions")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", help="checkpoint: a .safetensors file or diffusers folder (default: the one in "
                                     "weights/, else download CompVis/stable-diffusion-v1-4)")
    g.add_argument("--weights-dir", default="weights", help="where to look for checkpoints (default: weights)")
    g.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], help="override the checkpoint's")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--dtype", choices=list(DTYPES), default="fp32")
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
    g.add_argument("--size", type=int, default=512, help="longer image side (rounded to multiples of 64)")
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


def load_model(a: argparse.Namespace):
    from pix2pix_zero.loading.hub import resolve_weights
    from pix2pix_zero import load_sd
    return load_sd(resolve_weights(a.weights, a.weights_dir), device=a.device, dtype=DTYPES[a.dtype],
                   prediction_type=a.prediction_type)


def sentence_options(a: argparse.Namespace, p: argparse.ArgumentParser, progress: bool = True):
    from pix2pix_zero.tools.sentences import SentenceOptions
    if a.num_sentences < 1:
        p.error("--num-sentences must be at least 1")
    return SentenceOptions(a.sentences, a.lm, a.num_sentences, a.lm_seed, a.weights_dir, a.device, DTYPES[a.dtype],
                           progress)


def generate_sentences_first(a: argparse.Namespace, options, source: str, targets: list[str], cache_dir: str):
    """With --sentences lm, write the sentence files of every word without one before Stable Diffusion is
    loaded, so the language model and SD are never in memory together."""
    from pix2pix_zero.tools.sentences import generate_missing_sentences
    words = ([source] if a.source_sentences is None else []) + \
        [t for t, f in zip(targets, a.target_sentences or [None] * len(targets)) if f is None]
    if options.sentences == "lm" and words:
        generate_missing_sentences(words, options, cache_dir)


def main_edit(argv: list[str]) -> int:
    from pix2pix_zero.tools.batch import Job, input_images, output_stems, run
    from pix2pix_zero.config import EditConfig
    p = edit_parser()
    a = p.parse_args(argv)
    if not a.caption_only:
        source, targets = concepts(a, p)
    if a.input and a.inversion:
        p.error("give --input or --inversion, not both")
    if a.caption_only and not a.input:
        p.error("--caption-only needs --input")
    config = EditConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(EditConfig)})
    if a.input and Path(a.input).is_dir() and Path(a.input).resolve() == Path(a.out).resolve():
        p.error("--out must not be the input folder (the outputs would become inputs of the next run)")
    images = input_images(a.input) if a.input else [None]
    stems = output_stems(images) if a.input else {None: None}
    captions, caption_from = {image: a.prompt for image in images}, "--prompt"
    if a.input and (not a.prompt or a.caption_only):  # BLIP captions every image, then is released: SD comes next
        from pix2pix_zero.tools.captions import caption_files
        captions, caption_from = caption_files(images, stems, a.out, a.captioner, a.weights_dir, a.device,
                                               DTYPES[a.dtype], progress=not a.quiet)
        for image in images:
            print(f"{image}: caption \"{captions[image]}\" ({caption_from})")
    if a.caption_only:
        return 0
    options = sentence_options(a, p, not a.quiet)
    generate_sentences_first(a, options, source, targets, a.cache_dir or f"{a.out}/.cache")
    job = Job(source, targets, negative_prompt=a.negative_prompt, source_sentences=a.source_sentences,
              target_sentences=a.target_sentences, size=a.size, save_attention=a.save_attention,
              cache_dir=a.cache_dir or f"{a.out}/.cache", sentence_options=options)
    sd = load_model(a)
    for image in images:
        job_i = dataclasses.replace(job, prompt=captions[image], caption_from=caption_from)
        written = run(sd, job_i, config, a.out, image_path=image, inversion_path=a.inversion, stem=stems[image],
                      progress=not a.quiet)
        name = image or a.inversion or "synthetic"
        print(f"{name}: " + (", ".join(str(w) for w in written) if written else "already done (same settings)"))
    return 0


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
    generate_sentences_first(a, options, source, targets, cache_dir)
    sd = load_model(a)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else "edit"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    try:
        return {"edit": main_edit, "directions": main_directions}[command](rest)
    except (CheckpointError, FileNotFoundError, ValueError, PermissionError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
