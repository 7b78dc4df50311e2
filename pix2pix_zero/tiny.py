"""Seeded random Stable Diffusion checkpoints in the real layouts, for tests and benchmarks.

python -m pix2pix_zero.tiny OUT --layout single|diffusers [--full-size] [--dtype fp16] [--seed 0]

Tiny: SD 1.x topology (4 levels, 2 layers per block, attention on the first three levels and the mid block,
32 GroupNorm groups, 8 UNet heads, 64-channel CLIP heads) at small widths. Full size: SD 1.5's shapes (an
860M-parameter UNet). Weights are variance-preserving random draws (std 1/sqrt(fan_in), norms near 1), so
every path is exercised and activations stay in a sane range. Single files also carry the extra keys real
ones do (LDM schedule buffers, EMA counters, position_ids), so the loader's skip rule is exercised.
"""
import argparse
import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from . import convert
from .ddim import alphas_cumprod
from .text import BPE_DIR, clip_text_config, new_text_encoder, tiny_text_config
from .unet import UNet, UNetConfig
from .vae import LATENT_SCALE, AutoencoderKL, VAEConfig


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    n = torch.randn(shape, generator=generator)
    if len(shape) == 1:
        is_norm = "norm" in name.rsplit(".", 2)[-2] or "ln" in name
        return 1.0 + 0.1 * n if is_norm and name.endswith("weight") else 0.05 * n
    return n / math.sqrt(math.prod(shape[1:]))


def random_weights(module: torch.nn.Module, generator: torch.Generator, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One random tensor per state-dict entry of `module` (which may live on the meta device)."""
    return {k: random_tensor(k, tuple(v.shape), generator).to(dtype) for k, v in module.state_dict().items()}


def models(full_size: bool):
    if full_size:
        return UNetConfig(), VAEConfig(), clip_text_config(768, 12, 3072, 49408, 77, "quick_gelu")
    return UNetConfig.tiny(), VAEConfig.tiny(), tiny_text_config()


def diffusers_configs(ucfg: UNetConfig, vcfg: VAEConfig, text_cfg) -> dict[str, dict]:
    n = len(ucfg.block_out_channels)
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in ucfg.attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in ucfg.attention_levels[::-1]]
    unet = {"_class_name": "UNet2DConditionModel", "in_channels": ucfg.in_channels, "out_channels": ucfg.out_channels,
            "block_out_channels": list(ucfg.block_out_channels), "layers_per_block": ucfg.layers_per_block,
            "down_block_types": down, "up_block_types": up, "cross_attention_dim": ucfg.context_dim,
            "attention_head_dim": ucfg.num_heads or [c // ucfg.head_dim for c in ucfg.block_out_channels],
            "use_linear_projection": ucfg.linear_projection, "norm_num_groups": ucfg.groups,
            "flip_sin_to_cos": True, "freq_shift": 0, "sample_size": 64}
    vae = {"_class_name": "AutoencoderKL", "in_channels": vcfg.in_channels, "out_channels": vcfg.in_channels,
           "block_out_channels": list(vcfg.block_out_channels), "layers_per_block": vcfg.layers_per_block,
           "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
           "latent_channels": vcfg.latent_channels, "norm_num_groups": vcfg.groups, "sample_size": 512,
           "scaling_factor": LATENT_SCALE}
    scheduler = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
                 "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
                 "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon"}
    text = text_cfg.to_dict() | {"architectures": ["CLIPTextModel"]}
    return {"unet": unet, "vae": vae, "scheduler": scheduler, "text_encoder": text}


def make_checkpoint(out: str | os.PathLike, layout: str = "single", full_size: bool = False, seed: int = 0,
                    dtype: torch.dtype = torch.float32, legacy_vae: bool = False) -> Path:
    """Write a random SD 1.x checkpoint to `out` (a .safetensors file, or a folder for layout='diffusers')."""
    out = Path(out)
    g = torch.Generator().manual_seed(seed)
    ucfg, vcfg, text_cfg = models(full_size)
    with torch.device("meta"):
        unet, vae = UNet(ucfg), AutoencoderKL(vcfg)
    text = new_text_encoder(text_cfg, "cpu")
    w_unet, w_vae = random_weights(unet, g, dtype), random_weights(vae, g, dtype)
    w_text = {k if k.startswith("text_model.") else "text_model." + k: v
              for k, v in random_weights(text, g, dtype).items()}
    if layout == "single":
        levels, layers = len(ucfg.block_out_channels), ucfg.layers_per_block
        ut = convert.unet_table(levels, layers, list(ucfg.attention_levels))
        vt = convert.vae_table(len(vcfg.block_out_channels), vcfg.layers_per_block)
        sd = {"model.diffusion_model." + convert.rename(k, ut, to_ours=False): v for k, v in w_unet.items()}
        for k, v in w_vae.items():
            k = convert.rename(k, vt, to_ours=False)
            sd["first_stage_model." + k] = v[:, :, None, None] if ".attn_1." in k and v.ndim == 2 else v
        sd |= {"cond_stage_model.transformer." + k: v for k, v in w_text.items()}
        sd |= {"cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
               "betas": torch.zeros(1000), "alphas_cumprod": alphas_cumprod(), "model_ema.num_updates": torch.tensor(0)}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".partial")
        save_file(sd, tmp)
        os.replace(tmp, out)
        return out
    if layout != "diffusers":
        raise ValueError(f"layout must be 'single' or 'diffusers', not {layout!r}")
    if legacy_vae:  # old diffusers VAE files: query/key/value/proj_attn, nn.Linear weights (2-D) as ours
        w_vae = {convert.rename_legacy_vae(k, to_ours=False): v for k, v in w_vae.items()}
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    configs = diffusers_configs(ucfg, vcfg, text_cfg)
    for sub, weights, name in (("unet", w_unet, "diffusion_pytorch_model"), ("vae", w_vae, "diffusion_pytorch_model"),
                               ("text_encoder", w_text, "model")):
        (tmp / sub).mkdir(parents=True)
        save_file(weights, tmp / sub / f"{name}.safetensors")
        (tmp / sub / "config.json").write_text(json.dumps(configs[sub], indent=2))
    (tmp / "scheduler").mkdir()
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs["scheduler"], indent=2))
    shutil.copytree(BPE_DIR, tmp / "tokenizer", ignore=shutil.ignore_patterns("*.py", "LICENSE", "README.md"))
    (tmp / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "pad_token": "<|endoftext|>"}))
    (tmp / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pix2pix_zero.tiny", description=__doc__.split("\n")[0])
    p.add_argument("out", help="a .safetensors path (single) or a folder (diffusers)")
    p.add_argument("--layout", choices=["single", "diffusers"], default="single")
    p.add_argument("--full-size", action="store_true", help="SD 1.5 shapes (860M-parameter UNet), for benchmarks")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--legacy-vae", action="store_true", help="diffusers layout with old VAE attention names")
    a = p.parse_args(argv)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    print(make_checkpoint(a.out, a.layout, a.full_size, a.seed, dtype, a.legacy_vae))


if __name__ == "__main__":
    main()
