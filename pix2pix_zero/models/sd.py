"""`StableDiffusion`: the models one pix2pix-zero run uses, with where they came from.

The UNet, the VAE, CLIP's text encoder and tokenizer, and what the checkpoint says about them: the prediction
type (eps or v), the family (SD 1.x or 2.x) and content fingerprints for provenance. `loading.load_sd` makes one
from a checkpoint on disk; the method only reads it.
"""
from dataclasses import dataclass, field

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from .text import encode_text
from .unet import UNet
from .vae import LATENT_SCALE, AutoencoderKL


@dataclass
class StableDiffusion:
    unet: UNet
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    prediction_type: str  # "epsilon" or "v_prediction": what unet(x_t, t, c) returns
    family: str  # "sd1" or "sd2"
    identity: str  # a content fingerprint of the checkpoint files, for settings files and saved inversions
    text_identity: str  # the same for the file holding the text encoder, for the sentence-embedding cache
    source: str
    latent_scale: float = LATENT_SCALE
    skipped: list[str] = field(default_factory=list, repr=False)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """c = text embeddings (B, 77, D) for a list of prompts: the text encoder's last hidden state after its
        final layer norm. For SD 2.x that is OpenCLIP's penultimate block + ln_final, because the last block
        was dropped at load time (openclip.py; diffusers' SD 2.x folders store 23 of 24 blocks already)."""
        return encode_text(self.tokenizer, self.text_encoder, prompts)
