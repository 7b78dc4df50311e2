"""Sentences from a language model (pix2pix_zero.tools.language_model): the filter on given text, seeding,
the sentence file and its reuse, and the clear error when a word is too rare, on a tiny random T5."""
import json

import pytest
import torch

from pix2pix_zero.tools import language_model
from pix2pix_zero.tools.language_model import (TooFewSentences, filter_sentences, generate_sentences,
                                               lm_sentences, load_language_model, sentence_file, word_pattern)

SHORT = {"max_new_tokens": 12}  # short samples keep the tiny model's generate fast


def test_the_word_must_occur_as_a_whole_word_in_any_case_singular_or_plural():
    p = word_pattern("cat")
    for yes in ("a cat on a mat", "Two CATS asleep", "the cat.", "cat", "a black-and-white cat's toy"):
        assert p.search(yes), yes
    for no in ("a catalogue of dogs", "a bobcat in the snow", "concatenate", "scat", "a dog"):
        assert not p.search(no), no
    assert word_pattern("golden retriever").search("two Golden  Retrievers playing")
    assert word_pattern("fox").search("three foxes")


def test_filter_keeps_sane_distinct_sentences_and_counts_the_rest():
    seen = set()
    texts = ['"A cat on a sofa."', "a cat on a sofa", "A CAT ON A SOFA!", "cat", "a dog on a sofa",
             "a cat " + "very " * 40 + "big", "  a  sleepy   cat  "]
    kept, rejected = filter_sentences(texts, "cat", seen)
    assert kept == ["A cat on a sofa.", "a sleepy cat"]  # quotes and spaces cleaned, case/punctuation repeats gone
    assert rejected == 5
    kept, rejected = filter_sentences(["a sleepy cat", "a cat in the rain"], "cat", seen)  # seen carries over
    assert kept == ["a cat in the rain"] and rejected == 1


def test_same_seed_same_sentences_and_the_global_rng_is_left_alone(tiny_t5):
    lm = load_language_model(str(tiny_t5))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, stats = generate_sentences(lm, "tree", 3, seed=0, batch_size=8, progress=False, **SHORT)
    assert torch.equal(torch.get_rng_state(), state)  # fork_rng restored the caller's RNG
    b, _ = generate_sentences(lm, "tree", 3, seed=0, batch_size=8, progress=False, **SHORT)
    c, _ = generate_sentences(lm, "tree", 3, seed=1, batch_size=8, progress=False, **SHORT)
    assert a == b and a != c and len(a) == 3 and all(word_pattern("tree").search(s) for s in a)
    assert stats["kept"] == 3 and stats["sampled"] % 8 == 0 and 0 < stats["rejected_share"] < 1


def test_a_word_the_model_never_writes_ends_in_a_clear_error(tiny_t5):
    lm = load_language_model(str(tiny_t5))
    with pytest.raises(TooFewSentences) as e:  # "cat" is not in the tiny vocabulary: no sentence can hold it
        generate_sentences(lm, "cat", 5, batch_size=4, max_batches=2, progress=False, **SHORT)
    message = str(e.value)
    assert "'cat'" in message and "only 0 usable sentences of the 5" in message and "8 sampled" in message
    assert "--lm" in message and "--num-sentences" in message and "--source-sentences" in message


def test_sentences_are_saved_with_provenance_and_reused_as_edited(tmp_path, tiny_t5, monkeypatch):
    [(sentences, path)] = lm_sentences(["tree"], 3, tmp_path, spec=str(tiny_t5), seed=0, batch_size=8,
                                       progress=False).values()
    assert path == sentence_file(tmp_path, "tree", str(tiny_t5), 3, 0) and path.read_text().splitlines() == sentences
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance["model"] == str(tiny_t5) and provenance["seed"] == 0 and provenance["kept"] == 3
    assert "tree" in provenance["prompt"] and provenance["word"] == "tree"
    path.write_text("a tree I wrote myself\n\nanother tree\n")  # the user edits the file; no model is needed now
    monkeypatch.setattr(language_model, "load_language_model", None)  # loading it now would fail
    [(again, same)] = lm_sentences(["tree"], 3, tmp_path, spec=str(tiny_t5), seed=0, progress=False).values()
    assert same == path and again == ["a tree I wrote myself", "another tree"]
