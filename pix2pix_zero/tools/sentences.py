"""Sentences that describe a concept, from a file or the built-in templates, and a cache of their mean embeddings.

A sentence file has one sentence a line (UTF-8; blank lines ignored). Mean embeddings are cached as
safetensors, keyed by the text encoder's checkpoint identity, the concept and the exact sentence set, so a
folder run embeds each concept's sentences once.
"""
import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..directions import mean_embedding, template_sentences
from ..models.sd import StableDiffusion
from .files import atomic_path


def concept_sentences(concept: str, sentences_file: str | os.PathLike | None = None) -> list[str]:
    """The sentences that describe `concept`: one a line from a file, else the template bank."""
    if sentences_file is None:
        return template_sentences(concept)
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
    with atomic_path(path) as tmp:
        save_file({"mean_c": mean_c.contiguous().cpu()}, tmp,
                  metadata={"concept": concept, "text_encoder": sd.text_identity, "sentences": str(len(sentences))})
    return mean_c


def word_direction(sd: StableDiffusion, source: str, target: str, source_sentences=None, target_sentences=None,
                   cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """delta_c for two words, each described by its sentence file or the templates, through the cache."""
    mean_source = cached_mean_embedding(sd, source, concept_sentences(source, source_sentences), cache_dir)
    mean_target = cached_mean_embedding(sd, target, concept_sentences(target, target_sentences), cache_dir)
    return mean_target - mean_source
