"""Edit directions: the template bank, mean embeddings, delta_c."""
import torch

from pix2pix_zero.directions import TEMPLATES, edit_direction, mean_embedding, template_sentences


def test_template_bank_gives_at_least_50_distinct_sentences_with_the_word_and_articles():
    assert len(set(TEMPLATES)) == len(TEMPLATES) >= 50
    for word, article in (("cat", "a cat"), ("owl", "an owl")):
        sentences = template_sentences(word)
        assert len(set(sentences)) == len(TEMPLATES)
        assert all(word in s for s in sentences)
        assert f"a photo of {article}" in sentences and "a small " + word in sentences
        assert not any(" a a " in s or "an a " in s for s in sentences)


def test_mean_embedding_is_the_mean_of_full_sequences_across_batches(sd):
    sentences = [f"a photo of {n} cats" for n in range(5)]
    expected = sd.encode_text(sentences).mean(0, keepdim=True)
    got = mean_embedding(sd, sentences, batch_size=2)  # batches of 2, 2, 1
    assert got.shape == (1, 77, sd.text_encoder.config.hidden_size)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_edit_direction_is_target_mean_minus_source_mean(sd):
    src, tgt = ["a cat", "a photo of a cat"], ["a dog", "a photo of a dog"]
    expected = (sd.encode_text(tgt).mean(0) - sd.encode_text(src).mean(0))[None]
    torch.testing.assert_close(edit_direction(sd, src, tgt), expected, atol=1e-6, rtol=0)
