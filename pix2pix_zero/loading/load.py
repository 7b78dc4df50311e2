"""`load_sd`: a Stable Diffusion checkpoint on disk -> our UNet, VAE and CLIP text encoder(s), strictly loaded.

Two layouts load: the original single file (model.diffusion_model.*, first_stage_model.*, and
cond_stage_model.transformer.* (SD 1.x, OpenAI CLIP) or cond_stage_model.model.* (SD 2.x, OpenCLIP, see
openclip.py) or conditioner.embedders.0.transformer.* + conditioner.embedders.1.model.* (SDXL: CLIP ViT-L in
transformers' names, OpenCLIP ViT-bigG in open_clip's); e.g. v1-5-pruned-emaonly.safetensors,
sd_xl_base_1.0.safetensors) and a diffusers-format folder (unet/, vae/, text_encoder/, scheduler/; SDXL adds
text_encoder_2/). Neither layout's configs are needed: widths and depths come from tensor shapes, the family from
keys and shapes (families.py), and the family's fixed conventions fill in the rest (32 GroupNorm groups; 8 UNet heads in SD 1.x,
64-channel heads in SD 2.x and SDXL; 64-channel CLIP heads; SDXL's six 256-channel size/crop embeddings). The one
exception is the prediction type (eps or v) of an SD 2.x single file: see `load_sd`. Tensors are read one at a time
and cast to the requested dtype on the way in. Other checkpoints (the SDXL refiner, inpainting, unCLIP) are refused
with one message that names the file, what it is and what loads.
"""
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from ..models.ddim import PREDICTION_TYPES
from ..models.sd import StableDiffusion
from ..models.unet import UNet, UNetConfig
from ..models.vae import LATENT_SCALE, SDXL_LATENT_SCALE, AutoencoderKL, VAEConfig
from . import convert, openclip
from .checkpoint import CheckpointError, SafetensorsFile, group_keys, load_strict
from .families import (FAMILIES, OPENCLIP_PART, SDXL_TEXT_2, SDXL_TIME_IDS, SINGLE_FILE_PARTS, TEXT_KINDS, UNET_KINDS,
                       added_inputs, check_sdxl_widths, detect_family, single_file_family, unsupported)
from .clip_text import load_tokenizer, new_text_encoder, text_config, text_encoder_state_dict
from .ldm_config import yaml_heads, yaml_prediction_type

# Keys real checkpoints carry that no model here uses: LDM's diffusion-schedule buffers and sgm's (SDXL's
# DiscreteDenoiser.sigmas; we recompute the schedule in ddim.py), EMA bookkeeping, CLIP's position ids (a fixed
# arange), its contrastive head (SDXL's second encoder keeps text_projection: see diffusers_refs, openclip.py).
SKIP = re.compile(r"^(betas|alphas_cumprod.*|sqrt_.*|log_one_minus_alphas_cumprod|posterior_.*|logvar|model_ema\..*"
                  r"|denoiser\.sigmas)$"
                  r"|(position_ids|logit_scale|text_projection(\.weight)?)$")
DIFFUSERS_FILES = {"unet": "unet/diffusion_pytorch_model", "vae": "vae/diffusion_pytorch_model",
                   "text": "text_encoder/model", "text_2": "text_encoder_2/model"}  # text_2: SDXL only

Ref = tuple[SafetensorsFile, str]  # (file, key in that file); the file may be an openclip.RowBlock/Transposed view


def find_file(folder: Path, stem: str) -> Path:
    """<stem>.safetensors, else the fp16 variant; a pickle-only folder gets the conversion advice."""
    for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors"):
        if (folder / name).is_file():
            return folder / name
    pickles = [p for p in (folder / stem).parent.glob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    if pickles:
        SafetensorsFile(pickles[0])  # raises the pickle error with the conversion advice
    raise CheckpointError(f"{folder}: no {stem}.safetensors (a diffusers folder needs unet/, vae/ and text_encoder/ "
                          "weights as safetensors)")


def single_file_refs(f: SafetensorsFile) -> tuple[dict[str, dict[str, Ref]], list[str], str]:
    """Our key -> (file, key) for each part of an original single-file checkpoint, the skipped keys, and the
    family its text tower(s) say."""
    keys = f.keys()
    family = single_file_family(f.path, keys)
    prefixes = SINGLE_FILE_PARTS[family]
    by_part = {part: [k[len(p):] for k in keys if k.startswith(p)] for part, p in prefixes.items()}
    for part, ks in by_part.items():
        if not ks:
            raise CheckpointError(f"{f.path}: no {prefixes[part]}* keys; not a Stable Diffusion single-file "
                                  f"checkpoint (it holds: {group_keys(keys, 2)})")
    openclip_part = OPENCLIP_PART.get(family)
    try:
        tables = {"unet": convert.unet_table(*convert.unet_layout(by_part["unet"]),
                                             added_embedding=family == "sdxl"),
                  "vae": convert.vae_table(*convert.vae_layout(by_part["vae"]))}
        openclip_refs = openclip.text_refs(f, by_part[openclip_part], prefixes[openclip_part],
                                           whole=family == "sdxl") if openclip_part else ({}, [], [])
    except ValueError as e:
        raise CheckpointError(f"{f.path}: {e}; the checkpoint is incomplete or not SD 1.x, 2.x or SDXL") from None
    refs: dict[str, dict[str, Ref]] = {part: {} for part in prefixes}
    text_refs, skipped, unknown = openclip_refs
    if openclip_part:
        refs[openclip_part] = text_refs
    for key in keys:
        part = next((p for p, prefix in prefixes.items() if key.startswith(prefix)), None)
        if part is not None and part == openclip_part:
            continue  # converted above
        if SKIP.search(key):
            skipped.append(key)
        elif part == "text":  # transformers' CLIPTextModel names, with or without the text_model. level
            name = key[len(prefixes["text"]):]
            refs["text"][name if name.startswith("text_model.") else "text_model." + name] = (f, key)
        elif part is not None and (name := convert.rename(key[len(prefixes[part]):], tables[part])) is not None:
            refs[part][name] = (f, key)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{f.path}: {len(unknown)} keys no rule covers: {group_keys(unknown)}")
    return refs, skipped, family


def diffusers_refs(folder: Path) -> tuple[dict[str, dict[str, Ref]], list[str], str | None]:
    """Our key -> (file, key) for each part of a diffusers-format folder, the skipped keys, and "sdxl" if the
    folder has SDXL's second text encoder (text_encoder_2/), else None (SD 1.x or 2.x: the UNet tells)."""
    is_sdxl = (folder / "text_encoder_2").is_dir()
    if is_sdxl and not (folder / "text_encoder").is_dir():
        raise unsupported(folder, "an SDXL refiner folder (text_encoder_2/ without text_encoder/)")
    refs: dict[str, dict[str, Ref]] = {}
    skipped = []
    for part, stem in DIFFUSERS_FILES.items():
        if part == "text_2" and not is_sdxl:
            continue
        f = SafetensorsFile(find_file(folder, stem))
        refs[part] = {}
        for key in f.keys():
            if SKIP.search(key) and not (part == "text_2" and key == "text_projection.weight"):  # SDXL's pooled
                skipped.append(f"{stem}: {key}")
            else:
                refs[part][convert.rename_legacy_vae(key) if part == "vae" else key] = (f, key)
    return refs, skipped, "sdxl" if is_sdxl else None


def unet_config(shapes: dict[str, tuple[int, ...]], family: str,
                heads: tuple[int | None, int | None] | None = None) -> UNetConfig:
    """UNetConfig from tensor shapes (our key names) and (num_heads, head_dim) if the checkpoint's config gives
    them, else the family's head convention (SD 1.x: 8 heads; SD 2.x and SDXL: heads of 64 channels)."""
    levels = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("down_blocks."))
    linear = len(shapes["mid_block.attentions.0.proj_in.weight"]) == 2
    context = next(s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight"))

    def depth(transformer: str) -> int:  # transformer blocks in one spatial transformer; 1 where there is none
        blocks = {k.split(".")[len(transformer.split(".")) + 1] for k in shapes
                  if k.startswith(transformer + ".transformer_blocks.")}
        return len(blocks) or 1

    added, (n_ids, id_dim) = added_inputs(shapes), SDXL_TIME_IDS
    heads_by_family = (None, 64) if family in ("sd2", "sdxl") else (8, None)
    return UNetConfig(
        in_channels=shapes["conv_in.weight"][1], out_channels=shapes["conv_out.weight"][0],
        block_out_channels=tuple(shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(levels)),
        layers_per_block=len({k.split(".")[3] for k in shapes if k.startswith("down_blocks.0.resnets.")}),
        attention_levels=tuple(f"down_blocks.{i}.attentions.0.norm.weight" in shapes for i in range(levels)),
        context_dim=context, linear_projection=linear,
        num_heads=(heads or heads_by_family)[0], head_dim=(heads or heads_by_family)[1],
        transformer_depth=tuple(depth(f"down_blocks.{i}.attentions.0") for i in range(levels)),
        pooled_dim=added - n_ids * id_dim if added > n_ids * id_dim else None, time_id_dim=id_dim,
        num_time_ids=n_ids)


def folder_heads(config_path: Path) -> tuple[int | None, int | None] | None:
    """(num_heads, head_dim) from a diffusers unet/config.json. Its `attention_head_dim` is, for SD 1.x/2.x, the
    number of heads (an int: the same at every level) or a list of them per level (SD 2.x: 5, 10, 20, 20; SDXL:
    5, 10, 20), which UNetConfig expresses as a constant head width; `num_attention_heads`, when set, says the
    same. Only levels with cross-attention (down_block_types CrossAttn...) count: the others have no heads."""
    config = json.loads(config_path.read_text())
    heads = config.get("num_attention_heads") or config.get("attention_head_dim")
    if heads is None:
        return None
    if isinstance(heads, int):
        return heads, None
    types = config.get("down_block_types") or ["CrossAttnDownBlock2D"] * len(heads)
    pairs = [(c, h) for c, h, kind in zip(config["block_out_channels"], heads, types) if "CrossAttn" in kind]
    widths = {c // h for c, h in pairs if h}
    if len(widths) != 1 or any(not h or c % h for c, h in pairs):
        raise CheckpointError(f"{config_path}: heads per level {heads} for widths {config['block_out_channels']} "
                              "are neither the same count nor the same width at every level")
    return None, widths.pop()


def vae_config(shapes: dict[str, tuple[int, ...]]) -> VAEConfig:
    levels = 1 + max(int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down_blocks."))
    return VAEConfig(
        in_channels=shapes["encoder.conv_in.weight"][1], latent_channels=shapes["post_quant_conv.weight"][0],
        block_out_channels=tuple(shapes[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(levels)),
        layers_per_block=len({k.split(".")[4] for k in shapes if k.startswith("encoder.down_blocks.0.resnets.")}))


def read_part(module: torch.nn.Module, refs: dict[str, Ref], origin: str, device, dtype) -> torch.nn.Module:
    """Read every referenced tensor at `dtype` on `device` and assign it into `module` (built on meta)."""
    expected = module.state_dict()
    tensors = {}
    for name, (f, key) in refs.items():
        t = f.read(key, device, dtype)
        if name in expected and t.ndim == 4 and expected[name].ndim == 2:  # VAE attention stored as 1x1 convs
            t = t[:, :, 0, 0]
        tensors[name] = t
    return load_strict(module, tensors, origin)


@dataclass
class Layout:
    """What a checkpoint's headers say, read without loading a tensor: where each tensor is, the shapes' family
    and configs, and the prediction type the checkpoint states (None if it states none)."""
    path: Path
    refs: dict[str, dict[str, Ref]]
    skipped: list[str]
    family: str
    unet: UNetConfig
    vae: VAEConfig
    text: object  # transformers' CLIPTextConfig
    found_type: str | None
    text_2: object | None = None  # SDXL's second encoder (CLIPTextConfig with projection_dim); None otherwise


def read_layout(path: str | Path) -> Layout:
    """Check that `path` holds an SD 1.x/2.x/SDXL checkpoint this project loads (headers only: fast, no tensors
    read); CheckpointError naming the path and the problem if not."""
    path = Path(path)
    if path.is_dir():
        if not (path / "unet").is_dir():
            inside = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".ckpt", ".pt", ".bin"))
            hint = f" (it holds {', '.join(inside)}: pass the file itself; .ckpt/.pt/.bin are pickles, which are " \
                   "refused)" if inside else ""
            raise CheckpointError(f"{path}: no checkpoint here: expected a .safetensors file or a diffusers folder "
                                  f"with unet/, vae/ and text_encoder/{hint}")
        refs, skipped, text_family = diffusers_refs(path)
        scheduler = path / "scheduler" / "scheduler_config.json"
        found_type = json.loads(scheduler.read_text()).get("prediction_type", "epsilon") if scheduler.is_file() \
            else "epsilon"
        heads = folder_heads(path / "unet" / "config.json") if (path / "unet" / "config.json").is_file() else None
    elif path.is_file():
        refs, skipped, text_family = single_file_refs(SafetensorsFile(path))
        found_type = yaml_prediction_type(path.with_suffix(".yaml"))  # None if no LDM config is beside the file
        heads = yaml_heads(path.with_suffix(".yaml"))
    else:
        raise CheckpointError(f"{path}: no such file or folder")
    shapes = {part: {k: f.shape(key) for k, (f, key) in r.items()} for part, r in refs.items()}
    try:  # a key the shapes are read from is missing, or the keys do not follow the layout
        family = detect_family(shapes["unet"])
        ucfg, vcfg = unet_config(shapes["unet"], family, heads), vae_config(shapes["vae"])
        tcfg = text_config(shapes["text"], FAMILIES[family]["hidden_act"])
        tcfg_2 = text_config(shapes["text_2"], SDXL_TEXT_2["hidden_act"]) if "text_2" in shapes else None
    except (KeyError, ValueError, StopIteration) as e:
        raise CheckpointError(f"{path}: cannot infer the model shapes from the weights ({type(e).__name__}: {e}); "
                              "the checkpoint is incomplete or not SD 1.x, 2.x or SDXL") from None
    # A single file's text towers name its family; a folder's text_encoder_2/ says SDXL (or, absent, SD 1.x/2.x).
    if text_family != family and (path.is_file() or "sdxl" in (text_family, family)):
        text_kind = TEXT_KINDS[text_family] if text_family else "one CLIP encoder (SD 1.x/2.x)"
        raise CheckpointError(f"{path}: mixed families: the UNet is {UNET_KINDS[family]} but the text encoder is "
                              f"{text_kind}")
    if ucfg.in_channels != 4:
        kind = "an inpainting" if ucfg.in_channels == 9 else f"a {ucfg.in_channels}-channel"
        raise CheckpointError(f"{path}: {kind} UNet checkpoint; not supported (pix2pix-zero needs the 4-channel "
                              "text-to-image UNet)")
    if family == "sdxl":
        check_sdxl_widths(path, ucfg, added_inputs(shapes["unet"]), tcfg, tcfg_2)
    return Layout(path, refs, skipped, family, ucfg, vcfg, tcfg, found_type, tcfg_2)


def checkpoint_prediction_type(layout: Layout, prediction_type: str | None = None) -> str:
    """What the UNet predicts: `prediction_type` if given, else what the checkpoint says, else eps, except an SD 2.x
    single file, taken to be the 768-v model (load_sd warns when it assumes this)."""
    return prediction_type or layout.found_type or ("v_prediction" if layout.family == "sd2" else "epsilon")


def load_sd(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
            prediction_type: str | None = None, verbose: bool = False,
            vae_dtype: torch.dtype = torch.float32) -> StableDiffusion:
    """Load a Stable Diffusion 1.x, 2.x or SDXL 1.0 base checkpoint: a single .safetensors file or a
    diffusers-format folder.

    The UNet and text encoder(s) are cast to `dtype`, the VAE to `vae_dtype` (fp32 unless told otherwise: SD's VAE
    decoder overflows fp16 on large images, SDXL's more readily (vae.py), and it runs twice per image, so fp32
    costs little).
    The prediction type is `prediction_type` if given, else what the checkpoint says: a folder's
    scheduler/scheduler_config.json, or for a single file the original LDM config beside it (same stem, .yaml;
    see ldm_config.py). A single file without one predicts eps if SD 1.x or SDXL base; an SD 2.x one is taken to
    predict v (SD 2.x 768-v, the common download) with a warning, since the 512-base model has the same keys and
    shapes.
    """
    layout = read_layout(path)
    path, refs, family = layout.path, layout.refs, layout.family
    if layout.found_type is None and prediction_type is None and family == "sd2":
        warnings.warn(f"{path.name}: an SD 2.x single file does not say whether it predicts v (768-v) or eps "
                      f"(512-base) and no {path.with_suffix('.yaml').name} is beside it; assuming v_prediction "
                      "(override: prediction_type='epsilon', --prediction-type epsilon)", stacklevel=2)
    prediction_type = checkpoint_prediction_type(layout, prediction_type)
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, not {prediction_type!r}")
    with torch.device("meta"):
        unet, vae = UNet(layout.unet), AutoencoderKL(layout.vae)
    text_encoder = new_text_encoder(layout.text, device)
    unet = read_part(unet, refs["unet"], f"{path} (UNet)", device, dtype)
    vae = read_part(vae, refs["vae"], f"{path} (VAE)", device, vae_dtype)
    text_refs = text_encoder_state_dict(refs["text"], text_encoder)
    text_encoder = read_part(text_encoder, text_refs, f"{path} (text encoder)", device, dtype)
    text_encoder_2 = tokenizer_2 = None
    if family == "sdxl":
        text_encoder_2 = new_text_encoder(layout.text_2, device, projection=True)
        text_refs = text_encoder_state_dict(refs["text_2"], text_encoder_2)
        text_encoder_2 = read_part(text_encoder_2, text_refs, f"{path} (text encoder 2)", device, dtype)
        tokenizer_2 = load_tokenizer(SDXL_TEXT_2["pad_token"])
    if verbose:
        print(f"{path}: skipped {len(layout.skipped)} keys no model uses (schedule buffers, EMA, position ids, "
              f"contrastive head, unused text block):\n" + "\n".join(f"  {k}" for k in layout.skipped))

    def fingerprint(parts) -> str:
        files = sorted({f.path: f for part in parts for f, _ in refs[part].values()}.items())
        return "-".join(f.fingerprint() for _, f in files)

    return StableDiffusion(unet, vae, text_encoder, load_tokenizer(FAMILIES[family]["pad_token"]), prediction_type,
                           family, fingerprint(refs), fingerprint([part for part in refs if part.startswith("text")]),
                           str(path), latent_scale=SDXL_LATENT_SCALE if family == "sdxl" else LATENT_SCALE,
                           skipped=layout.skipped, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
