"""`StableDiffusion`: the models one pix2pix-zero run uses, with where they came from.

The UNet, the VAE, CLIP's text encoder and tokenizer (SDXL: and its second pair, OpenCLIP ViT-bigG/14), and what
the checkpoint says about them: the prediction type (eps or v), the family (SD 1.x, 2.x or SDXL) and content
fingerprints for provenance. `loading.load_sd` makes one from a checkpoint on disk; the method only reads it.
"""
from dataclasses import dataclass, field

import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .text import encode_text, encode_text_sdxl
from .unet import TOKENS, UNet, pack_conditioning
from .vae import LATENT_SCALE, AutoencoderKL


@dataclass
class StableDiffusion:
    unet: UNet
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    prediction_type: str  # "epsilon" or "v_prediction": what unet(x_t, t, c) returns
    family: str  # "sd1", "sd2" or "sdxl"
    identity: str  # a content fingerprint of the checkpoint files, for settings files and saved inversions
    text_identity: str  # the same for the file(s) holding the text encoder(s), for the sentence-embedding cache
    source: str
    latent_scale: float = LATENT_SCALE  # SDXL: vae.SDXL_LATENT_SCALE
    skipped: list[str] = field(default_factory=list, repr=False)
    text_encoder_2: CLIPTextModelWithProjection | None = None  # SDXL's OpenCLIP ViT-bigG/14; None for SD 1.x/2.x
    tokenizer_2: CLIPTokenizer | None = None  # SDXL: pads with "!" (id 0), the first pads with <|endoftext|>

    def encode_text(self, prompts: list[str], time_ids: tuple[int, ...] | None = None) -> torch.Tensor:
        """c = text embeddings (B, 77, D) for a list of prompts, D = unet.config.context_dim; for SDXL packed
        with the pooled embedding and the size/crop numbers `time_ids` (default `sdxl_time_ids((1024, 1024))`)
        into (B, 78, D) (unet.pack_conditioning: the one tensor the method adds to and stacks).

        SD 1.x/2.x: the text encoder's last hidden state after its final layer norm. For SD 2.x that is
        OpenCLIP's penultimate block + ln_final, because the last block was dropped at load time (openclip.py;
        diffusers' SD 2.x folders store 23 of 24 blocks already). SDXL: both encoders' penultimate layers side by
        side, D = 768 + 1280 (`encode_text_and_pooled`, which also gives the pooled embedding the UNet needs)."""
        if self.text_encoder_2 is None:
            return encode_text(self.tokenizer, self.text_encoder, prompts)
        c, pooled = self.encode_text_and_pooled(prompts)
        return pack_conditioning(c, pooled, torch.tensor(time_ids or sdxl_time_ids((1024, 1024))))

    @property
    def conditioning_shape(self) -> tuple[int, int]:
        """(rows, D) of each prompt's c: (77, D), or SDXL's packed (78, 2048)."""
        return (TOKENS + (self.text_encoder_2 is not None), self.unet.config.context_dim)

    def encode_text_and_pooled(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(c, pooled) for a list of prompts: SDXL's c (B, 77, 2048) and pooled text embedding (B, 1280), which
        `unet(x_t, t, c, pooled=pooled, time_ids=...)` takes; SD 1.x/2.x: (c, None)."""
        if self.text_encoder_2 is None:
            return encode_text(self.tokenizer, self.text_encoder, prompts), None
        return encode_text_sdxl(self.tokenizer, self.text_encoder, self.tokenizer_2, self.text_encoder_2, prompts)


def sdxl_time_ids(size: tuple[int, int], original: tuple[int, int] | None = None,
                  crop_top_left: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    """SDXL's six size/crop numbers (Podell et al., arXiv:2307.01952, sec. 2.2), all (height, width) pairs in
    pixels: the original image's size (default: `size`), the top-left corner of the crop (in the pixels of the
    original resized so that the crop fits, as SDXL's training crops were taken), and the generated size. diffusers' StableDiffusionXLPipeline._get_add_time_ids
    orders them the same way; for a generation it uses original = target = the image size, crop (0, 0)."""
    return (*(original or size), *crop_top_left, *size)
