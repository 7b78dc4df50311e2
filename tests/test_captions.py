"""BLIP captions (pix2pix_zero.tools.captions) on a tiny random BLIP built offline."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_zero.loading.hub import resolve_pretrained
from pix2pix_zero.tools.captions import (CAPTIONERS, FILES, PREFIX, blip_pixels, caption_files, caption_images,
                                         file_digest, load_captioner)


def noise_image(seed, size=(50, 40)):
    return Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8))


def test_pixels_match_transformers_blip_image_processor():
    """Our resize + normalisation equals transformers' own BLIP image processor (its PIL backend)."""
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
    images = [noise_image(0), noise_image(1, (30, 70))]
    expected = BlipImageProcessorPil(size={"height": 48, "width": 48})(images=images, return_tensors="pt").pixel_values
    torch.testing.assert_close(blip_pixels(images, 48), expected, atol=1e-6, rtol=0)


def test_caption_is_the_beam_search_text_after_the_prefix_and_deterministic(tiny_blip):
    captioner = load_captioner(str(tiny_blip))
    images = [noise_image(0), noise_image(1)]
    captions = caption_images(captioner, images, batch_size=2)
    assert all(isinstance(c, str) and c for c in captions)
    assert caption_images(captioner, images, batch_size=1) == captions  # deterministic; batching changes nothing
    # by hand: BLIP's generate with the prefix, 3 beams, 10..30 tokens; the decoded text minus the prefix
    tok = captioner.tokenizer
    ids = tok([PREFIX], return_tensors="pt").input_ids
    out = captioner.model.generate(pixel_values=blip_pixels(images[:1], captioner.image_size), input_ids=ids,
                                   num_beams=3, min_length=10, max_length=30)
    raw = tok.decode(out[0], skip_special_tokens=True)
    assert raw.startswith("a picture of ") and captions[0] == raw[len("a picture of "):].strip()
    assert 10 <= out.shape[1] <= 30


def test_stored_captions_are_reused_and_a_changed_image_is_captioned_again(tmp_path, tiny_blip):
    image = tmp_path / "cat.png"
    noise_image(0).save(image)
    out = tmp_path / "out"
    captions, name = caption_files([image], {image: "cat"}, out, str(tiny_blip))
    assert name == f"BLIP {tiny_blip}" and captions[image]
    # a captioner that cannot load shows whether captioning was attempted
    missing = str(tmp_path / "no-blip")
    out.mkdir()
    (out / "cat-cat2dog.json").write_text(json.dumps({"caption": "a stored caption", "caption_from": f"BLIP {missing}",
                                                      "input_sha256": file_digest(image)}))
    assert caption_files([image], {image: "cat"}, out, missing)[0] == {image: "a stored caption"}
    noise_image(1).save(image)  # other bytes: the stored caption is not this image's
    with pytest.raises(FileNotFoundError, match="no-blip"):
        caption_files([image], {image: "cat"}, out, missing)


def test_missing_captioner_names_the_files_and_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        resolve_pretrained("base", CAPTIONERS, tmp_path / "weights", FILES, "--captioner", download=False)
    message = str(e.value)
    assert "Salesforce/blip-image-captioning-base" in message and "--captioner" in message
    assert str(tmp_path / "weights" / "blip-image-captioning-base") in message
    assert all(f in message for f in FILES) and "model.safetensors" in message
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        resolve_pretrained("./no/such/folder", CAPTIONERS, tmp_path, FILES, "--captioner")
