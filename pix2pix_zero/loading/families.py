"""The model families load_sd knows, and how a checkpoint tells which one it holds.

SD 1.x (OpenAI CLIP ViT-L/14 text), SD 2.x (OpenCLIP ViT-H/14) and SDXL 1.0 base (CLIP ViT-L/14 + OpenCLIP
ViT-bigG/14, an added embedding of pooled text and size/crop numbers; Podell et al., arXiv:2307.01952). Here:
where each part lives in an original single file, what tensor shapes cannot say (activations, padding tokens,
SDXL's size/crop embedding widths), the family from the UNet's shapes and from a file's text towers, and the one
refusal message for everything else (the SDXL refiner, unCLIP, incomplete files).
"""
from pathlib import Path

from ..models.unet import UNetConfig
from . import openclip
from .checkpoint import CheckpointError, group_keys

UNET, VAE = "model.diffusion_model.", "first_stage_model."
# Where each part of an original single file lives, by family; the text towers tell the families apart.
SINGLE_FILE_PARTS = {
    "sd1": {"unet": UNET, "vae": VAE, "text": "cond_stage_model.transformer."},
    "sd2": {"unet": UNET, "vae": VAE, "text": openclip.PREFIX},
    "sdxl": {"unet": UNET, "vae": VAE, "text": "conditioner.embedders.0.transformer.", "text_2": openclip.SDXL_PREFIX},
}
OPENCLIP_PART = {"sd2": "text", "sdxl": "text_2"}  # the part stored in open_clip's names, by family
SUPPORTED = "SD 1.x, SD 2.x and SDXL 1.0 base text-to-image checkpoints"
# What tensor shapes cannot say, by family: the text encoder's activation and the tokenizer's padding token.
FAMILIES = {"sd1": {"hidden_act": "quick_gelu", "pad_token": "<|endoftext|>"},  # OpenAI CLIP ViT-L/14
            "sd2": {"hidden_act": "gelu", "pad_token": "!"},  # OpenCLIP ViT-H/14; open_clip.tokenize pads with 0
            # SDXL's first encoder is OpenAI CLIP ViT-L/14 (sgm FrozenCLIPEmbedder: transformers' tokenizer of
            # openai/clip-vit-large-patch14); its second, OpenCLIP ViT-bigG/14, is "text_2" (open_clip.tokenize;
            # diffusers' tokenizer_2 is loaded with pad_token="!", convert_from_ckpt.py).
            "sdxl": {"hidden_act": "quick_gelu", "pad_token": "<|endoftext|>"}}
SDXL_TEXT_2 = {"hidden_act": "gelu", "pad_token": "!"}
SDXL_TIME_IDS = 6, 256  # six size/crop numbers, each a 256-channel sinusoid (sgm ConcatTimestepEmbedderND)
UNET_KINDS = {"sd1": "SD 1.x (1x1-conv proj_in)", "sd2": "SD 2.x (Linear proj_in)", "sdxl": "SDXL (add_embedding)"}
TEXT_KINDS = {"sd1": "OpenAI CLIP (SD 1.x)", "sd2": "OpenCLIP (SD 2.x)", "sdxl": "CLIP ViT-L + OpenCLIP ViT-bigG (SDXL)"}


def unsupported(path, what: str) -> CheckpointError:
    """The one refusal for a checkpoint of a kind this project does not load: the file, what it is, what loads."""
    return CheckpointError(f"{path}: {what}; not supported (pix2pix_zero loads {SUPPORTED})")


def single_file_family(path, keys: list[str]) -> str:
    """The family a single file's text tower(s) say: "sd1" (OpenAI CLIP under cond_stage_model.transformer),
    "sd2" (OpenCLIP under cond_stage_model.model) or "sdxl" (SDXL 1.0 base's two encoders); refuses the rest."""
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("conditioner."):
        xl = SINGLE_FILE_PARTS["sdxl"]
        if has(xl["text"]) and has(xl["text_2"]):
            return "sdxl"
        if has("conditioner.embedders.0.model."):
            raise unsupported(path, "an SDXL refiner (one OpenCLIP ViT-bigG text encoder, conditioner.embedders.0"
                                    ".model, and aesthetic-score conditioning)")
        raise unsupported(path, f"an SDXL-style checkpoint (conditioner.*) without SDXL 1.0 base's two text "
                                f"encoders (it holds: {group_keys([k for k in keys if k.startswith('conditioner.')], 3)})")
    if has(UNET + "label_emb."):
        raise unsupported(path, "a class-conditioned UNet (label_emb) without SDXL's text encoders, e.g. SD 2.x "
                                "unCLIP")
    return "sd2" if has(openclip.PREFIX) else "sd1"


def detect_family(unet_shapes: dict[str, tuple[int, ...]]) -> str:
    """"sd1", "sd2" or "sdxl" from the UNet's tensor shapes (our key names), never from a file name.

    SDXL's UNet alone has an added embedding (add_embedding, the original's label_emb). SD 2.x's spatial
    transformers project in and out with Linear layers (a 2-D proj_in weight), SD 1.x's with 1x1 convolutions
    (4-D); every SD UNet has one in its mid block. (The context width, 768 vs 1024, tells them apart too at full
    size, but not at test sizes.) The text tower(s) must agree: see `read_layout`.
    """
    if "add_embedding.linear_1.weight" in unet_shapes:
        return "sdxl"
    return "sd2" if len(unet_shapes["mid_block.attentions.0.proj_in.weight"]) == 2 else "sd1"


def added_inputs(shapes: dict[str, tuple[int, ...]]) -> int:
    """Inputs of the UNet's add_embedding (0 without one): SDXL base's pooled text + six size/crop embeddings."""
    return shapes["add_embedding.linear_1.weight"][1] if "add_embedding.linear_1.weight" in shapes else 0


def check_sdxl_widths(path: Path, ucfg: UNetConfig, added: int, tcfg, tcfg_2) -> None:
    """SDXL's UNet reads what its text encoders give: context D1 + D2, and add_embedding the pooled embedding (P)
    + six 256-channel size/crop embeddings; anything else (the refiner's five ids) is refused by name."""
    D1, D2, P = tcfg.hidden_size, tcfg_2.hidden_size, tcfg_2.projection_dim
    n_ids, id_dim = SDXL_TIME_IDS
    if added != P + n_ids * id_dim:
        raise unsupported(path, f"an SDXL-like UNet whose add_embedding takes {added} inputs (SDXL 1.0 base: the "
                                f"{P}-wide pooled embedding + {n_ids} x {id_dim} size/crop embeddings = "
                                f"{P + n_ids * id_dim})")
    if ucfg.context_dim != D1 + D2:
        raise CheckpointError(f"{path}: the UNet's context is {ucfg.context_dim} wide, but the text encoders give "
                              f"{D1} + {D2} = {D1 + D2}")
