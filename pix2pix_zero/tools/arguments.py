"""Argument builders and checks shared by the commands of the command line (cli.py: edit, directions, pie-bench,
world): the model flags and loading, one flag per EditConfig field, and where sentences come from. Models and
the modules that build them are imported inside the functions, so --help and argument errors load none.
"""
import argparse
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMMANDS_HELP = """commands (the first word; `COMMAND --help` for each):
  edit          edit images, folders, saved inversions or synthetic images (the default)
  directions    compute, save and list edit directions delta_c
  evaluate      measure edits against their inputs (CLIP, structure, background)
  pie-bench     run PIE-Bench's editing categories
  world         edit a scene of the generated-scenes world with its baby SD (offline)
  world-bench   measure the method on held-out scenes with ground truth
  app           the web app (pip install -e ".[app]")"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown once: not for flags whose default is None (their help says what None means) or whose help
    already names its default; descriptions and epilogs keep their line breaks."""

    def _get_help_string(self, action):
        if action.default is None or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--weights", help="checkpoint: a .safetensors file or diffusers folder (default: the one in "
                                     "weights/, else download CompVis/stable-diffusion-v1-4)")
    g.add_argument("--weights-dir", default="weights", help="where to look for checkpoints")
    g.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], help="override the checkpoint's")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the models run: cpu, cuda, cuda:N or mps (default: cuda if torch sees a GPU, else cpu)")
    g.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="UNet and text encoder (bf16: fast on "
                   "CPUs with AVX-512 BF16/AMX and on GPUs; fp16: GPUs only)")
    g.add_argument("--vae-dtype", choices=list(DTYPES), default="fp32", help="the VAE's (fp16 may overflow)")
    g.add_argument("--cache-dir", default=None, help="cache of sentences, mean embeddings and directions "
                                                     "(default: OUT/.cache, and outputs/.cache for directions)")


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


def load_model(a: argparse.Namespace, weights: Path):
    from pix2pix_zero import load_sd
    return load_sd(weights, device=a.device, dtype=DTYPES[a.dtype], prediction_type=a.prediction_type,
                   vae_dtype=DTYPES[a.vae_dtype])


DEFAULT_SIZE = 512  # --size of SD 1.x and 2.x base (the paper's)
NATIVE_SIZE = {"sdxl": 1024}  # SDXL base was trained at about one megapixel
V_MODEL_SIZE = 768  # SD 2.0-v and 2.1 (v-prediction) were trained at 768 px; at 512 they draw poorly


def native_size(family: str, prediction_type: str) -> int:
    """The image side a checkpoint was trained at: --size's default."""
    if family == "sd2" and prediction_type == "v_prediction":
        return V_MODEL_SIZE
    return NATIVE_SIZE.get(family, DEFAULT_SIZE)


def check_model_args(a: argparse.Namespace) -> Path:
    """Before anything loads: the device runs the dtypes, and the checkpoint is one this project reads (headers
    only). Returns the checkpoint's path."""
    from pix2pix_zero.loading.device import device_problem
    from pix2pix_zero.loading.hub import resolve_weights
    from pix2pix_zero.loading.load import checkpoint_prediction_type, read_layout
    for dtype in dict.fromkeys((a.dtype, a.vae_dtype)):
        if warning := device_problem(a.device, DTYPES[dtype]):
            print(f"warning: {warning}", file=sys.stderr)
    weights = resolve_weights(a.weights, a.weights_dir)
    layout = read_layout(weights)
    if getattr(a, "size", 0) is None:  # the edit command's --size: the checkpoint's own
        a.size = native_size(layout.family, checkpoint_prediction_type(layout, getattr(a, "prediction_type", None)))
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
