"""Sentences about a concept written by a language model, for the edit directions of pix2pix-zero
(arXiv:2302.03027, sec. 3.2: "a large bank of diverse sentences", about 1,000 per concept, from GPT-3).

A seq2seq model (default Flan-T5-large) is asked for short image captions containing the word, sampled in
batches until N distinct sentences survive the filter: the word present as a whole word (case-insensitive,
plural accepted), 3 to 30 words, at most 200 characters. Sampling is seeded inside torch.random.fork_rng, so a
run does not disturb anyone's global RNG and two runs write the same sentences. The sentences are saved as a
text file (one a line) beside a JSON of provenance; the next run reuses the file, edited or not.
"""
import gc
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..loading.hub import resolve_pretrained
from .files import atomic_path

LANGUAGE_MODELS = {"flan-t5-large": "google/flan-t5-large", "flan-t5-xl": "google/flan-t5-xl"}
DEFAULT_LM = "google/flan-t5-large"
FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json"]
# Our prompt. NOTE(official): diffusers' pix2pix-zero guide asks Flan-T5-XL "Provide a caption for images
# containing a {word}. ..." and samples with temperature 0.8, top_k 10; we sample a wider top_p 0.95 at
# temperature 1 for more diverse sentences, and rely on the filter for the word.
PROMPT = "Write a short caption for a photograph of {a}. The caption must contain the word \"{w}\"."
MIN_WORDS, MAX_WORDS, MAX_CHARS = 3, 30, 200
MAX_NEW_TOKENS = 40


class TooFewSentences(ValueError):
    """The language model wrote too few usable sentences about a word within the allowed batches."""


@dataclass
class LanguageModel:
    model: torch.nn.Module  # a transformers seq2seq model (T5ForConditionalGeneration, ...)
    tokenizer: object  # a fast tokenizer (tokenizer.json; no sentencepiece)
    name: str


def load_language_model(spec: str = DEFAULT_LM, weights_dir: str | os.PathLike = "weights", device="cpu",
                        dtype: torch.dtype = torch.float32) -> LanguageModel:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    folder = resolve_pretrained(spec, LANGUAGE_MODELS, weights_dir, FILES, "--lm",
                                instead="Or use --sentences templates (offline), or sentence files.")
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder}: not a seq2seq language model in transformers' layout ({e})") from None
    return LanguageModel(model, tokenizer, LANGUAGE_MODELS.get(spec, spec))


def word_pattern(word: str) -> re.Pattern:
    """`word` as a whole word or phrase, any case, with an optional plural -s/-es: cat, Cats, CAT."""
    phrase = r"\s+".join(re.escape(part) for part in word.split())
    return re.compile(rf"(?<![\w-]){phrase}(?:e?s)?(?![\w-])", re.IGNORECASE)


def clean_sentence(text: str) -> str:
    """One line, single spaces, no surrounding quotes."""
    return " ".join(text.split()).strip("\"'` ")


def filter_sentences(texts: list[str], word: str, seen: set[str]) -> tuple[list[str], int]:
    """(new sentences that pass, number rejected): the word must occur, the length must be sane, and a sentence
    seen before (ignoring case and final punctuation) is rejected. `seen` is updated."""
    pattern, kept, rejected = word_pattern(word), [], 0
    for text in texts:
        sentence = clean_sentence(text)
        key = sentence.lower().rstrip(".!")
        if not (pattern.search(sentence) and MIN_WORDS <= len(sentence.split()) <= MAX_WORDS
                and len(sentence) <= MAX_CHARS) or key in seen:
            rejected += 1
            continue
        seen.add(key)
        kept.append(sentence)
    return kept, rejected


@torch.no_grad()
def generate_sentences(lm: LanguageModel, word: str, n: int, seed: int = 0, batch_size: int | None = None,
                       max_batches: int | None = None, progress: bool = True,
                       max_new_tokens: int = MAX_NEW_TOKENS) -> tuple[list[str], dict]:
    """(n distinct filtered sentences about `word`, statistics). Raises TooFewSentences after `max_batches`
    (default: 10 times the batches n needs) with the counts and what to try. Batches: 64, or fewer for small n."""
    from tqdm import tqdm

    from ..directions import with_article
    batch_size = batch_size or min(64, max(8, n))
    max_batches = max_batches or 10 * math.ceil(n / batch_size)
    prompt = PROMPT.format(a=with_article(word), w=word)
    device = lm.model.device
    ids = lm.tokenizer([prompt], return_tensors="pt").input_ids.to(device)
    sentences, seen, sampled, rejected, batches, start = [], set(), 0, 0, 0, time.perf_counter()
    bar = tqdm(total=n, desc=f"sentences about '{word}'", unit="sentence", disable=not progress)
    # generate() takes no generator: seed the global RNG, inside a fork that restores it afterwards.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        while len(sentences) < n and batches < max_batches:
            out = lm.model.generate(ids, do_sample=True, top_p=0.95, temperature=1.0, max_new_tokens=max_new_tokens,
                                    num_return_sequences=batch_size)
            kept, bad = filter_sentences(lm.tokenizer.batch_decode(out, skip_special_tokens=True), word, seen)
            kept = kept[:n - len(sentences)]
            sentences += kept
            sampled, rejected, batches = sampled + batch_size, rejected + bad, batches + 1
            bar.update(len(kept))
    bar.close()
    seconds = time.perf_counter() - start
    stats = {"model": lm.name, "prompt": prompt, "seed": seed, "wanted": n, "kept": len(sentences),
             "sampled": sampled, "rejected_share": round(rejected / max(sampled, 1), 4), "batches": batches,
             "batch_size": batch_size, "seconds": round(seconds, 1),
             "sentences_per_second": round(len(sentences) / max(seconds, 1e-9), 2)}
    if len(sentences) < n:
        raise TooFewSentences(
            f"'{word}': the language model {lm.name} wrote only {len(sentences)} usable sentences of the {n} wanted "
            f"in {batches} batches ({sampled} sampled, {rejected} rejected for lacking the word '{word}', a length "
            f"outside {MIN_WORDS}-{MAX_WORDS} words, or repeating). Try a larger model (--lm google/flan-t5-xl), "
            f"fewer sentences (--num-sentences), another --lm-seed, or write sentences into a file (one a line) "
            f"and pass it with --source-sentences/--target-sentences.")
    return sentences, stats


def sentence_file(cache_dir: str | os.PathLike, word: str, model: str, n: int, seed: int) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{word}-{model.split('/')[-1]}")[:80]
    return Path(cache_dir) / "sentences" / f"{safe}-n{n}-seed{seed}.txt"


def lm_sentences(words: list[str], n: int, cache_dir: str | os.PathLike, spec: str = DEFAULT_LM, seed: int = 0,
                 weights_dir: str | os.PathLike = "weights", device="cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int | None = None, max_batches: int | None = None,
                 progress: bool = True) -> dict[str, tuple[list[str], Path]]:
    """{word: (sentences, their file)}: read from the sentence file of (word, model, n, seed) if it exists (the
    user may have edited it), else generated and written there with its provenance in a .json beside it. The
    model is loaded once, only if some file is missing, and released before returning."""
    from .sentences import read_sentence_file
    model = LANGUAGE_MODELS.get(spec, spec)
    paths = {word: sentence_file(cache_dir, word, model, n, seed) for word in words}
    missing = [word for word in dict.fromkeys(words) if not paths[word].is_file()]
    if missing:
        lm = load_language_model(spec, weights_dir, device, dtype)
        for word in missing:
            sentences, stats = generate_sentences(lm, word, n, seed, batch_size, max_batches, progress)
            with atomic_path(paths[word].with_suffix(".json")) as tmp:
                tmp.write_text(json.dumps({"word": word, **stats}, indent=2) + "\n")
            with atomic_path(paths[word]) as tmp:
                tmp.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        del lm
        gc.collect()
    return {word: (read_sentence_file(paths[word]), paths[word]) for word in words}
