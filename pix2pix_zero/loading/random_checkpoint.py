"""Seeded random Stable Diffusion checkpoints in the real layouts, for tests and benchmarks.

python -m pix2pix_zero.loading.random_checkpoint OUT --layout single|diffusers [--family sd1|sd2|sdxl] [--full-size] [--dtype fp16]

Tiny: SD 1.x topology (4 levels, 2 layers per block, attention on the first three levels and the mid block,
32 GroupNorm groups, 8 UNet heads, 64-channel CLIP heads) at small widths. Full size: SD 1.5's shapes (an
860M-parameter UNet). Weights are variance-preserving random draws (std 1/sqrt(fan_in), norms near 1), so
every path is exercised and activations stay in a sane range. Single files also carry the extra keys real
ones do (LDM schedule buffers, EMA counters, position_ids), so the loader's skip rule is exercised.
--family sd2: SD 2.x's differences (64-channel UNet heads, so every width is a multiple of 64; Linear
proj_in/proj_out; a GELU text encoder, stored as an OpenCLIP tower in single files and with its last block
dropped in diffusers folders; padding "!"; v-prediction unless --prediction-type says otherwise). With
--full-size: SD 2.1's shapes (context 1024; OpenCLIP ViT-H/14 text, width 1024, 24 blocks, 16 heads).
--family sdxl: SDXL 1.0 base's topology (3 levels, none at the first, several transformer blocks per spatial
transformer, the added embedding of pooled text and six size/crop ids) and two text encoders (CLIP ViT-L, GELU
OpenCLIP with a text projection, stored whole in open_clip's names in single files), at small widths; with
--full-size SDXL 1.0 base's shapes (a 2.57B-parameter UNet: about 10 GB of fp32 weights, build with care).
"""
import argparse
import json
import math
import os
import secrets
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import convert, openclip
from ..tools.files import atomic_path
from .clip_text import BPE_DIR, new_text_encoder, tiny_text_config
from ..models.ddim import alphas_cumprod
from ..models.text import clip_text_config
from ..models.unet import UNet, UNetConfig
from ..models.vae import LATENT_SCALE, SDXL_LATENT_SCALE, AutoencoderKL, VAEConfig


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    n = torch.randn(shape, generator=generator)
    if len(shape) == 1:
        is_norm = "norm" in name.rsplit(".", 2)[-2] or "ln" in name
        return 1.0 + 0.1 * n if is_norm and name.endswith("weight") else 0.05 * n
    return n / math.sqrt(math.prod(shape[1:]))


def random_weights(module: torch.nn.Module, generator: torch.Generator, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One random tensor per state-dict entry of `module` (which may live on the meta device)."""
    return {k: random_tensor(k, tuple(v.shape), generator).to(dtype) for k, v in module.state_dict().items()}


SD2_UNET = {"num_heads": None, "head_dim": 64, "linear_projection": True}  # SD 2.x's UNet differences


def models(full_size: bool, family: str = "sd1"):
    """(UNetConfig, VAEConfig, CLIPTextConfig) of the family; for SD 2.x the text config is the whole OpenCLIP
    tower, as single files store it (diffusers folders drop its last block)."""
    if family == "sd2" and full_size:  # SD 2.1
        return (UNetConfig(context_dim=1024, **SD2_UNET), VAEConfig(),
                clip_text_config(1024, 24, 4096, 49408, 77, "gelu"))
    if family == "sd2":  # widths in 64-channel heads: 1, 2, 2, 2 heads; context 128 = 2 heads, 3 text blocks
        return (UNetConfig(block_out_channels=(64, 128, 128, 128), context_dim=128, **SD2_UNET), VAEConfig.tiny(),
                clip_text_config(128, 3, 512, 49408, 77, "gelu"))
    if family != "sd1":
        raise ValueError(f"family must be 'sd1' or 'sd2', not {family!r}")
    if full_size:
        return UNetConfig(), VAEConfig(), clip_text_config(768, 12, 3072, 49408, 77, "quick_gelu")
    return UNetConfig.tiny(), VAEConfig.tiny(), tiny_text_config()


SDXL_UNET = {"attention_levels": (False, True, True), "num_heads": None, "head_dim": 64, "linear_projection": True}


def sdxl_models(full_size: bool):
    """(UNetConfig, VAEConfig, CLIP ViT-L's CLIPTextConfig, OpenCLIP ViT-bigG's CLIPTextConfig) of SDXL 1.0 base,
    or its tiny stand-in: widths 32 (no attention), 64 and 128 (1 and 2 heads of 64), 2 and 3 transformer blocks
    at levels 1 and 2 (so 3 in the mid block); text widths 64 + 128 = context 192; a 32-wide pooled projection
    (not square, so a transposed projection cannot load)."""
    if full_size:
        return (UNetConfig(block_out_channels=(320, 640, 1280), transformer_depth=(1, 2, 10), context_dim=2048,
                           pooled_dim=1280, **SDXL_UNET), VAEConfig(),
                clip_text_config(768, 12, 3072, 49408, 77, "quick_gelu"),
                clip_text_config(1280, 32, 5120, 49408, 77, "gelu", projection_dim=1280))
    return (UNetConfig(block_out_channels=(32, 64, 128), transformer_depth=(1, 2, 3), context_dim=192, pooled_dim=32,
                       **SDXL_UNET), VAEConfig.tiny(), tiny_text_config(),
            clip_text_config(128, 3, 512, 49408, 77, "gelu", projection_dim=32))


def diffusers_configs(ucfg: UNetConfig, vcfg: VAEConfig, text_cfg,
                      prediction_type: str = "epsilon") -> dict[str, dict]:
    """unet/, vae/, scheduler/ and text_encoder/ configs as diffusers and transformers write them (SDXL: the UNet's
    added embedding and depths, the VAE's scale and force_upcast, an Euler scheduler as in SDXL's own folder)."""
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in ucfg.attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in ucfg.attention_levels[::-1]]
    unet = {"_class_name": "UNet2DConditionModel", "in_channels": ucfg.in_channels, "out_channels": ucfg.out_channels,
            "block_out_channels": list(ucfg.block_out_channels), "layers_per_block": ucfg.layers_per_block,
            "down_block_types": down, "up_block_types": up, "cross_attention_dim": ucfg.context_dim,
            "attention_head_dim": ucfg.num_heads or [c // ucfg.head_dim or 1 for c in ucfg.block_out_channels],
            "use_linear_projection": ucfg.linear_projection, "norm_num_groups": ucfg.groups,
            "flip_sin_to_cos": True, "freq_shift": 0, "sample_size": 64}
    vae = {"_class_name": "AutoencoderKL", "in_channels": vcfg.in_channels, "out_channels": vcfg.in_channels,
           "block_out_channels": list(vcfg.block_out_channels), "layers_per_block": vcfg.layers_per_block,
           "down_block_types": ["DownEncoderBlock2D"] * len(vcfg.block_out_channels),
           "up_block_types": ["UpDecoderBlock2D"] * len(vcfg.block_out_channels),
           "latent_channels": vcfg.latent_channels, "norm_num_groups": vcfg.groups, "sample_size": 512,
           "scaling_factor": LATENT_SCALE}
    scheduler = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
                 "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
                 "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": prediction_type}
    if set(ucfg.transformer_depth) != {1}:
        unet["transformer_layers_per_block"] = list(ucfg.transformer_depth)
    if ucfg.pooled_dim:  # SDXL
        unet |= {"addition_embed_type": "text_time", "addition_time_embed_dim": ucfg.time_id_dim,
                 "projection_class_embeddings_input_dim": ucfg.added_dim, "sample_size": 128}
        vae |= {"scaling_factor": SDXL_LATENT_SCALE, "force_upcast": True, "sample_size": 1024}
        scheduler = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
                     "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1,
                     "timestep_spacing": "leading", "interpolation_type": "linear", "prediction_type": prediction_type}
    text = text_cfg.to_dict() | {"architectures": ["CLIPTextModel"]}
    return {"unet": unet, "vae": vae, "scheduler": scheduler, "text_encoder": text}


def single_file_state_dict(ucfg: UNetConfig, vcfg: VAEConfig, w_unet: dict[str, torch.Tensor],
                           w_vae: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our UNet and VAE state dicts under the original single-file names (model.diffusion_model.input_blocks...,
    first_stage_model.encoder.down...), the VAE's attention weights as the 1x1 convolutions stored there."""
    ut = convert.unet_table(len(ucfg.block_out_channels), ucfg.layers_per_block, list(ucfg.attention_levels),
                            added_embedding=bool(ucfg.pooled_dim))
    vt = convert.vae_table(len(vcfg.block_out_channels), vcfg.layers_per_block)
    sd = {"model.diffusion_model." + convert.rename(k, ut, to_ours=False): v for k, v in w_unet.items()}
    for k, v in w_vae.items():
        k = convert.rename(k, vt, to_ours=False)
        sd["first_stage_model." + k] = v[:, :, None, None] if ".attn_1." in k and v.ndim == 2 else v
    return sd


def make_checkpoint(out: str | os.PathLike, layout: str = "single", full_size: bool = False, seed: int = 0,
                    dtype: torch.dtype = torch.float32, legacy_vae: bool = False, family: str = "sd1",
                    prediction_type: str | None = None) -> Path:
    """Write a random SD 1.x, 2.x or SDXL checkpoint to `out` (a .safetensors file, or a folder for
    layout='diffusers').

    Both layouts of one seed and family hold the same weights. prediction_type goes into a folder's scheduler
    config (default: epsilon for sd1 and sdxl, v_prediction for sd2); for a single file, if given, into an LDM
    config `<stem>.yaml` beside it (without one, the loader's single-file default applies).
    """
    out = Path(out)
    g = torch.Generator().manual_seed(seed)
    ucfg, vcfg, text_cfg, text_cfg_2 = sdxl_models(full_size) if family == "sdxl" else (*models(full_size, family),
                                                                                       None)
    with torch.device("meta"):
        unet, vae = UNet(ucfg), AutoencoderKL(vcfg)
    text = new_text_encoder(text_cfg, "cpu")
    w_unet, w_vae = random_weights(unet, g, dtype), random_weights(vae, g, dtype)
    w_text = {k if k.startswith("text_model.") else "text_model." + k: v
              for k, v in random_weights(text, g, dtype).items()}
    w_text_2 = random_weights(new_text_encoder(text_cfg_2, "cpu", projection=True), g, dtype) if text_cfg_2 else {}
    if layout == "single":
        sd = single_file_state_dict(ucfg, vcfg, w_unet, w_vae)
        if family == "sdxl":  # CLIP ViT-L in transformers' names, ViT-bigG whole in open_clip's (as sgm saves them)
            sd |= {"conditioner.embedders.0.transformer." + k: v for k, v in w_text.items()}
            sd["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
            sd |= {openclip.SDXL_PREFIX + k: v for k, v in openclip.to_openclip(w_text_2).items()}
            sd[openclip.SDXL_PREFIX + "logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=dtype)
        elif family == "sd2":  # the whole OpenCLIP tower, with its contrastive head, as SD 2.x files store it
            sd |= {openclip.PREFIX + k: v for k, v in openclip.to_openclip(w_text).items()}
            D = text_cfg.hidden_size
            sd |= {openclip.PREFIX + "text_projection": random_tensor("text_projection", (D, D), g).to(dtype),
                   openclip.PREFIX + "logit_scale": torch.tensor(math.log(1 / 0.07), dtype=dtype)}
        else:
            sd |= {"cond_stage_model.transformer." + k: v for k, v in w_text.items()}
            sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
        if family == "sdxl":  # sgm's DiscreteDenoiser buffer, not LDM's schedule buffers
            sd["denoiser.sigmas"] = ((1 - alphas_cumprod()) / alphas_cumprod()).sqrt()
        else:
            sd |= {"betas": torch.zeros(1000), "alphas_cumprod": alphas_cumprod()}
        sd["model_ema.num_updates"] = torch.tensor(0)
        with atomic_path(out) as tmp:
            save_file(sd, tmp)
        if prediction_type is not None:  # the original LDM config's one line that matters here
            v = "    parameterization: \"v\"\n" if prediction_type == "v_prediction" else ""
            out.with_suffix(".yaml").write_text(f"model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"
                                                f"  params:\n{v}    linear_start: 0.00085\n")
        return out
    if layout != "diffusers":
        raise ValueError(f"layout must be 'single' or 'diffusers', not {layout!r}")
    if legacy_vae:  # old diffusers VAE files: query/key/value/proj_attn, nn.Linear weights (2-D) as ours
        w_vae = {convert.rename_legacy_vae(k, to_ours=False): v for k, v in w_vae.items()}
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")  # unique per writer
    pad_token = "<|endoftext|>"
    if family == "sd2":  # diffusers' converter drops the last OpenCLIP block, after the penultimate layer SD reads
        last = text_cfg.num_hidden_layers - 1
        w_text = {k: v for k, v in w_text.items() if not k.startswith(f"text_model.encoder.layers.{last}.")}
        text_cfg = type(text_cfg).from_dict(text_cfg.to_dict() | {"num_hidden_layers": last})
        pad_token = "!"
    configs = diffusers_configs(ucfg, vcfg, text_cfg,
                                prediction_type or ("v_prediction" if family == "sd2" else "epsilon"))
    parts = [("unet", w_unet, "diffusion_pytorch_model"), ("vae", w_vae, "diffusion_pytorch_model"),
             ("text_encoder", w_text, "model")]
    tokenizers = {"tokenizer": pad_token}
    if text_cfg_2 is not None:  # SDXL's second text encoder and its tokenizer, which pads with "!"
        configs["text_encoder_2"] = text_cfg_2.to_dict() | {"architectures": ["CLIPTextModelWithProjection"]}
        parts.append(("text_encoder_2", w_text_2, "model"))
        tokenizers["tokenizer_2"] = "!"
    for sub, weights, name in parts:
        (tmp / sub).mkdir(parents=True)
        save_file(weights, tmp / sub / f"{name}.safetensors")
        (tmp / sub / "config.json").write_text(json.dumps(configs[sub], indent=2))
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs["scheduler"], indent=2))
    for sub, pad in tokenizers.items():
        shutil.copytree(BPE_DIR, tmp / sub, ignore=shutil.ignore_patterns("*.py", "LICENSE", "README.md"))
        (tmp / sub / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "pad_token": pad}))
    pipeline = "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline"
    (tmp / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pix2pix_zero.loading.random_checkpoint", description=__doc__.split("\n")[0])
    p.add_argument("out", help="a .safetensors path (single) or a folder (diffusers)")
    p.add_argument("--layout", choices=["single", "diffusers"], default="single")
    p.add_argument("--full-size", action="store_true", help="the family's real shapes (SD 1.5: an 860M-parameter "
                   "UNet), for benchmarks")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--legacy-vae", action="store_true", help="diffusers layout with old VAE attention names")
    p.add_argument("--family", choices=["sd1", "sd2", "sdxl"], default="sd1",
                   help="sd2: SD 2.x (--full-size: SD 2.1 shapes); sdxl: SDXL (--full-size: SDXL 1.0 base shapes)")
    p.add_argument("--prediction-type", choices=["epsilon", "v_prediction"],
                   help="scheduler config (folder) or <stem>.yaml (single file); default sd1, sdxl: epsilon, "
                   "sd2: v")
    a = p.parse_args(argv)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    print(make_checkpoint(a.out, a.layout, a.full_size, a.seed, dtype, a.legacy_vae, a.family, a.prediction_type))


if __name__ == "__main__":
    main()
