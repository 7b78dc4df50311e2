"""Running one input: word names, synthetic sizes, prompts. (Folders: tests/test_folder.py.)"""
from pix2pix_zero.tools.batch import Job, load_source, safe_name
from pix2pix_zero.config import EditConfig


def test_safe_name_keeps_words_and_replaces_path_characters():
    assert safe_name("golden retriever") == "golden_retriever"
    assert safe_name("../x") == "___x"


def test_synthetic_size_follows_the_resize_policy_and_names_the_prompt(sd):
    src = load_source(sd, Job("cat", ["dog"], prompt="a cat, on a sofa", size=136), EditConfig(seed=4), None, None, None)
    assert src.latent_hw == (16, 16)  # 136 crops to 128 pixels, a multiple of 64
    assert src.stem == "synthetic-a_cat__on_a_sofa-seed4" and not src.real and src.inverted is None and src.image is None


def test_prompts_longer_than_77_tokens_are_truncated_not_refused(sd):
    assert sd.encode_text(["a very long caption about a cat " * 30]).shape == (1, 77, 64)
