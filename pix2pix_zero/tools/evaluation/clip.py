"""CLIP metrics of an edit: CLIP-Acc (the paper's Table 1) and PIE-Bench's CLIP score.

CLIP-Acc (Parmar et al., arXiv:2302.03027, sec. 4): an edit counts as a success when CLIP puts the edited
image closer (cosine) to the target text than to the source text; the accuracy is the share of successes.
The texts are TEMPLATE filled with each word ("a photo of a dog"); default model openai/clip-vit-base-patch32.
CLIP score (PIE-Bench, Ju et al., arXiv:2310.01506): max(100 * cos(image, text), 0), torchmetrics' CLIPScore
with openai/clip-vit-large-patch14, on the whole edit and on the edited region. NOTE(official): the region
version (cure-lab/PnPInversion evaluation/matrics_calculator.py calculate_clip_similarity) multiplies the
8-bit edit by the edited mask (border included), so the unedited pixels turn black, then scores it whole.
Images go through the model folder's CLIPImageProcessor (resize, centre crop, normalise), as torchmetrics does.
"""
import os

import numpy as np
import torch
from PIL import Image

TEMPLATE = "a photo of a {word}"
ACC_MODEL = "openai/clip-vit-base-patch32"
SCORE_MODEL = "openai/clip-vit-large-patch14"
FILES = ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
         "merges.txt", "special_tokens_map.json"]


def features(out) -> torch.Tensor:
    """get_*_features' result: a tensor (transformers 4) or an output whose pooler_output is it (5)."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


class Clip:
    """A transformers CLIPModel and its processor, from a folder in transformers' layout."""

    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu"):
        from transformers import CLIPModel, CLIPProcessor
        self.folder, self.device = str(folder), torch.device(device)
        try:
            self.model = CLIPModel.from_pretrained(self.folder).to(self.device).eval()
            self.processor = CLIPProcessor.from_pretrained(self.folder)
        except (OSError, ValueError) as e:
            raise OSError(f"{folder}: not a CLIP model folder in transformers' layout ({', '.join(FILES)} and "
                          f"model.safetensors): {e}") from None

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """(B, D) unit vectors."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        e = features(self.model.get_image_features(pixel_values=pixels)).float()
        return e / e.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(B, D) unit vectors; texts cut at the text model's length."""
        length = self.model.config.text_config.max_position_embeddings
        t = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True, max_length=length)
        e = features(self.model.get_text_features(input_ids=t["input_ids"].to(self.device),
                                                  attention_mask=t["attention_mask"].to(self.device))).float()
        return e / e.norm(dim=-1, keepdim=True)


def clip_acc_success(image: torch.Tensor, source_text: torch.Tensor, target_text: torch.Tensor) -> bool:
    """CLIP-Acc's decision for one edit from unit embeddings (D,): closer to the target text than the source's."""
    return bool(image @ target_text > image @ source_text)


def clip_score(image: torch.Tensor, text: torch.Tensor) -> float:
    """PIE-Bench's CLIP score of unit embeddings (D,): max(100 cos, 0)."""
    return max(100 * float(image @ text), 0.0)


def edited_region(image: Image.Image, edited: torch.Tensor) -> Image.Image:
    """The 8-bit image with every unedited pixel black (PIE-Bench's region for its edited-part CLIP score)."""
    keep = edited.numpy()[..., None].astype(np.uint8)
    return Image.fromarray(np.asarray(image.convert("RGB")) * keep)


def clip_acc(clip: Clip, edit: Image.Image, source: str, target: str, template: str = TEMPLATE) -> float:
    """1.0 for a success, 0.0 for a failure (clip_acc_success on `edit` and the templated words)."""
    texts = clip.text_embeddings([template.format(word=source), template.format(word=target)])
    return float(clip_acc_success(clip.image_embeddings([edit])[0], texts[0], texts[1]))


def clip_scores(clip: Clip, edit: Image.Image, target_prompt: str, edited: torch.Tensor | None) -> dict[str, float]:
    """PIE-Bench's CLIP scores of an edit against the target prompt: whole, and edited region with a mask."""
    text = clip.text_embeddings([target_prompt])[0]
    images = [edit] + ([edited_region(edit, edited)] if edited is not None else [])
    e = clip.image_embeddings(images)
    out = {"clip_score": clip_score(e[0], text)}
    if edited is not None:
        out["clip_score_edited"] = clip_score(e[1], text)
    return out
