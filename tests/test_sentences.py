"""Sentence files, the template fallback, and the cache of mean embeddings (pix2pix_zero.tools.sentences)."""
import pytest
import torch

from pix2pix_zero.directions import template_sentences
from pix2pix_zero.models.sd import StableDiffusion
from pix2pix_zero.tools.sentences import (SentenceOptions, cached_directions, cached_mean_embedding, concept_sentences,
                                          import_mean_embedding, word_direction)


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
    delta_c = word_direction(sd, "cat", "dog", src, tgt, cache_dir=tmp_path / "cache").delta_c
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


def no_text_encoder(self, prompts):
    raise AssertionError(f"the text encoder was called for {prompts[:2]}")


def test_a_second_direction_comes_from_the_cache_without_the_text_encoder(sd, tmp_path, monkeypatch):
    first = word_direction(sd, "cat", "dog", cache_dir=tmp_path)
    assert first.path.parent == tmp_path / "directions" and first.source.count == first.target.count == 58
    expected = sd.encode_text(template_sentences("dog")).mean(0) - sd.encode_text(template_sentences("cat")).mean(0)
    torch.testing.assert_close(first.delta_c[0], expected, atol=1e-5, rtol=0)
    a, b = first.source.mean_c.double().flatten(), first.target.mean_c.double().flatten()
    assert first.cosine == pytest.approx((a @ b / (a @ a).sqrt() / (b @ b).sqrt()).item(), abs=1e-6)
    assert first.norm == pytest.approx(((b - a) @ (b - a)).sqrt().item(), rel=1e-5)
    monkeypatch.setattr(StableDiffusion, "encode_text", no_text_encoder)
    second = word_direction(sd, "cat", "dog", cache_dir=tmp_path)
    assert torch.equal(second.delta_c, first.delta_c) and second.path == first.path
    assert (second.norm, second.cosine, second.source.origin) == (first.norm, first.cosine, first.source.origin)
    [(path, meta)] = cached_directions(tmp_path)
    assert path == first.path and meta["source"] == "cat" and meta["target_count"] == "58"
    assert float(meta["norm"]) == pytest.approx(first.norm, rel=1e-5)


def test_a_damaged_direction_cache_entry_is_detected_and_rebuilt(sd, tmp_path, capsys):
    first = word_direction(sd, "cat", "dog", cache_dir=tmp_path)
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])  # a truncated file
    rebuilt = word_direction(sd, "cat", "dog", cache_dir=tmp_path)
    assert "damaged" in capsys.readouterr().out
    torch.testing.assert_close(rebuilt.delta_c, first.delta_c, atol=0, rtol=0)
    from safetensors.torch import load_file, save_file
    assert torch.equal(load_file(first.path)["delta_c"], first.delta_c)  # rewritten whole
    from safetensors import safe_open
    with safe_open(first.path, "pt") as f:
        entry, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(entry | {"delta_c": torch.full((1, 77, 64), float("nan"))}, first.path, metadata=meta)  # not finite
    assert torch.isfinite(word_direction(sd, "cat", "dog", cache_dir=tmp_path).delta_c).all()


def test_the_authors_pt_embeddings_import_at_the_matching_width_only(sd, tmp_path):
    mean = torch.randn(1, 77, 64)
    torch.save(mean.half(), tmp_path / "cat.pt")
    torch.save(mean[0] + 1, tmp_path / "dog.pt")  # (77, D), fp32
    x = import_mean_embedding(tmp_path / "cat.pt", (77, 64))
    assert x.dtype == torch.float32 and x.shape == (1, 77, 64)
    torch.testing.assert_close(x, mean.half().float(), atol=0, rtol=0)
    d = word_direction(sd, "cat", "dog", tmp_path / "cat.pt", tmp_path / "dog.pt", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(d.delta_c, mean[0][None] + 1 - mean.half().float(), atol=0, rtol=0)
    assert d.source.count is None and "cat.pt" in d.source.origin
    torch.save(torch.randn(1, 77, 768), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"wide.pt: shape \(77, 768\) does not match .*\(77, 64\)"):
        word_direction(sd, "cat", "dog", tmp_path / "wide.pt", tmp_path / "dog.pt")
    torch.save(torch.randn(2, 77, 64), tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"two.pt: .*\(2, 77, 64\)"):
        import_mean_embedding(tmp_path / "two.pt", (77, 64))


UNPICKLED = []


def mark_unpickled(what):
    UNPICKLED.append(what)


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return mark_unpickled, ("code ran",)


def test_pt_files_are_read_weights_only(tmp_path):
    torch.save({"obj": RunsCodeWhenUnpickled()}, tmp_path / "pickle.pt")  # a full unpickle would call append
    with pytest.raises(ValueError, match="pickle.pt: not a tensor file readable with weights_only=True"):
        import_mean_embedding(tmp_path / "pickle.pt", (77, 64))
    assert UNPICKLED == []
    torch.save({"a": torch.zeros(1)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="dict.pt: expected a float tensor"):
        import_mean_embedding(tmp_path / "dict.pt", (77, 64))


def test_language_model_sentences_make_a_cached_direction(sd, tiny_t5, tmp_path, monkeypatch):
    options = SentenceOptions("lm", str(tiny_t5), num_sentences=2, seed=0, progress=False)
    d = word_direction(sd, "tree", "car", cache_dir=tmp_path, options=options)
    files = sorted(p.name for p in (tmp_path / "sentences").iterdir())
    assert len(files) == 4 and d.source.count == d.target.count == 2  # a .txt and a .json per word
    tree = (tmp_path / "sentences" / [f for f in files if f.startswith("tree") and f.endswith(".txt")][0])
    expected = sd.encode_text(tree.read_text().splitlines()).mean(0)
    torch.testing.assert_close(d.source.mean_c[0], expected, atol=1e-5, rtol=0)
    assert "language model" in d.source.origin and str(tree) in d.source.origin
    monkeypatch.setattr(StableDiffusion, "encode_text", no_text_encoder)
    again = word_direction(sd, "tree", "car", cache_dir=tmp_path, options=options)
    assert again.path == d.path and torch.equal(again.delta_c, d.delta_c)
