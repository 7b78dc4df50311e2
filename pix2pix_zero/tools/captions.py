"""Captions of real images with BLIP (Li et al., arXiv:2201.12086), the first step of pix2pix-zero (arXiv:2302.03027,
sec. 3.2): the caption is c for the inversion and the reference, so the user types only "cat -> dog".

The authors captioned with LAVIS' BLIP `base_coco`: the text prefix "a picture of ", beam search with 3 beams,
10 to 30 tokens (prefix included), the prefix cut from the result. The same here through transformers'
BlipForConditionalGeneration. The image is resized to 384 x 384 (bicubic) and normalised with CLIP's mean and
std by hand, as LAVIS' eval processor does, because transformers' BLIP image processor needs torchvision.
"""
import gc
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..loading.hub import resolve_pretrained
from .files import file_digest
from .image import read_image

CAPTIONERS = {"base": "Salesforce/blip-image-captioning-base", "large": "Salesforce/blip-image-captioning-large"}
FILES = ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
         "special_tokens_map.json"]
PREFIX = "a picture of "  # NOTE(official): LAVIS blip_caption base_coco's prompt, which the authors used
NUM_BEAMS, MIN_LENGTH, MAX_LENGTH = 3, 10, 30  # LAVIS BlipCaption.generate defaults (lengths in tokens)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Captioner:
    model: torch.nn.Module  # transformers' BlipForConditionalGeneration
    tokenizer: object  # BLIP's BERT tokenizer (a fast tokenizer: no sentencepiece)
    image_size: int  # BLIP's input side, 384 for base and large
    name: str  # what made the caption, for settings files: "BLIP Salesforce/blip-image-captioning-base"


def load_captioner(spec: str = "base", weights_dir: str | os.PathLike = "weights", device="cpu",
                   dtype: torch.dtype = torch.float32) -> Captioner:
    """BLIP from `spec`: "base", "large", a hub id, or a local folder in transformers' layout."""
    from transformers import AutoTokenizer, BlipForConditionalGeneration
    folder = resolve_pretrained(spec, CAPTIONERS, weights_dir, FILES, "--captioner",
                                instead='Or give the caption with --prompt "a photo of ...": no captioner is needed.')
    try:
        model = BlipForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder}: not a BLIP captioning model in transformers' layout ({e})") from None
    name = CAPTIONERS.get(spec, spec)
    return Captioner(model, tokenizer, model.config.vision_config.image_size, f"BLIP {name}")


def blip_pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """RGB images -> (B, 3, size, size): bicubic resize to a square, [0, 1], then CLIP's normalisation."""
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    pixels = []
    for im in images:
        im = im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S)
        pixels.append((x - mean) / std)
    return torch.stack(pixels)


@torch.no_grad()
def caption_images(captioner: Captioner, images: list[Image.Image], batch_size: int = 8) -> list[str]:
    """One caption per image, deterministic (beam search): "a cat sitting on a couch", prefix removed."""
    model, tokenizer = captioner.model, captioner.tokenizer
    device, dtype = model.device, next(model.parameters()).dtype
    captions = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        ids = tokenizer([PREFIX] * len(chunk), return_tensors="pt").input_ids.to(device)  # [CLS] prefix [SEP]
        out = model.generate(pixel_values=blip_pixels(chunk, captioner.image_size).to(device, dtype), input_ids=ids,
                             num_beams=NUM_BEAMS, min_length=MIN_LENGTH, max_length=MAX_LENGTH, do_sample=False)
        for text in tokenizer.batch_decode(out, skip_special_tokens=True):
            text = " ".join(text.split())
            captions.append(text[len(PREFIX.strip()):].strip() if text.startswith(PREFIX.strip()) else text)
    return captions


def known_caption(out_dir: Path, stem: str, digest: str, captioner_name: str) -> str | None:
    """The caption an earlier run stored for this very image (same bytes, same captioner), if any: read from
    the settings JSON of any of its edits (STEM-*.json), so an image is captioned once."""
    for settings in sorted(Path(out_dir).glob(f"{glob.escape(stem)}-*.json")):
        try:
            record = json.loads(settings.read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and record.get("input_sha256") == digest and \
                record.get("caption_from") == captioner_name and record.get("caption"):
            return record["caption"]
    return None


def caption_files(paths: list[Path], stems: dict[Path, str], out_dir: str | os.PathLike, spec: str = "base",
                  weights_dir: str | os.PathLike = "weights", device="cpu", dtype: torch.dtype = torch.float32,
                  batch_size: int = 8, progress: bool = False) -> tuple[dict[Path, str], str]:
    """({path: caption}, captioner name) for image files: captions stored by earlier runs are reused, the rest
    made in batches. BLIP is released before returning, so Stable Diffusion, loaded next, never shares memory
    with it: the peak is the larger of the two models, not their sum. A caption may come back empty (BLIP wrote
    nothing): the caller decides (tools.folder fails that image with a message)."""
    name = f"BLIP {CAPTIONERS.get(spec, spec)}"
    digests = {p: file_digest(p) for p in paths}
    captions = {p: c for p in paths if (c := known_caption(Path(out_dir), stems[p], digests[p], name))}
    todo = [p for p in paths if p not in captions]
    if todo:
        captioner = load_captioner(spec, weights_dir, device, dtype)
        from tqdm import tqdm
        for i in tqdm(range(0, len(todo), batch_size), desc="captions", unit="batch", disable=not progress):
            chunk = todo[i:i + batch_size]
            captions.update(zip(chunk, caption_images(captioner, [read_image(p) for p in chunk], batch_size)))
        del captioner
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {p: captions[p] for p in paths}, name
