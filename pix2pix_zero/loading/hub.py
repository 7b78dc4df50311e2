"""Finding the checkpoint to use: --weights, else the one checkpoint in weights/, else the paper's model; and
the same for the transformers models around the method (BLIP captioner, language model): resolve_pretrained.

The paper's model, CompVis/stable-diffusion-v1-4, is downloaded with huggingface_hub (safetensors and
configs only, progress shown) into weights/stable-diffusion-v1-4 when nothing is there and the network is
reachable. Offline, or without the licence accepted, the error says what to do.
"""
from pathlib import Path

PAPER_MODEL = "CompVis/stable-diffusion-v1-4"
DOWNLOAD_FILES = ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                  "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                  "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/*"]


def checkpoints_in(folder: Path) -> list[Path]:
    """The checkpoints directly inside `folder`: weight files and diffusers folders (with unet/). Pickled files
    are listed too, so that loading one explains how to convert it instead of downloading another model."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p.is_file() and p.suffix in (".safetensors", ".ckpt", ".pt", ".bin"))
                  or (p.is_dir() and (p / "unet").is_dir()))


def resolve_weights(weights: str | None, weights_dir: str | Path = "weights", download: bool = True) -> Path:
    """The checkpoint path to load, following the rule in this module's docstring."""
    if weights:
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint file or folder (--weights)")
        return path
    folder = Path(weights_dir)
    found = checkpoints_in(folder)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        listing = "\n".join(f"  {p}" for p in found)
        raise ValueError(f"{folder}/ holds {len(found)} checkpoints; choose one with --weights:\n{listing}")
    if not download:
        raise FileNotFoundError(f"no checkpoint in {folder}/ and downloading is off; see {folder}/README.md")
    return download_paper_model(folder / "stable-diffusion-v1-4")


def download_paper_model(target: Path) -> Path:
    """Download SD 1.4 (safetensors only) into `target`, with a clear message when that is impossible."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    manual = (f"Place a Stable Diffusion 1.x/2.x checkpoint in {target.parent}/: a single .safetensors file such "
              f"as v1-5-pruned-emaonly.safetensors, or a diffusers folder of {PAPER_MODEL} holding "
              f"{', '.join(DOWNLOAD_FILES)}; or pass --weights PATH. See {target.parent}/README.md. Offline right "
              "now: `train_free_edit.py world --task circle2square` edits with the shipped baby SD.")
    print(f"No checkpoint in {target.parent}/: downloading {PAPER_MODEL} (safetensors only, ~2.7 GB) to {target}")
    try:
        snapshot_download(PAPER_MODEL, local_dir=target, allow_patterns=DOWNLOAD_FILES)
    except GatedRepoError:
        raise PermissionError(f"{PAPER_MODEL} needs its licence accepted: open its page on the Hugging Face Hub, "
                              "accept the licence, then log in with `hf auth login`.\n" + manual) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise PermissionError(f"{PAPER_MODEL}: access refused ({status}); accept the licence on its Hugging "
                                  "Face page and log in with `hf auth login`.\n" + manual) from None
        raise ConnectionError(f"downloading {PAPER_MODEL} failed ({e}).\n" + manual) from None
    except (LocalEntryNotFoundError, OSError) as e:
        raise ConnectionError(f"cannot download {PAPER_MODEL}: offline or unreachable ({type(e).__name__}).\n"
                              + manual) from None
    return target


def resolve_pretrained(spec: str, aliases: dict[str, str], weights_dir: str | Path, files: list[str],
                       flag: str, download: bool = True, instead: str = "") -> Path:
    """The folder of a transformers model (BLIP, the language model): `spec` is an alias ("base"), a local
    folder, or a hub id ("google/flan-t5-large") looked for in weights_dir/NAME and else downloaded there.
    `files` names the files the model needs besides its weights, for the message when it cannot download;
    `instead`, how to do without the model, ends that message."""
    repo = aliases.get(spec, spec)
    path = Path(repo)
    if path.is_dir():
        return path
    if repo.count("/") != 1 or path.exists() or repo.startswith((".", "/")):
        raise FileNotFoundError(f"{repo}: not a model folder nor a Hugging Face hub id ({flag})")
    target = Path(weights_dir) / repo.split("/")[1]
    if (target / "config.json").is_file() and weight_files(target):
        return target
    manual = (f"Place {repo}'s files ({', '.join(files)} and model.safetensors, or pytorch_model.bin) in "
              f"{target}/ (from https://huggingface.co/{repo}), or pass {flag} PATH to a folder holding them."
              + (f" {instead}" if instead else ""))
    if not download:
        raise FileNotFoundError(f"{repo}: not in {target}/ and downloading is off. " + manual)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    print(f"{repo}: not in {target}/, downloading it there (safetensors preferred)")
    try:
        snapshot_download(repo, local_dir=target, allow_patterns=[*files, "*.safetensors", "*.safetensors.index.json"])
        if not weight_files(target):  # a model without safetensors: transformers reads .bin weights-only
            snapshot_download(repo, local_dir=target,
                              allow_patterns=["pytorch_model*.bin", "pytorch_model.bin.index.json"])
    except HfHubHTTPError as e:
        raise ConnectionError(f"downloading {repo} failed ({e}).\n" + manual) from None
    except (LocalEntryNotFoundError, OSError) as e:
        raise ConnectionError(f"cannot download {repo}: offline or unreachable ({type(e).__name__}).\n"
                              + manual) from None
    return target


def weight_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")])
