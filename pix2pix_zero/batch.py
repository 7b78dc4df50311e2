"""Running the method on files: one image, a folder of images, a saved inversion, or a synthetic image.

Per input (stem = the input's file name without its extension), under the output folder:
  STEM-inversion.safetensors              x_inv, x0, caption and settings (edit again with --inversion)
  STEM-reconstruction.png                 the reference trajectory decoded (caption only)
  STEM-SOURCE2TARGET.png                  the edit, one per target
  STEM-SOURCE2TARGET-side_by_side.png     input | reconstruction | edit
  STEM-SOURCE2TARGET.json                 every setting, checkpoint identity and versions (no timestamps)
  STEM-attention-SOURCE.png               with save_attention: the source word's cross-attention
Every file is written atomically; inputs are never overwritten. An edit whose settings file already holds
the same settings and whose PNG exists is skipped, so an interrupted folder run resumes where it stopped.
"""
import json
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .config import EditConfig
from .directions import TEMPLATES, edit_direction
from .editing import decode_latents, edit, initial_noise
from .heatmap import WordAttention, word_token_indices
from .image import load_image, save_png, side_by_side, tensor_to_pil
from .inversion import Inversion, encode_image, invert
from .sd import StableDiffusion

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class Job:
    """What to edit, beside the method's hyperparameters (EditConfig)."""
    source: str
    targets: list[str]
    prompt: str | None = None  # the caption c; required until a captioner exists
    negative_prompt: str | None = None  # default: the caption (real images), "" (synthetic)
    source_sentences: str | None = None  # a text file, one sentence a line; None: the built-in templates
    target_sentences: list[str | None] = field(default_factory=list)  # one per target, or empty
    size: int = 512
    save_attention: bool = False
    cache_dir: str | None = None


def input_images(path: str | os.PathLike) -> list[Path]:
    """An image file, or every image directly inside a folder (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"{path}: no images in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return images
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file or folder")
    return [path]


def safe_name(word: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in word.strip())[:60] or "_"


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("pix2pix_zero", "torch", "transformers", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def settings_record(sd: StableDiffusion, job: Job, config: EditConfig, input_name: str, caption: str,
                    negative: str, target: str, target_sentences: str | None, size: tuple[int, int]) -> dict:
    dtype = next(sd.unet.parameters()).dtype
    return {"input": input_name, "caption": caption, "negative_prompt": negative, "source": job.source,
            "target": target, "source_sentences": job.source_sentences or f"built-in ({len(TEMPLATES)} templates)",
            "target_sentences": target_sentences or f"built-in ({len(TEMPLATES)} templates)",
            "size": list(size), "config": config.to_dict(),
            "checkpoint": {"path": sd.source, "identity": sd.identity, "family": sd.family,
                           "prediction_type": sd.prediction_type},
            "device": str(sd.unet.conv_in.weight.device), "dtype": str(dtype).removeprefix("torch."),
            "versions": versions()}


def write_json(record: dict, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def run(sd: StableDiffusion, job: Job, config: EditConfig, out_dir: str | os.PathLike,
        image_path: str | os.PathLike | None = None, inversion_path: str | os.PathLike | None = None,
        progress: bool = True) -> list[Path]:
    """Edit one input (an image file, a saved inversion, or neither: a synthetic image); returns files written."""
    out_dir = Path(out_dir)
    device, dtype = sd.unet.conv_in.weight.device, sd.unet.conv_in.weight.dtype
    generator = torch.Generator().manual_seed(config.seed)
    protected = {Path(p).resolve() for p in (image_path, inversion_path) if p is not None}
    if inversion_path is not None:
        inv = Inversion.load(inversion_path)
        if inv.checkpoint != sd.identity:
            raise ValueError(f"{inversion_path}: inverted with checkpoint {inv.checkpoint}, but the loaded one is "
                             f"{sd.identity} ({sd.source}); edit it with the same --weights")
        stem, caption, x_inv = Path(inversion_path).stem.removesuffix("-inversion"), inv.caption, inv.x_inv
        x_inv = x_inv.to(device=device, dtype=dtype)
        image = decode_latents(sd, inv.x0.to(device=device, dtype=dtype))
        real = True
    elif image_path is not None:
        if not job.prompt:
            raise ValueError(f"{image_path}: no caption: pass --prompt \"a photo of a ...\" (automatic captioning "
                             "is not available yet)")
        stem, caption, real = Path(image_path).stem, job.prompt, True
        image = load_image(image_path, job.size).to(device=device, dtype=dtype)
    else:
        if not job.prompt:
            raise ValueError("a synthetic image needs --prompt (or give --input)")
        stem, caption, real, image = f"synthetic-seed{config.seed}", job.prompt, False, None
    negative = job.negative_prompt if job.negative_prompt is not None else (caption if real else "")
    c, c_neg = sd.encode_text([caption]), sd.encode_text([negative])

    targets = list(zip(job.targets, job.target_sentences or [None] * len(job.targets)))
    bases = {target: f"{stem}-{safe_name(job.source)}2{safe_name(target)}" for target, _ in targets}
    records = {target: settings_record(sd, job, config, str(image_path or inversion_path or "synthetic"), caption,
                                       negative, target, sentences, tuple(image.shape[-1:-3:-1]) if image is not None
                                       else (job.size, job.size)) for target, sentences in targets}
    todo = [(t, s) for t, s in targets if not done(out_dir, bases[t], records[t])]
    if not todo:
        return []
    outputs = [out_dir / f"{b}{ext}" for b in bases.values() for ext in (".png", ".json", "-side_by_side.png")]
    outputs += [out_dir / f"{stem}-inversion.safetensors", out_dir / f"{stem}-reconstruction.png"]
    for p in outputs:
        if p.resolve() in protected:
            raise ValueError(f"{p}: an output would overwrite an input; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    if inversion_path is None and real:
        posterior = "sample" if config.setting == "diffusers" else config.posterior
        x0 = encode_image(sd, image, posterior, generator)
        x_inv = invert(sd, x0, c, config, generator, progress)
        inversion = Inversion(x_inv, x0, caption, sd.identity, config.to_dict())
        written.append(inversion.save(out_dir / f"{stem}-inversion.safetensors"))
    elif not real:
        latent_hw = (job.size // 8, job.size // 8)
        x_inv = initial_noise((1, 4, *latent_hw), generator, device, dtype)

    delta_cs = [edit_direction(sd, job.source, t, job.source_sentences, s, job.cache_dir) for t, s in todo]
    heat = None
    if job.save_attention:
        tokens = word_token_indices(sd.tokenizer, caption, job.source)
        if tokens:
            heat = WordAttention(tokens, tuple(x_inv.shape[-2:]))
        else:
            print(f"note: '{job.source}' is not a word of the caption '{caption}'; no attention map saved")
    x_ref, x_edits = edit(sd, x_inv, c, delta_cs, c_neg, config, progress, on_reference=heat)
    reconstruction = decode_latents(sd, x_ref)
    if image is None:  # synthetic: the reference trajectory is the generated image
        image = reconstruction
    written.append(save_png(tensor_to_pil(reconstruction), out_dir / f"{stem}-reconstruction.png"))
    if heat is not None:
        written.append(save_png(heat.overlay(image), out_dir / f"{stem}-attention-{safe_name(job.source)}.png"))
    for (target, _), x_edit in zip(todo, x_edits):
        edited = tensor_to_pil(decode_latents(sd, x_edit))
        triptych = side_by_side([tensor_to_pil(image), tensor_to_pil(reconstruction), edited])
        written.append(save_png(triptych, out_dir / f"{bases[target]}-side_by_side.png"))
        written.append(save_png(edited, out_dir / f"{bases[target]}.png"))
        written.append(write_json(records[target], out_dir / f"{bases[target]}.json"))
    return written


def done(out_dir: Path, base: str, record: dict) -> bool:
    """True if this edit's PNG exists and its settings file holds exactly these settings."""
    settings = out_dir / f"{base}.json"
    if not ((out_dir / f"{base}.png").is_file() and settings.is_file()):
        return False
    try:
        return json.loads(settings.read_text()) == json.loads(json.dumps(record))
    except (json.JSONDecodeError, OSError):
        return False
