"""How each concept is described, and the cache of mean embeddings and edit directions (paper sec. 3.2).

A concept is described by a sentence file (one sentence a line, UTF-8, blank lines ignored), by the authors'
published mean embedding (a .pt tensor, read with torch.load(weights_only=True) only), by sentences from a
language model (language_model.py), or by the built-in templates. Mean embeddings and directions are cached as
safetensors under the cache folder, keyed by the text encoder's identity and the exact sentences, so a folder
run embeds each concept once and a second run calls no text encoder at all.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..directions import TEMPLATES, mean_embedding, template_sentences
from ..models.sd import StableDiffusion
from ..models.text import L
from .files import atomic_path


@dataclass
class SentenceOptions:
    """Where sentences come from for a concept that has no file: the templates, or a language model."""
    sentences: str = "templates"  # "templates" (built in, offline) or "lm"
    lm: str | None = None  # the language model (alias, hub id or folder); None: language_model.DEFAULT_LM
    num_sentences: int = 1000
    seed: int = 0
    weights_dir: str = "weights"
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    progress: bool = True


@dataclass
class Concept:
    mean_c: torch.Tensor  # (1, L, D) float32
    count: int | None  # sentences averaged; None for an imported mean embedding
    origin: str  # where the description came from, for people and settings files


@dataclass
class Direction:
    delta_c: torch.Tensor  # (1, L, D) float32: mean c(target) - mean c(source)
    source: Concept
    target: Concept
    path: Path | None = None  # its cache entry

    @property
    def norm(self) -> float:
        return self.delta_c.norm().item()

    @property
    def cosine(self) -> float:
        """cos(mean c(source), mean c(target)) over the flattened (L, D) sequences."""
        return torch.nn.functional.cosine_similarity(self.source.mean_c.flatten(), self.target.mean_c.flatten(),
                                                     dim=0).item()


def read_sentence_file(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such sentence file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from None
    sentences = [line for line in lines if line]
    if not sentences:
        raise ValueError(f"{path}: no sentences in the file (one sentence a line)")
    return sentences


def concept_sentences(concept: str, sentences_file: str | os.PathLike | None = None) -> list[str]:
    """The sentences that describe `concept`: one a line from a file, else the template bank."""
    return template_sentences(concept) if sentences_file is None else read_sentence_file(sentences_file)


def origin_of(file: str | os.PathLike | None, options: SentenceOptions | None) -> str:
    """Where a concept's description comes from, known before anything is generated (for settings files)."""
    if file is not None:
        return str(file)
    if options is not None and options.sentences == "lm":
        from .language_model import DEFAULT_LM, LANGUAGE_MODELS
        model = options.lm or DEFAULT_LM
        return f"language model {LANGUAGE_MODELS.get(model, model)} (n={options.num_sentences}, seed={options.seed})"
    return f"built-in ({len(TEMPLATES)} templates)"


def import_mean_embedding(path: str | os.PathLike, shape: tuple[int, int]) -> torch.Tensor:
    """The authors' published mean embedding (cat.pt: (1, 77, D) or (77, D), fp32 or fp16) as (1, 77, D) fp32,
    checked against the checkpoint's conditioning `shape` (rows, D) (StableDiffusion.conditioning_shape).
    Read with torch.load(weights_only=True): tensors only, never arbitrary pickled objects."""
    rows, D = shape
    path = Path(path)
    try:
        x = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such embedding file") from None
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for a bad file
        raise ValueError(f"{path}: not a tensor file readable with weights_only=True ({type(e).__name__}: {e})") \
            from None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{path}: expected a float tensor (1, {L}, D) or ({L}, D), found {type(x).__name__}")
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[1] not in (L, L + 1):
        raise ValueError(f"{path}: a mean embedding has shape (1, {L}, D) or ({L}, D), not {tuple(x.shape)}")
    if x.shape[1:] != (rows, D):
        raise ValueError(f"{path}: shape {tuple(x.shape[1:])} does not match this checkpoint's conditioning "
                         f"{(rows, D)} ((77, 768) for SD 1.x, (77, 1024) for SD 2.x, (78, 2048) for SDXL); use "
                         "the embeddings made for this model family")
    return x.float()


def describe_concept(sd: StableDiffusion, concept: str, file: str | os.PathLike | None = None,
                     options: SentenceOptions | None = None, cache_dir: str | os.PathLike | None = None) -> Concept:
    """A concept's mean embedding from the file (.pt embedding or sentences), the language model, or templates."""
    if file is not None and Path(file).suffix == ".pt":
        return Concept(import_mean_embedding(file, sd.conditioning_shape), None, f"{file} (mean embedding)")
    if file is None and options is not None and options.sentences == "lm":
        if cache_dir is None:
            raise ValueError("--sentences lm needs a cache folder to keep the sentences in (--cache-dir)")
        [(sentences, path)] = generate_missing_sentences([concept], options, cache_dir).values()
        return Concept(cached_mean_embedding(sd, concept, sentences, cache_dir), len(sentences),
                       f"{origin_of(None, options)}: {path}")
    sentences = concept_sentences(concept, file)
    return Concept(cached_mean_embedding(sd, concept, sentences, cache_dir), len(sentences), origin_of(file, options))


def generate_missing_sentences(words: list[str], options: SentenceOptions, cache_dir) -> dict:
    """{word: (sentences, file)} from the language model (language_model.lm_sentences), one model load for all:
    the command line calls this before loading Stable Diffusion, so the two are never in memory together."""
    from .language_model import DEFAULT_LM, lm_sentences
    o = options
    return lm_sentences(words, o.num_sentences, cache_dir, o.lm or DEFAULT_LM, o.seed, o.weights_dir, o.device,
                        o.dtype, progress=o.progress)


def safe_word(word: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in word)[:40]


def read_cached(path: Path, key: str, shape: tuple[int, int]) -> torch.Tensor | None:
    """A cache entry's tensor, or None when it is missing or damaged (unreadable, wrong shape, not finite)."""
    if not path.is_file():
        return None
    try:
        x = load_file(path)[key]
    except (SafetensorError, KeyError, OSError):
        x = None
    if x is None or x.shape != (1, *shape) or not torch.isfinite(x).all():
        print(f"note: {path}: damaged cache entry, rebuilding it")
        return None
    return x


def cached_mean_embedding(sd: StableDiffusion, concept: str, sentences: list[str],
                          cache_dir: str | os.PathLike | None) -> torch.Tensor:
    """`mean_embedding`, read from / written to `cache_dir` (no caching if None)."""
    if cache_dir is None:
        return mean_embedding(sd, sentences)
    key = hashlib.sha256("\n".join([sd.text_identity, concept, *sentences]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{safe_word(concept)}-{key}.safetensors"
    if (mean_c := read_cached(path, "mean_c", sd.conditioning_shape)) is not None:
        return mean_c
    mean_c = mean_embedding(sd, sentences)
    with atomic_path(path) as tmp:
        save_file({"mean_c": mean_c.contiguous().cpu()}, tmp,
                  metadata={"concept": concept, "text_encoder": sd.text_identity, "sentences": str(len(sentences))})
    return mean_c


def description_key(concept: str, file, options: SentenceOptions | None, cache_dir) -> str | None:
    """What decides a concept's mean embedding, short of embedding it: the bytes of its file (sentences, .pt,
    or the language model's sentence file once written), or the templates. None: not known yet."""
    if file is None and options is not None and options.sentences == "lm":
        from .language_model import DEFAULT_LM, LANGUAGE_MODELS, sentence_file
        model = options.lm or DEFAULT_LM
        file = sentence_file(cache_dir, concept, LANGUAGE_MODELS.get(model, model), options.num_sentences, options.seed)
        if not file.is_file():
            return None
    text = Path(file).read_bytes() if file is not None else "\n".join(template_sentences(concept)).encode()
    return hashlib.sha256(text).hexdigest()


def direction_path(sd: StableDiffusion, source: str, target: str, keys: list[str | None], cache_dir) -> Path | None:
    if cache_dir is None or None in keys:
        return None
    key = hashlib.sha256("\n".join([sd.text_identity, source, target, *keys]).encode()).hexdigest()[:16]
    return Path(cache_dir) / "directions" / f"{safe_word(source)}2{safe_word(target)}-{key}.safetensors"


def word_direction(sd: StableDiffusion, source: str, target: str, source_file=None, target_file=None,
                   cache_dir: str | os.PathLike | None = None, options: SentenceOptions | None = None) -> Direction:
    """delta_c for two words, each described as `describe_concept` says, through the direction cache."""
    def cache_path():
        keys = [description_key(w, f, options, cache_dir) for w, f in ((source, source_file), (target, target_file))]
        return direction_path(sd, source, target, keys, cache_dir) if cache_dir is not None else None

    path = cache_path()
    if path is not None and (delta_c := read_cached(path, "delta_c", sd.conditioning_shape)) is not None:
        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata()
                sides = [Concept(f.get_tensor(f"mean_{side}"), int(meta[f"{side}_count"]) or None,
                                 meta[f"{side}_origin"]) for side in ("source", "target")]
            return Direction(delta_c, *sides, path)
        except (SafetensorError, KeyError, ValueError, TypeError, OSError):
            print(f"note: {path}: damaged cache entry, rebuilding it")
    direction = Direction(None, describe_concept(sd, source, source_file, options, cache_dir),
                          describe_concept(sd, target, target_file, options, cache_dir))
    direction.delta_c = direction.target.mean_c - direction.source.mean_c
    direction.path = cache_path()  # language-model sentence files exist now
    if direction.path is not None:
        meta = {"source": source, "target": target, "text_encoder": sd.text_identity,
                "source_count": str(direction.source.count or 0), "target_count": str(direction.target.count or 0),
                "source_origin": direction.source.origin, "target_origin": direction.target.origin,
                "norm": f"{direction.norm:.6g}", "cosine": f"{direction.cosine:.6g}"}
        tensors = {"delta_c": direction.delta_c, "mean_source": direction.source.mean_c,
                   "mean_target": direction.target.mean_c}
        with atomic_path(direction.path) as tmp:
            save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=meta)
    return direction


def cached_directions(cache_dir: str | os.PathLike) -> list[tuple[Path, dict]]:
    """(file, provenance) of every readable direction in the cache, by name."""
    found = []
    for path in sorted((Path(cache_dir) / "directions").glob("*.safetensors")):
        try:
            with safe_open(path, "pt") as f:
                found.append((path, f.metadata() or {}))
        except (SafetensorError, OSError):
            found.append((path, {"damaged": "yes"}))
    return found


def write_direction(path: str | os.PathLike, direction: Direction, source: str, target: str, checkpoint: str) -> Path:
    """delta_c (1, L, D) to a .safetensors file, with where it came from; `read_direction` reads it back."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({"delta_c": direction.delta_c.contiguous().cpu()}, tmp,
                  metadata={"source": source, "target": target, "checkpoint": checkpoint,
                            "source_origin": direction.source.origin, "target_origin": direction.target.origin})
    return path


def read_direction(path: str | os.PathLike, shape: tuple[int, int]) -> torch.Tensor:
    """delta_c (1, L, D) float32 from a file `write_direction` (`directions --out`) made, checked against the
    checkpoint's conditioning `shape` (rows, D); ValueError naming the file and the problem otherwise."""
    rows, D = shape
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such direction file (make one with `train_free_edit.py directions "
                                "--source WORD --target WORD --out FILE`)")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable .safetensors direction file ({e})") from None
    if "delta_c" not in tensors:
        raise ValueError(f"{path}: holds no delta_c tensor (it has {', '.join(sorted(tensors)) or 'none'})")
    delta_c = tensors["delta_c"]
    if delta_c.dim() != 3 or delta_c.shape[0] != 1 or not delta_c.is_floating_point():
        raise ValueError(f"{path}: delta_c must be a float tensor (1, {rows}, D), not {tuple(delta_c.shape)}")
    if delta_c.shape[1:] != (rows, D):
        raise ValueError(f"{path}: delta_c has shape {tuple(delta_c.shape[1:])} but this checkpoint's conditioning "
                         f"has {(rows, D)}; make the direction with the same checkpoint (--weights) as the edit")
    return delta_c.float()


def print_cached_directions(cache_dir: str | os.PathLike) -> int:
    """`directions --list`: every cached direction with its provenance."""
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
