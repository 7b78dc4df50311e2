"""Edit directions (pix2pix-zero, arXiv:2302.03027, sec. 3.1): delta_c = mean c(target) - mean c(source).

Each concept ("cat") is described by many sentences: a text file with one sentence a line, or, with no file,
the built-in bank of caption templates below (written for this project) filled with the word. The mean is
over the full (L, D) CLIP embedding sequence of every sentence, as in the paper. Mean embeddings are cached
as safetensors, keyed by the text encoder's checkpoint identity, the concept and the exact sentence set.
"""
import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .models.sd import StableDiffusion

# {a}: the concept with its article ("a cat", "an owl"); {w}: the bare word.
TEMPLATES = [
    "a photo of {a}", "a close-up photo of {a}", "a blurry photo of {a}", "a bright photo of {a}",
    "a dark photo of {a}", "a cropped photo of {a}", "a black and white photo of {a}", "a low resolution photo of {a}",
    "a high resolution photo of {a}", "an old photo of {a}", "a snapshot of {a}", "a picture of {a}",
    "a painting of {a}", "an oil painting of {a}", "a watercolor of {a}", "a sketch of {a}", "a drawing of {a}",
    "a cartoon of {a}", "a 3d render of {a}", "a sculpture of {a}", "an illustration of {a}", "a poster of {a}",
    "{a} in the snow", "{a} on the grass", "{a} on a wooden floor", "{a} on the beach", "{a} in a living room",
    "{a} in the street", "{a} in a garden", "{a} in the forest", "{a} under a blue sky", "{a} at night",
    "{a} in the rain", "{a} next to a window", "{a} on a table", "{a} in a park", "{a} indoors", "{a} outdoors",
    "a large {w}", "a small {w}", "a cute {w}", "a beautiful {w}", "a strange {w}", "a colorful {w}",
    "{a} looking at the camera", "{a} seen from the side", "{a} seen from above", "{a} in the distance",
    "{a} in soft morning light", "{a} lit by a lamp", "a professional photograph of {a}",
    "a phone photo of {a}", "a magazine photo of {a}", "a photo of {a} in the center of the frame",
    "a detailed photo of {a}", "a pixelated photo of {a}", "a photo of one {w}", "a nice photo of {a}",
]


def with_article(concept: str) -> str:
    return f"{'an' if concept[:1].lower() in 'aeiou' else 'a'} {concept}"


def concept_sentences(concept: str, sentences_file: str | os.PathLike | None = None) -> list[str]:
    """The sentences that describe `concept`: one a line from a file, else the template bank."""
    if sentences_file is None:
        return [t.format(a=with_article(concept), w=concept) for t in TEMPLATES]
    path = Path(sentences_file)
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


@torch.no_grad()
def mean_embedding(sd: StableDiffusion, sentences: list[str], batch_size: int = 16) -> torch.Tensor:
    """(1/K) sum_k c(sentence_k): the mean CLIP embedding sequence, (1, L, D), accumulated in float32."""
    total = None
    for i in range(0, len(sentences), batch_size):
        c = sd.encode_text(sentences[i:i + batch_size]).float().sum(0, keepdim=True)  # (1, L, D)
        total = c if total is None else total + c
    return total / len(sentences)


def cached_mean_embedding(sd: StableDiffusion, concept: str, sentences: list[str],
                          cache_dir: str | os.PathLike | None) -> torch.Tensor:
    """`mean_embedding`, read from / written to `cache_dir` (no caching if None)."""
    if cache_dir is None:
        return mean_embedding(sd, sentences)
    key = hashlib.sha256("\n".join([sd.text_identity, concept, *sentences]).encode()).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in concept)[:40]
    path = Path(cache_dir) / f"{safe}-{key}.safetensors"
    if path.is_file():
        try:
            return load_file(path)["mean_c"]
        except (SafetensorError, KeyError, OSError):
            pass  # a damaged cache entry is recomputed and rewritten below
    mean_c = mean_embedding(sd, sentences)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    save_file({"mean_c": mean_c.contiguous().cpu()}, tmp,
              metadata={"concept": concept, "text_encoder": sd.text_identity, "sentences": str(len(sentences))})
    os.replace(tmp, path)
    return mean_c


def edit_direction(sd: StableDiffusion, source: str, target: str, source_sentences=None, target_sentences=None,
                   cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """delta_c = mean c(target sentences) - mean c(source sentences), (1, L, D) float32 (paper sec. 3.1)."""
    mean_source = cached_mean_embedding(sd, source, concept_sentences(source, source_sentences), cache_dir)
    mean_target = cached_mean_embedding(sd, target, concept_sentences(target, target_sentences), cache_dir)
    return mean_target - mean_source
