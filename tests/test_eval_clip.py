"""tools/evaluation/clip.py: CLIP-Acc's decision rule, PIE-Bench's CLIP score (checked against torchmetrics'
CLIPScore on the same tiny random CLIP), and the edited-region image."""
import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_zero.tools.evaluation.clip import (TEMPLATE, Clip, clip_acc, clip_acc_success, clip_score, clip_scores,
                                                edited_region)

TEXTS = ["a photo of a dog", "a cat sitting on a sofa", "red car", "a", "the big tree in the street"]


def unit(v):
    v = torch.tensor(v, dtype=torch.float32)
    return v / v.norm()


def test_clip_acc_decision_rule_on_given_embeddings():
    image = unit([1.0, 0.0, 0.0])
    near, far = unit([0.9, 0.1, 0.0]), unit([0.1, 0.9, 0.0])
    assert clip_acc_success(image, source_text=far, target_text=near)  # closer to the target: a success
    assert not clip_acc_success(image, source_text=near, target_text=far)
    assert not clip_acc_success(image, source_text=near, target_text=near)  # a tie is no success


def test_clip_score_is_100_cos_clamped_at_zero():
    a = unit([1.0, 0.0])
    assert clip_score(a, unit([1.0, 1.0])) == pytest.approx(100 / 2 ** 0.5)
    assert clip_score(a, unit([-1.0, 1.0])) == 0.0
    assert clip_score(a, a) == pytest.approx(100)


def test_edited_region_blackens_the_unedited_pixels():
    im = Image.fromarray(np.full((4, 5, 3), 200, np.uint8))
    edited = torch.zeros(4, 5, dtype=torch.bool)
    edited[1:3, 2:4] = True
    out = np.asarray(edited_region(im, edited))
    assert (out[1:3, 2:4] == 200).all() and out.sum() == 200 * 3 * 4


def photo(seed=1, hw=(48, 64)):
    return Image.fromarray((np.random.default_rng(seed).random((*hw, 3)) * 255).astype(np.uint8))


@pytest.mark.slow
def test_clip_acc_end_to_end_matches_the_model_by_hand(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor
    clip = Clip(tiny_clip)
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    for seed, (source, target) in enumerate([("cat", "dog"), ("dog", "cat"), ("car", "tree"), ("tree", "car")]):
        im = photo(seed)
        with torch.no_grad():
            e_im = model.get_image_features(**processor(images=[im], return_tensors="pt")).pooler_output[0]
            t = processor(text=[TEMPLATE.format(word=w) for w in (source, target)], return_tensors="pt", padding=True)
            e_t = model.get_text_features(**t).pooler_output
        cos = torch.nn.functional.cosine_similarity(e_im[None], e_t)
        assert clip_acc(clip, im, source, target) == float(cos[1] > cos[0])


class ToTensors(torch.nn.Module):
    """torchmetrics 1.9.0 expects get_*_features to return tensors (transformers 4); transformers 5 returns outputs."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return self.model.get_text_features(*args, **kwargs).pooler_output


@pytest.mark.slow
def test_clip_score_matches_torchmetrics_clipscore(tiny_clip):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor
    model, processor = ToTensors(CLIPModel.from_pretrained(tiny_clip).eval()), CLIPProcessor.from_pretrained(tiny_clip)
    metric = CLIPScore(model_name_or_path=lambda: (model, processor))
    clip = Clip(tiny_clip)
    im = photo(3)
    pixels = torch.from_numpy(np.array(im)).permute(2, 0, 1)
    e_im = clip.image_embeddings([im])[0]
    for text in TEXTS:
        e_t = clip.text_embeddings([text])[0]
        with torch.no_grad():  # the unclamped 100 cos, then the public (clamped) score
            raw, _ = _clip_score_update(pixels, text, model, processor)
            public = metric(pixels, text).item()
        assert 100 * float(e_im @ e_t) == pytest.approx(raw.item(), abs=1e-3)
        assert clip_score(e_im, e_t) == pytest.approx(public, abs=1e-3)
    edited = torch.zeros(48, 64, dtype=torch.bool)
    edited[10:30, 5:40] = True
    scores = clip_scores(clip, im, TEXTS[0], edited)
    region = torch.from_numpy(np.asarray(im) * edited.numpy()[..., None].astype(np.uint8)).permute(2, 0, 1)
    with torch.no_grad():
        raw_region, _ = _clip_score_update(region, TEXTS[0], model, processor)
    assert scores["clip_score_edited"] == pytest.approx(max(raw_region.item(), 0.0), abs=1e-3)
    assert set(clip_scores(clip, im, TEXTS[0], None)) == {"clip_score"}
