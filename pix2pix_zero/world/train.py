"""Train the world's baby Stable Diffusion from scratch: the VAE, then the UNet, then the shape classifier.

  python -m pix2pix_zero.world.train [--out weights/world] [--work runs/world] [--device cpu]

The config below is the whole recipe. The models are this project's own classes (models/unet.py, models/vae.py,
transformers' CLIPTextModel) at small widths; the result is an ordinary single-file SD 1.x checkpoint that
`load_sd` and `--weights` read like any other. The text encoder is a frozen, seeded random one: SD trains its
UNet against a frozen text encoder too (pretrained CLIP, which we cannot train here), and a frozen encoder fixes
the geometry of the embeddings that edit directions are built from before the UNet learns to read them.
Every stage saves its state to --work and resumes from it under the same settings (others are refused);
the loss curves go to OUT/loss.png.
Objectives: VAE, L1 reconstruction + a small KL (Rombach et al., arXiv:2112.10752, sec. 3; no perceptual or GAN
term); UNet, the eps-prediction loss of DDPM (Ho et al., arXiv:2006.11239, eq. 14) on SD's noise schedule,
weighted by Min-SNR-gamma (Hang et al., arXiv:2303.09556) (and, optionally, up on the object's latent cells,
which the world's truth allows), with 10% empty captions so classifier-free guidance works (Ho & Salimans,
arXiv:2207.12598).
"""
import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ..loading.clip_text import load_tokenizer, new_text_encoder
from ..loading.random_checkpoint import random_weights, single_file_state_dict
from ..models.ddim import alphas_cumprod
from ..models.text import clip_text_config, encode_text
from ..models.unet import UNet, UNetConfig
from ..models.vae import LATENT_SCALE, AutoencoderKL, VAEConfig
from ..tools.files import atomic_path
from . import CHECKPOINT as SHIPPED, classifier, scenes
from .plot import plot_losses

CHECKPOINT = SHIPPED.name  # the file name under --out
WORK = "runs/world"  # the default --work, under the current folder


@dataclass
class TrainConfig:
    seed: int = 0
    n_train: int = 20_000  # scenes with seeds 0 .. n_train - 1 (scenes.HELD_OUT and up are never used)
    size: int = scenes.SIZE
    # the objects' size: scenes.RADIUS times this (scenes.sample_scene); 1 is the shipped world. An option for
    # research (docs/world.md, "What limits success"): a model trained at another scale is benchmarked with
    # `world-bench --object-scale` at the same scale.
    object_scale: float = 1.0
    # VAE: SD's topology (4 levels, 8x downsampling, 4 latent channels) at small widths, on 64 px crops
    vae_channels: tuple[int, ...] = (32, 32, 64, 64)
    vae_layers: int = 1
    vae_steps: int = 1800
    vae_batch: int = 32
    vae_crop: int = 64
    vae_lr: float = 1e-3
    vae_kl: float = 1e-4  # weight of the KL term, per latent element, against the L1 per pixel
    vae_init_logvar: float = -6.0
    # then the whole 128 px image: GroupNorm with one channel per group normalises over the image, so statistics
    # learnt on crops differ from the full image's (a colour haze); this phase trains on what encode/decode see
    vae_full_steps: int = 800
    vae_full_batch: int = 8
    vae_full_lr: float = 3e-4
    # UNet: SD 1.x's topology (cross-attention at three levels and the middle: 16 maps per step), small widths
    unet_channels: tuple[int, ...] = (32, 64, 128, 128)
    unet_layers: int = 2
    # heads of 32 channels (1, 2, 4, 4 by level) rather than SD 1.x's 8 heads everywhere: heads of 4 channels made
    # CPU attention 37% of a training step; with 32 a step took 0.50 s instead of 0.78 s. The checkpoint's
    # LDM config beside it (baby-sd.yaml) says so, as SD 2.x's does for its heads of 64.
    unet_head_dim: int = 32
    unet_steps: int = 4000  # with the VAE's 43.5 min, about 90 min of steps on 2 cores
    unet_batch: int = 32
    unet_lr: float = 6e-4
    # Min-SNR-gamma loss weight min(SNR_t, gamma) / SNR_t on the eps MSE (Hang et al., arXiv:2303.09556, eq. 8
    # for eps): low-noise steps, whose eps error is fine detail, stop dominating the gradient, and the steps where
    # the layout and the object's shape are decided get the model's capacity. 0 = the plain eps MSE. Measured
    # (docs/world.md): the plain MSE for 4500 steps edited 29% of 100 held-out shapes, this for 4000 steps 39%.
    unet_min_snr: float = 5.0
    # Object-weighted eps loss, an option for research: the error on the latent cells the object covers (its
    # coverage averaged over each cell's 8 x 8 pixels, widened by one cell: the shape is decided at its rim)
    # counts this many times the background's, the weights scaled to mean 1 per image. Measured (docs/world.md):
    # x5 for the same 4000 steps made the UNet read the colour word more (+27% eps error when swapped at t = 700,
    # against +23%) but not the shape word (+1.2% against +2.0%), and edited 34% of the same 100 against 39%;
    # so the default is 1, the plain eps loss, as SD's.
    unet_object_weight: float = 1.0
    uncond_prob: float = 0.1  # captions replaced by "" (classifier-free guidance)
    ema: float = 0.999
    # text: CLIP's tokenizer and vocabulary, a 2-layer width-64 transformer, frozen random weights
    text_width: int = 64
    text_layers: int = 2
    # Word identity must dominate the random encoder's output: with variance-preserving draws (token and position
    # embeddings alike) "red" and "blue" came out 0.96 cosine-similar at their own position, and 1000 UNet steps
    # learned almost nothing from the text (denoising loss with the right caption 0.5% below a shuffled one).
    # Token embeddings x8: near-orthogonal words, as a trained CLIP gives.
    text_token_scale: float = 8.0
    classifier_steps: int = 600
    save_every: int = 250
    warmup: int = 100
    stages: tuple[str, ...] = ("vae", "unet", "classifier")

    def unet_config(self) -> UNetConfig:
        return UNetConfig(block_out_channels=self.unet_channels, layers_per_block=self.unet_layers,
                          context_dim=self.text_width, num_heads=None, head_dim=self.unet_head_dim)

    def vae_config(self) -> VAEConfig:
        return VAEConfig(block_out_channels=self.vae_channels, layers_per_block=self.vae_layers)

    def text_config(self):
        return clip_text_config(self.text_width, self.text_layers, 4 * self.text_width, 49408, 77, "quick_gelu")


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def scale_tag(config: TrainConfig) -> str:
    """The object scale in a cache file's name ("-x1.4"); none at the world's own scale, as before the option."""
    return "" if config.object_scale == 1 else f"-x{config.object_scale}"


def render_dataset(config: TrainConfig, work: Path) -> np.ndarray:
    """The training images, (n_train, size, size, 3) uint8, rendered once and kept in work/images.npy."""
    path = work / f"images-{config.n_train}-{config.size}{scale_tag(config)}.npy"
    if path.is_file():
        return np.load(path)
    images = np.empty((config.n_train, config.size, config.size, 3), dtype=np.uint8)
    for i in tqdm(range(config.n_train), desc="render scenes", mininterval=5):
        images[i] = scenes.render(scenes.sample_scene(i, object_scale=config.object_scale), config.size)[0]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    return images


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


# What each stage's weights depend on, by TrainConfig field. A state in --work resumes only under the same
# values: a finished stage would otherwise be kept as it is, and the card would name settings it never saw. A
# stage's own step count is not among them: a finished stage may resume to train longer (its learning-rate
# schedule then stretches from where it stands).
VAE_SETTINGS = ("seed", "n_train", "size", "object_scale", "warmup", "ema", "vae_channels", "vae_layers",
                "vae_batch", "vae_crop", "vae_lr", "vae_kl", "vae_init_logvar")
STAGE_SETTINGS = {
    "vae": VAE_SETTINGS,
    "vae-full": (*VAE_SETTINGS, "vae_steps", "vae_full_batch", "vae_full_lr"),  # it starts from the crop phase
    "unet": (*VAE_SETTINGS, "vae_steps", "vae_full_batch", "vae_full_lr", "vae_full_steps",  # its latents
             "unet_channels", "unet_layers", "unet_head_dim", "unet_batch", "unet_lr", "unet_min_snr",
             "unet_object_weight", "uncond_prob", "text_width", "text_layers", "text_token_scale"),
}
# Fields no stage's weights depend on (or only its own step count); a test checks every field is in one list.
NOT_SETTINGS = ("vae_steps", "vae_full_steps", "unet_steps", "classifier_steps", "save_every", "stages")


def stage_settings(config: "TrainConfig", name: str) -> dict:
    """{field: value} of the TrainConfig fields that stage `name` depends on, as JSON values (tuples as lists)."""
    return json.loads(json.dumps({k: getattr(config, k) for k in STAGE_SETTINGS[name]}))


class Stage:
    """One model's training state, saved to and resumed from `work/NAME-state.pt` (tensors only): the model,
    AdamW, the data generator, the EMA weights, the losses, the settings it was trained with (a resume under
    others is refused); one `update` per step, then `finish`."""

    def __init__(self, name: str, work: Path, model: torch.nn.Module, lr: float, seed: int, steps: int,
                 config: "TrainConfig"):
        self.name, self.path, self.model = name, work / f"{name}-state.pt", model
        self.peak_lr, self.steps, self.config = lr, steps, config
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(seed)
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.step, self.losses, self.seconds = 0, [], 0.0
        self.settings = stage_settings(config, name)
        if self.path.is_file():
            state = torch.load(self.path, weights_only=True, map_location="cpu")
            # older states: unchecked; a field newer than the state was at its default when the state was made
            before = {**stage_settings(TrainConfig(), name), **json.loads(state["settings"])} \
                if "settings" in state else self.settings
            differ = [k for k in self.settings if before.get(k) != self.settings[k]]
            if differ:
                raise ValueError(f"{self.path}: this {name} state was trained with other settings (" + ", ".join(
                    f"{k} {before.get(k)!r}, now {self.settings[k]!r}" for k in differ) + "); use another --work, "
                    f"or delete {self.path.name} there to train the stage again")
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            self.ema = {k: v.to(next(model.parameters()).device) for k, v in state["ema"].items()}
            self.step, self.losses, self.seconds = int(state["step"]), state["losses"].tolist(), float(state["seconds"])
            print(f"{self.name}: resumed at step {self.step} from {self.path}")
        self.bar = tqdm(total=steps, initial=self.step, desc=name, mininterval=5)

    def update(self, loss: torch.Tensor, started: float) -> None:
        """One optimizer step on `loss` at the schedule's rate, the EMA, the progress bar, a save when due. A loss
        that is not finite stops training before the step: the state saved last is kept as it was."""
        if not torch.isfinite(loss):
            raise ValueError(f"{self.path}: the {self.name} loss is {loss.item()} at step {self.step + 1}, so "
                             f"training diverged; the state saved last is kept: lower the stage's learning rate "
                             f"in another --work, or delete {self.path.name} to start the stage again")
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.steps, self.peak_lr, self.config.warmup)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                self.ema[k].lerp_(v, 1 - decay) if v.is_floating_point() else self.ema[k].copy_(v)
        self.step += 1
        self.losses.append(loss.item())
        self.seconds += time.perf_counter() - started
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{np.mean(self.losses[-50:]):.4f}", refresh=False)
        if self.step % self.config.save_every == 0 or self.step == self.steps:
            self.save()

    def finish(self) -> torch.nn.Module:
        """The model with its EMA weights, in eval mode."""
        self.bar.close()
        self.model.load_state_dict(self.ema)
        return self.model.eval()

    def save(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "generator": self.generator.get_state(), "ema": self.ema, "step": self.step,
                 "losses": torch.tensor(self.losses), "seconds": self.seconds, "settings": json.dumps(self.settings)}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def train_vae(config: TrainConfig, images: np.ndarray, work: Path, device) -> tuple[AutoencoderKL, list[Stage]]:
    """L1 + kl * KL(q(z|x) || N(0, I)) on random crops, then on whole images; the EMA weights' VAE and both
    stages."""
    torch.manual_seed(config.seed)  # NOTE: module init only; every data draw below uses the stage's generator
    vae = AutoencoderKL(config.vae_config()).to(device)
    with torch.no_grad():
        # Start the posterior narrow (std e^-3): Adam moves a bias by about lr a step, so from logvar 0 the
        # noise would drown the latents for thousands of steps.
        vae.quant_conv.bias[vae.config.latent_channels:] = config.vae_init_logvar
        # Every residual branch starts at zero (Goyal et al., arXiv:1706.02677, sec. 5.1): each block starts as
        # the identity, which trained measurably faster here.
        for name, module in vae.named_modules():
            if name.endswith(("conv2", "to_out.0")):
                module.weight.zero_()
                module.bias.zero_()
    crops = Stage("vae", work, vae, config.vae_lr, config.seed + 1, config.vae_steps, config)
    vae_steps(vae, crops, images, config.vae_batch, config.vae_crop, config, device)
    full = Stage("vae-full", work, crops.finish().train(), config.vae_full_lr, config.seed + 6, config.vae_full_steps,
                 config)
    vae_steps(vae, full, images, config.vae_full_batch, config.size, config, device)
    return full.finish(), [crops, full]


def vae_steps(vae: AutoencoderKL, stage: Stage, images: np.ndarray, batch: int, crop: int, config: TrainConfig,
              device) -> None:
    """The stage's remaining steps of L1 + kl * KL on random `crop` px crops."""
    g = stage.generator
    while stage.step < stage.steps:
        start = time.perf_counter()
        index = torch.randint(len(images), (batch,), generator=g).numpy()
        top, left = torch.randint(config.size - crop + 1, (2,), generator=g).tolist()
        x = to_tensor(images[index, top:top + crop, left:left + crop], device)  # (B, 3, crop, crop)
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g).to(device)
        reconstruction = vae.decode(z)
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
        loss = (reconstruction - x).abs().mean() + config.vae_kl * kl
        stage.update(loss, start)


@torch.no_grad()
def scale_latents(vae: AutoencoderKL, images: np.ndarray, device, n: int = 512) -> float:
    """Rescale the VAE exactly so LATENT_SCALE * mean latent has unit standard deviation, as SD's latents
    roughly do: the checkpoint then needs no scale factor of its own. mean' = k mean, logvar' = logvar + 2 log k
    (quant_conv), and post_quant_conv undoes k. Returns k."""
    mean, _ = vae.encode(to_tensor(images[:n], device))
    k = 1.0 / (LATENT_SCALE * mean.std().item())
    C = vae.config.latent_channels
    vae.quant_conv.weight[:C] *= k
    vae.quant_conv.bias[:C] *= k
    vae.quant_conv.bias[C:] += 2 * math.log(k)
    vae.post_quant_conv.weight /= k
    return k


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes and bytes): what a cache made with it is valid for."""
    h = hashlib.sha256()
    for name, v in model.state_dict().items():
        h.update(f"{name} {v.dtype} {tuple(v.shape)}".encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, images: np.ndarray, work: Path, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (mean, logvar) of every training image, (n, 4, h, w) each, cached in work/latents.safetensors
    with the digest of the VAE that encoded them: for another VAE (or another number of images) they are encoded
    again."""
    path, digest = work / "latents.safetensors", weights_digest(vae)
    if path.is_file():
        with safe_open(path, "pt") as f:
            if (f.metadata() or {}).get("vae") == digest and f.get_slice("mean").get_shape()[0] == len(images):
                return f.get_tensor("mean"), f.get_tensor("logvar")
        print(f"{path}: made by another VAE or for other images; encoding again")
    means, logvars = [], []
    for i in tqdm(range(0, len(images), 64), desc="encode", mininterval=5):
        mean, logvar = vae.encode(to_tensor(images[i:i + 64], device))
        means.append(mean.cpu())
        logvars.append(logvar.cpu())
    mean, logvar = torch.cat(means), torch.cat(logvars)
    with atomic_path(path) as tmp:
        save_file({"mean": mean.contiguous(), "logvar": logvar.contiguous()}, tmp, metadata={"vae": digest})
    return mean, logvar


def train_unet(config: TrainConfig, latents: tuple[torch.Tensor, torch.Tensor], text_encoder, tokenizer,
               work: Path, device) -> tuple[UNet, Stage]:
    """min E w_t mean(w_obj * (eps - eps_theta(sqrt(a_t) z + sqrt(1 - a_t) eps, t, c))^2), z = LATENT_SCALE *
    (posterior sample), w_t the Min-SNR weight (1 with unet_min_snr = 0), w_obj the object weights (1 with
    unet_object_weight = 1)."""
    torch.manual_seed(config.seed + 2)
    unet = UNet(config.unet_config()).to(device)
    stage = Stage("unet", work, unet, config.unet_lr, config.seed + 3, config.unet_steps, config)
    g = stage.generator
    alpha_bar = alphas_cumprod().to(device)
    mean, logvar = latents
    w_obj = object_weights(config, mean.shape[-1], work)  # (n, 1, h, w)
    while stage.step < config.unet_steps:
        start = time.perf_counter()
        index = torch.randint(len(mean), (config.unet_batch,), generator=g)
        phrasing = torch.randint(len(scenes.PHRASINGS), (config.unet_batch,), generator=g)
        drop = torch.rand(config.unet_batch, generator=g) < config.uncond_prob
        prompts = ["" if d else scenes.caption(scenes.sample_scene(int(i), object_scale=config.object_scale),
                                               phrasing=int(p))
                   for i, p, d in zip(index, phrasing, drop)]
        with torch.no_grad():
            c = encode_text(tokenizer, text_encoder, prompts)  # (B, L, D)
        noise = torch.randn(mean[index].shape, generator=g)
        z = LATENT_SCALE * (mean[index] + torch.exp(0.5 * logvar[index]) * noise).to(device)
        t = torch.randint(len(alpha_bar), (config.unet_batch,), generator=g).to(device)
        eps = torch.randn(z.shape, generator=g).to(device)
        a = alpha_bar[t][:, None, None, None]
        error = (unet(a.sqrt() * z + (1 - a).sqrt() * eps, t, c) - eps).pow(2)  # (B, 4, h, w)
        error = (w_obj[index].to(device) * error).mean(dim=(1, 2, 3))  # (B,)
        loss = (min_snr_weight(alpha_bar[t], config.unet_min_snr) * error).mean()
        stage.update(loss, start)
    return stage.finish(), stage


def object_weights(config: TrainConfig, latent_size: int, work: Path | None = None) -> torch.Tensor:
    """Per-cell loss weights of the training scenes, (n_train, 1, h, h) with h = latent_size, mean 1 per image:
    proportional to 1 + (unet_object_weight - 1) * m, m the object's coverage of each latent cell widened by one
    cell (3 x 3 max). Cached in work/ (the coverages take a minute to render)."""
    if config.unet_object_weight == 1:
        return torch.ones(config.n_train, 1, latent_size, latent_size)
    f = config.size // latent_size  # pixels per latent cell
    path = None if work is None else work / f"object-cover-{config.n_train}-{latent_size}{scale_tag(config)}.npy"
    if path is not None and path.is_file():
        cover = np.load(path)
    else:
        cover = np.stack([scenes.coverage(scenes.sample_scene(i, object_scale=config.object_scale), config.size)
                          .reshape(latent_size, f, latent_size, f).mean(axis=(1, 3)) for i in range(config.n_train)])
        if path is not None:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as file:
                    np.save(file, cover)
    m = torch.nn.functional.max_pool2d(torch.from_numpy(cover)[:, None], 3, stride=1, padding=1)  # (n, 1, h, h)
    w = 1 + (config.unet_object_weight - 1) * m
    return w / w.mean(dim=(2, 3), keepdim=True)


def min_snr_weight(alpha_bar_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR_t, gamma) / SNR_t with SNR_t = alpha_bar_t / (1 - alpha_bar_t), the Min-SNR-gamma weight of an eps
    loss (arXiv:2303.09556, sec. 3.4); ones when gamma is 0."""
    if gamma == 0:
        return torch.ones_like(alpha_bar_t)
    snr = alpha_bar_t / (1 - alpha_bar_t)
    return snr.clamp(max=gamma) / snr


def frozen_text_encoder(config: TrainConfig, device):
    """The seeded random CLIP text transformer (variance-preserving draws, as the random test checkpoints,
    token embeddings times text_token_scale)."""
    text_encoder = new_text_encoder(config.text_config(), "cpu")
    weights = random_weights(text_encoder, torch.Generator().manual_seed(config.seed + 4), torch.float32)
    token = next(k for k in weights if k.endswith("token_embedding.weight"))
    weights[token] = weights[token] * config.text_token_scale
    text_encoder.load_state_dict(weights, strict=True, assign=True)
    return text_encoder.to(device).eval().requires_grad_(False)


def ldm_yaml(config: TrainConfig) -> str:
    """The original LDM config of the checkpoint (what `v1-inference.yaml` is to SD 1.4), at the baby's sizes:
    the loader reads the prediction type and the heads from it (loading/ldm_config.py)."""
    u, v = config.unet_config(), config.vae_config()
    attention = [2 ** i for i, on in enumerate(u.attention_levels) if on][::-1]
    return "\n".join([
        "# LDM config of the world's baby SD (python -m pix2pix_zero.world.train); read by loading/ldm_config.py",
        "model:", "  target: ldm.models.diffusion.ddpm.LatentDiffusion", "  params:",
        "    parameterization: eps", "    linear_start: 0.00085", "    linear_end: 0.0120", "    timesteps: 1000",
        f"    image_size: {config.size // 8}", "    channels: 4", f"    scale_factor: {LATENT_SCALE}",
        "    unet_config:", "      target: ldm.modules.diffusionmodules.openaimodel.UNetModel", "      params:",
        f"        image_size: {config.size // 8}", "        in_channels: 4", "        out_channels: 4",
        f"        model_channels: {u.block_out_channels[0]}", f"        attention_resolutions: {attention}",
        f"        num_res_blocks: {u.layers_per_block}",
        f"        channel_mult: {[c // u.block_out_channels[0] for c in u.block_out_channels]}",
        "        num_heads: -1", f"        num_head_channels: {u.head_dim}", "        use_spatial_transformer: true",
        "        transformer_depth: 1", f"        context_dim: {u.context_dim}", "        legacy: false",
        "    first_stage_config:", "      target: ldm.models.autoencoder.AutoencoderKL", "      params:",
        f"        embed_dim: {v.latent_channels}", "        ddconfig:", "          double_z: true",
        f"          z_channels: {v.latent_channels}", f"          resolution: {config.size}", "          in_channels: 3",
        "          out_ch: 3", f"          ch: {v.block_out_channels[0]}",
        f"          ch_mult: {[c // v.block_out_channels[0] for c in v.block_out_channels]}",
        f"          num_res_blocks: {v.layers_per_block}", "          attn_resolutions: []", "          dropout: 0.0",
        "    cond_stage_config:  # a 2-layer CLIP text transformer of width "
        f"{config.text_width} (frozen random), CLIP's tokenizer", ""])


def write_checkpoint(path: Path, config: TrainConfig, unet: UNet, vae: AutoencoderKL, text_encoder,
                     metadata: dict) -> Path:
    """The single-file SD layout, stored in fp16 (the loader casts to the dtype asked for), and its LDM config
    beside it (same stem, .yaml)."""
    half = lambda module: {k: v.detach().cpu().half().contiguous() for k, v in module.state_dict().items()}
    text = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in half(text_encoder).items()}
    sd = single_file_state_dict(config.unet_config(), config.vae_config(), half(unet), half(vae))
    sd |= {"cond_stage_model.transformer." + k: v for k, v in text.items()}
    with atomic_path(path.with_suffix(".yaml")) as tmp:  # first: the weights are read wrongly without it
        tmp.write_text(ldm_yaml(config))
    with atomic_path(path) as tmp:
        save_file(sd, tmp, metadata={k: json.dumps(v) for k, v in metadata.items()})
    return path


def write_card(report: dict, out: Path) -> Path:
    """weights/world/README.md from the training report: data, models, steps, time, final losses, command."""
    c = report["config"]
    lines = [
        "# The world's baby Stable Diffusion", "",
        "Trained from scratch on this project's CPU by `python -m pix2pix_zero.world.train` (seeded: the same "
        "command remakes it; stages resume from `--work`). Made by this project, MIT-licensed like it.", "",
        "| | |", "|---|---|",
        f"| data | {c['n_train']} scenes, seeds 0..{c['n_train'] - 1} (`world/scenes.py`), {c['size']} px" +
        (f", objects x{c['object_scale']:g} the world's size" if c.get("object_scale", 1) != 1 else "") +
        f"; held-out seeds from {scenes.HELD_OUT} are never used |",
        f"| VAE | SD's KL autoencoder, widths {c['vae_channels']}, {c['vae_layers']} resnet per level, 8x down, 4 "
        f"latent channels; {c['vae_steps']} steps, batch {c['vae_batch']}, {c['vae_crop']} px crops, AdamW "
        f"{c['vae_lr']}, then {c['vae_full_steps']} steps, batch {c['vae_full_batch']}, whole images, AdamW "
        f"{c['vae_full_lr']}; L1 + {c['vae_kl']} KL; rescaled by {report.get('latent_rescale', float('nan')):.4g} "
        "so 0.18215 z has unit std |",
        f"| UNet | SD 1.x topology, widths {c['unet_channels']}, {c['unet_layers']} layers per block, heads of "
        f"{c['unet_head_dim']} channels, "
        f"context {c['text_width']}; {c['unet_steps']} steps, batch {c['unet_batch']}, AdamW {c['unet_lr']}, "
        f"eps MSE on SD's schedule" + (f" weighted by Min-SNR-{c['unet_min_snr']:g} (arXiv:2303.09556)"
                                        if c.get("unet_min_snr") else "") +
        (f", the object's latent cells (one cell wider) weighted x{c['unet_object_weight']:g}"
         if c.get("unet_object_weight", 1) != 1 else "") +
        f", {c['uncond_prob']:.0%} empty captions, EMA {c['ema']} |",
        f"| text encoder | CLIP's tokenizer and vocabulary, {c['text_layers']} layers of width {c['text_width']}, "
        f"frozen seeded random weights, token embeddings x{c['text_token_scale']} so that words are near-orthogonal "
        "(SD trains against a frozen text encoder too) |",
        f"| storage | `{CHECKPOINT}`: the original single-file SD 1.x layout, fp16 |"]
    for stage in ("vae", "unet", "classifier"):
        if stage in report:
            r = report[stage]
            extra = f", held-out accuracy {r['held_out_accuracy']:.1%}" if "held_out_accuracy" in r else ""
            seconds = f", {r['seconds'] / 60:.1f} min of steps" if "seconds" in r else ""
            last = 50 if stage == "classifier" else 100
            loss = "no step taken" if r["final_loss"] is None else \
                f"final loss {r['final_loss']:.4g} (mean of the last {last})"
            lines.append(f"| {stage} result | {r['steps']} steps{seconds}, {loss}{extra} |")
    steps_minutes = sum(report[k]["seconds"] for k in ("vae", "unet") if k in report) / 60
    lines += [f"| time | {steps_minutes:.1f} min of VAE and UNet steps on {report['device']} ({report['threads']} "
              f"threads), torch {report['torch']}, plus rendering, encoding and the classifier; this invocation "
              f"{report['wall_seconds'] / 60:.1f} min (a stage found complete in --work is not run again) |", "",
              "Loss curves: `loss.png`. Everything measured: `training.json`. The shape classifier "
              f"(`{classifier.FILE}`) judges edits in `world-bench`.", ""]
    path = out / "README.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pix2pix_zero.world.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(SHIPPED.parent), help="where the checkpoint, classifier, loss curves and "
                   "card go (default: weights/world, the shipped model: only the recipe's defaults may go there)")
    p.add_argument("--work", default=WORK, help="training states (resume from here) and cached data")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="change a TrainConfig field")
    a = p.parse_args(argv)
    config = TrainConfig()
    for item in a.set:
        name, _, value = item.partition("=")
        if name not in TrainConfig.__dataclass_fields__:
            p.error(f"--set {item}: TrainConfig has no field {name!r}")
        default = getattr(config, name)
        kind, example = (type(default[0]), ",".join(map(str, default))) if isinstance(default, tuple) else \
            (type(default), default)
        try:
            parsed = tuple(map(kind, value.split(","))) if isinstance(default, tuple) else kind(value)
        except ValueError:
            p.error(f"--set {item}: {name} takes {kind.__name__} values like its default, {name}={example}")
        if not all(math.isfinite(v) for v in (parsed if isinstance(parsed, tuple) else (parsed,))
                   if isinstance(v, float)):
            p.error(f"--set {item}: {name} must be a finite number, like its default, {name}={example}")
        setattr(config, name, parsed)
    unknown = [s for s in config.stages if s not in TrainConfig.stages]
    if unknown:
        p.error(f"--set stages={','.join(config.stages)}: no stage {unknown[0]!r}; the stages are "
                f"{','.join(TrainConfig.stages)}")
    as_set = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)  # as --set spells it
    changed = [f"{k}={as_set(v)}" for k, v in asdict(config).items()
               if k not in ("save_every", "stages") and v != getattr(TrainConfig(), k)]
    shipped = Path(a.out).resolve() == SHIPPED.parent
    if changed and (shipped or Path(a.work).resolve() == Path(WORK).resolve()):
        # the default --work too: its states, trained otherwise, would be resumed by the next default run
        p.error(f"--set {' '.join(changed)} makes another model than the shipped one (weights/world, from "
                f"{WORK}): name its own --out and --work, e.g. --out runs/variant --work runs/variant")
    if shipped and config.stages != TrainConfig.stages:
        p.error(f"--set stages={','.join(config.stages)} would rewrite the shipped model's card, loss curves and "
                "training.json with those stages alone: name its own --out")
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        report = train_all(config, Path(a.out), Path(a.work), device)
    except (ValueError, OSError) as e:  # a state trained with other settings, an unwritable folder: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    return 0


def train_all(config: TrainConfig, out: Path, work: Path, device) -> dict:
    """The stages config.stages names, resumed from `work`; the checkpoint, classifier, loss curves, card and
    training.json written to `out`. Returns the training report."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    with atomic_path(work / "config.json") as tmp:
        tmp.write_text(json.dumps(asdict(config), indent=2))
    started = time.time()
    images = render_dataset(config, work)
    report = {"config": asdict(config), "device": str(device), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    curves = {}
    if "vae" in config.stages or "unet" in config.stages:
        vae, (crops, full) = train_vae(config, images, work, device)
        report["latent_rescale"] = scale_latents(vae, images, device)
        curves["VAE (L1 + KL)"] = crops.losses + full.losses
        report["vae"] = {"steps": crops.step + full.step, "seconds": round(crops.seconds + full.seconds),
                         "final_loss": final_loss(full.losses or crops.losses, 100),  # the last phase run
                         "crop_phase": {"steps": crops.step, "final_loss": final_loss(crops.losses, 100)}}
        text_encoder, tokenizer = frozen_text_encoder(config, device), load_tokenizer()
        if "unet" in config.stages:
            latents = encode_dataset(vae, images, work, device)
            unet, unet_stage = train_unet(config, latents, text_encoder, tokenizer, work, device)
            curves["UNet (eps MSE)"] = unet_stage.losses
            report["unet"] = {"steps": unet_stage.step, "seconds": round(unet_stage.seconds),
                              "final_loss": final_loss(unet_stage.losses, 100)}
            write_checkpoint(out / CHECKPOINT, config, unet, vae, text_encoder,
                             {"world": {"config": asdict(config), "trained_with": "python -m pix2pix_zero.world.train"}})
            print(f"wrote {out / CHECKPOINT}")
    if "classifier" in config.stages:
        model, losses, accuracy = classifier.train(config.classifier_steps, config.seed + 5, device,
                                                   object_scale=config.object_scale)
        classifier.save(model, out / classifier.FILE)
        curves["shape classifier (cross-entropy)"] = losses
        report["classifier"] = {"steps": len(losses), "held_out_accuracy": accuracy,
                                "final_loss": final_loss(losses, 50)}
    report["wall_seconds"] = round(time.time() - started)
    plot_losses(curves, out / "loss.png")
    write_card(report, out)
    with atomic_path(out / "training.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, allow_nan=False))  # strict JSON: no NaN
    return report


def final_loss(losses: list[float], last: int) -> float | None:
    """The mean of the last `last` losses; None for a stage that took no step (not NaN, which JSON lacks)."""
    return float(np.mean(losses[-last:])) if losses else None


if __name__ == "__main__":
    raise SystemExit(main())
