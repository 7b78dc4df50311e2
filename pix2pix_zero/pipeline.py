"""The whole method in one call: `edit_image` encodes and inverts the image, builds the edit directions, runs
the reference and the edits step by step, and decodes them (pix2pix-zero, arXiv:2302.03027, Algorithm 1).

The command line, the web app and the README's example go through it. It picks the paper's loops (inversion.py,
editing.py, with the options of options.py) or diffusers_compat's by `config.setting`, applies that setting's
rules, and returns the settings it actually used, and how faithfully the reference reconstructs the input. Images are (1, 3, H, W) in [-1, 1];
latents (1, 4, H/8, W/8).
"""
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from . import diffusers_compat, inversion, options
from .config import EditConfig
from .directions import edit_direction, template_sentences
from .editing import decode_latents, initial_noise
from .models.sd import StableDiffusion, sdxl_time_ids
from .tools.evaluation import metrics


@dataclass
class EditResult:
    image: torch.Tensor  # the input, or for a synthetic run the generated image (= reconstruction)
    reconstruction: torch.Tensor  # the reference trajectory decoded, D(x_ref)
    edits: list[torch.Tensor]  # one decoded edit per target
    x0: torch.Tensor | None  # the encoded input (None for a synthetic run)
    x_inv: torch.Tensor  # where both trajectories start
    x_ref: torch.Tensor
    x_edits: list[torch.Tensor]
    settings: dict  # what the run used: config (the setting's rules applied), prompts, words, model
    x_path: torch.Tensor | None = None  # (N + 1, 1, 4, h, w) inversion levels, kept for inversion_method "direct"
    reconstruction_error: dict = field(default_factory=dict)  # `reconstruction_errors` (empty for synthetic)


def setting_rules(config: EditConfig) -> EditConfig:
    """The config a run actually uses: `posterior` None becomes the setting's (paper: mean; diffusers: sample)."""
    if config.posterior is not None:
        return config
    return replace(config, posterior=diffusers_compat.POSTERIOR if config.setting == "diffusers" else "mean")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1], each clamped to it: the evaluation's PSNR (peak 1) of the images
    mapped to [0, 1], the usual PSNR of 8-bit images before rounding."""
    def unit(x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [-1, 1] -> (3, B H, W) in [0, 1]
        return (x.detach().float().cpu().clamp(-1, 1).movedim(-3, 0).flatten(1, -2) + 1) / 2
    return metrics.psnr(unit(a), unit(b))


def reconstruction_errors(x0: torch.Tensor, x_ref: torch.Tensor, image: torch.Tensor, decoded_x0: torch.Tensor,
                          reconstruction: torch.Tensor) -> dict[str, float]:
    """How far the reference trajectory's end lands from the input.

    latent_rms: RMS of x_ref - x0 (the inversion and reference sampling alone); psnr_input_db: the input
    image vs D(x_ref) (everything, the VAE included); psnr_decoded_x0_db: D(x0) vs D(x_ref) (the VAE's own
    loss taken out, so it measures the inversion through the decoder).
    """
    return {"latent_rms": ((x_ref.float() - x0.float()) ** 2).mean().sqrt().item(),
            "psnr_input_db": psnr(image.to(reconstruction.device), reconstruction),
            "psnr_decoded_x0_db": psnr(decoded_x0, reconstruction)}


def negative_conditioning(sd: StableDiffusion, negative: str, time_ids: tuple[int, ...] | None) -> torch.Tensor:
    """c_neg for classifier-free guidance: the negative prompt's embedding; for SDXL an empty negative prompt is
    all zeros (token rows and pooled embedding), the size/crop numbers kept."""
    c_neg = sd.encode_text([negative], time_ids)
    if sd.family == "sdxl" and negative == "":
        # NOTE(official): SDXL base ships force_zeros_for_empty_prompt=True: diffusers' StableDiffusionXLPipeline
        # conditions on zeros, not on the encoded "", when the negative prompt is empty.
        c_neg = torch.cat([torch.zeros_like(c_neg[:, :-1]), c_neg[:, -1:]], dim=1)
        c_neg[:, -1, :sd.unet.config.pooled_dim] = 0
    return c_neg


def edit_image(sd: StableDiffusion, image: torch.Tensor | None, caption: str, source: str, targets: list[str],
               config: EditConfig, generator: torch.Generator, *, directions: list[torch.Tensor] | None = None,
               negative_prompt: str | None = None, inverted: tuple[torch.Tensor, torch.Tensor] | None = None,
               x_path: torch.Tensor | None = None, size: tuple[int, int] | None = None,
               on_reference: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
               time_ids: tuple[int, ...] | None = None, progress: bool = True) -> EditResult:
    """Edit from the word `source` to each word of `targets` (e.g. "cat" -> ["dog", "fox"]), keeping the image.

    What is edited, one of:
      image (1, 3, H, W) in [-1, 1]: a real image, encoded and inverted;
      image None, inverted = (x0, x_inv): a saved inversion (its input is taken to be D(x0)), with x_path, its
        levels (N + 1, 1, 4, h, w), for inversion_method "direct";
      image None, size = (H, W) in pixels: a synthetic image, generated from seeded x_T with the caption (no
        inversion, so inversion_method changes nothing: the reference is the generation itself).
    caption: c, what the image shows (or the synthetic prompt). negative_prompt: c_neg for classifier-free
    guidance; default: the caption for real images (as the authors), "" for synthetic ones.
    directions: delta_c (1, L, D) per target, e.g. from tools.sentences with its cache; default: computed
    here from the built-in template sentences.
    time_ids: SDXL's size/crop numbers (models.sd.sdxl_time_ids; tools.image.geometry_time_ids for a file);
    default: the edited image's size, uncropped. Other families have none.
    generator draws everything random, in this order: the posterior sample (if the setting samples), the
    regularizer's shifts, x_T (synthetic).
    """
    config = setting_rules(config)
    diffusers = config.setting == "diffusers"
    if diffusers and sd.family == "sdxl":
        raise ValueError("the diffusers setting reproduces diffusers' StableDiffusionPix2PixZeroPipeline, which "
                         "runs SD 1.x/2.x only: use --setting paper for SDXL")
    real = image is not None or inverted is not None
    device, dtype = sd.unet.conv_in.weight.device, sd.unet.conv_in.weight.dtype
    negative = negative_prompt if negative_prompt is not None else (caption if real else "")
    if time_ids is None and sd.family == "sdxl":
        hw = tuple(image.shape[-2:]) if image is not None else size if size is not None else \
            tuple(8 * s for s in inverted[1].shape[-2:])
        time_ids = sdxl_time_ids(hw)
    c, c_neg = sd.encode_text([caption], time_ids), negative_conditioning(sd, negative, time_ids)  # (1, L, D)

    x0 = None
    direct = config.inversion_method == "direct"
    if image is not None:
        x0 = inversion.encode_image(sd, image.to(device, dtype), config.posterior, generator)
        if diffusers:
            x_inv = diffusers_compat.invert(sd, x0, c, config, generator, progress)
        else:
            levels = options.invert_path(sd, x0, c, config, generator, progress)
            x_inv, x_path = levels[-1], levels if direct else None
    elif inverted is not None:
        x0, x_inv = (x.to(device, dtype) for x in inverted)
        if direct and x_path is None:
            raise ValueError("inversion_method 'direct' edits along the inversion's recorded levels, and this "
                             "inversion has none: invert the image again with inversion_method 'direct'")
        x_path = x_path.to(device, dtype) if direct else None
    elif size is not None:
        x_inv = initial_noise((1, 4, size[0] // 8, size[1] // 8), generator, device, dtype)
    else:
        raise ValueError("edit_image needs an image, a saved inversion (inverted=) or a synthetic size (size=)")

    if directions is None:
        directions = [edit_direction(sd, template_sentences(source), template_sentences(target)) for target in targets]
    if len(directions) != len(targets):
        raise ValueError(f"{len(targets)} targets but {len(directions)} directions")
    if diffusers:
        x_ref, x_edits = diffusers_compat.edit(sd, x_inv, c, directions, c_neg, config, progress, on_reference)
    else:
        x_ref, x_edits = options.edit(sd, x_inv, c, directions, c_neg, config, progress, on_reference, x_path)

    reconstruction = decode_latents(sd, x_ref)
    errors = {}
    if x0 is not None:
        decoded_x0 = decode_latents(sd, x0)
        image = decoded_x0 if image is None else image
        errors = reconstruction_errors(x0, x_ref, image, decoded_x0, reconstruction)
    elif image is None:
        image = reconstruction
    settings = {"config": config.to_dict(), "caption": caption, "negative_prompt": negative, "source": source,
                "targets": list(targets), "prediction_type": sd.prediction_type, "family": sd.family}
    return EditResult(image, reconstruction, [decode_latents(sd, x) for x in x_edits], x0, x_inv, x_ref, x_edits,
                      settings, x_path, errors)
