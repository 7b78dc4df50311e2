"""Sentence files, the template fallback, and the cache of mean embeddings (pix2pix_zero.tools.sentences)."""
import pytest
import torch

from pix2pix_zero.directions import template_sentences
from pix2pix_zero.tools.sentences import cached_mean_embedding, concept_sentences, word_direction


def test_no_file_means_the_template_bank():
    assert concept_sentences("owl") == template_sentences("owl")


def test_sentence_file_one_per_line_blank_lines_ignored(tmp_path):
    f = tmp_path / "cat.txt"
    f.write_text("a cat on a mat\n\n  a sleepy cat  \n")
    assert concept_sentences("cat", f) == ["a cat on a mat", "a sleepy cat"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match="empty.txt"):
        concept_sentences("cat", empty)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        concept_sentences("cat", tmp_path / "missing.txt")


def test_word_direction_reads_sentence_files_and_is_cached(sd, tmp_path):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("a cat\na photo of a cat\n")
    tgt.write_text("a dog\na photo of a dog\n")
    delta_c = word_direction(sd, "cat", "dog", src, tgt, cache_dir=tmp_path / "cache")
    expected = (sd.encode_text(["a dog", "a photo of a dog"]).mean(0) - sd.encode_text(["a cat", "a photo of a cat"])
                .mean(0))[None]
    torch.testing.assert_close(delta_c, expected, atol=1e-6, rtol=0)
    cached = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert len(cached) == 2
    # a cache hit returns the stored tensor: overwrite it and see the change come back
    from safetensors.torch import save_file
    dog_file = next(p for p in cached if p.name.startswith("dog-"))
    save_file({"mean_c": torch.zeros(1, 77, 64)}, dog_file)
    hit = cached_mean_embedding(sd, "dog", ["a dog", "a photo of a dog"], tmp_path / "cache")
    assert hit.abs().max() == 0
    # another sentence set is another cache entry
    cached_mean_embedding(sd, "dog", ["a dog"], tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 3


def test_cache_entries_belong_to_one_text_encoder(sd, tmp_path):
    from dataclasses import replace
    cached_mean_embedding(sd, "cat", ["a cat"], tmp_path)
    cached_mean_embedding(replace(sd, text_identity="another-text-encoder"), "cat", ["a cat"], tmp_path)
    assert len(list(tmp_path.glob("cat-*.safetensors"))) == 2
