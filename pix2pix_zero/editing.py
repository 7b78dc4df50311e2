"""Cross-attention guided editing (pix2pix-zero, arXiv:2302.03027v2, sec. 3.3 "Editing via Cross-Attention
Guidance", Algorithm 1).

Two DDIM trajectories start from x_inv and run in lockstep: the reference denoises with the caption c and
records the cross-attention maps M_t^ref of every cross-attention layer; the edit denoises with
c_edit = c + delta_c and, at every step, first moves x_t down the gradient of ||M_t^edit - M_t^ref||^2,
then takes the guided DDIM step. Each step's reference maps are used by that step's edits, then dropped.
Classifier-free guidance (Ho & Salimans, arXiv:2207.12598) with the negative prompt c_neg (the caption for
real images, "" for synthetic ones). Latents (B, 4, H, W) at 1/8 of the image; maps (B, heads, H*W, 77).
"""
from typing import Callable

import torch
from tqdm.auto import tqdm

from .config import EditConfig
from .finite import FiniteChecks, check_finite
from .models.attention import explicit_cross_attention, record_cross_attention
from .models.ddim import alphas_cumprod, ddim_step, sampling_schedule
from .models.sd import StableDiffusion


SD1_LAYERS = 16  # cross-attention layers of SD 1.x and 2.x, for which lambda_xa = 0.1 was tuned


def attention_loss(maps: dict[str, torch.Tensor], maps_ref: dict[str, torch.Tensor]) -> torch.Tensor:
    """||M - M_ref||^2 (sec. 3.3): the mean over (batch row, head) of sum_{position, token} (M - M_ref)^2,
    summed over the cross-attention layers, scaled by SD1_LAYERS / layers.

    For SD 1.x and 2.x (16 layers) this is the paper's sum over layers, and diffusers' Pix2PixZeroL2Loss.
    A sum grows with the number of layers (SDXL has 70), and so would the guidance step lambda_xa * gradient
    for the same change of the maps: as 16 x the mean over layers the loss keeps lambda_xa's meaning on every
    family, so one default serves all (docs/sdxl.md).
    """
    total = sum(((M - maps_ref[name]) ** 2).sum(dim=(-2, -1)).mean() for name, M in maps.items())
    return total * (SD1_LAYERS / len(maps))  # x 1.0, exactly the sum, for 16 layers


def cfg_output(sd: StableDiffusion, x_pair: torch.Tensor, t: int, c: torch.Tensor, c_neg: torch.Tensor,
               w: float) -> torch.Tensor:
    """Classifier-free guidance on the UNet output: out(c_neg) + w (out(c) - out(c_neg)) (arXiv:2207.12598).

    One batched UNet call on x_pair = [x for c_neg; x for c] (2B rows) with [c_neg; c]. The guidance is
    linear, so combining outputs or eps is the same here.
    """
    out_neg, out_c = sd.unet(x_pair, t, torch.cat([c_neg, c])).chunk(2)
    return out_neg + w * (out_c - out_neg)


def guided_output(sd: StableDiffusion, x_t: torch.Tensor, t: int, c: torch.Tensor, c_neg: torch.Tensor,
                  w: float) -> torch.Tensor:
    """`cfg_output` at one shared latent; a single call on c when w = 1 or c_neg equals c, where guidance
    changes nothing."""
    if w == 1 or torch.equal(c_neg, c):
        return sd.unet(x_t, t, c)
    return cfg_output(sd, torch.cat([x_t, x_t]), t, c, c_neg, w)


@torch.no_grad()
def reference_step(sd: StableDiffusion, x_t, t, alpha_bar_t, alpha_bar_prev, c, c_neg, config: EditConfig):
    """One DDIM step of the reference trajectory; returns (x_prev, M_t^ref), the maps of the c rows (B, h, N, L)."""
    with record_cross_attention(sd.unet) as maps:
        out = guided_output(sd, x_t, t, c, c_neg, config.guidance_scale)
    # the c rows: the last B rows, whether guided_output made one call (B rows) or two (2B rows), kept in the
    # latents' dtype (float32 softmax; fp16/bf16 UNets halve the 126 M values a 1024 px SDXL step records)
    maps_ref = {name: M[-x_t.shape[0]:].to(x_t.dtype) for name, M in maps.items()}
    return ddim_step(out, x_t, alpha_bar_t, alpha_bar_prev, sd.prediction_type), maps_ref


def xa_guidance(sd: StableDiffusion, x: torch.Tensor, t: int, c_edit: torch.Tensor, maps_ref, lambda_xa: float):
    """One gradient step on the latents: x - lambda_xa * grad_x ||M(x, c_edit) - M_ref||^2 (Algorithm 1).

    Gradients flow to the latents only (the weights are frozen). Returns the moved latents, detached.
    """
    if lambda_xa == 0:
        return x
    with torch.enable_grad(), record_cross_attention(sd.unet) as maps:
        x = x.detach().requires_grad_(True)
        sd.unet(x, t, c_edit)
        (grad,) = torch.autograd.grad(attention_loss(maps, maps_ref), x)
    return (x - lambda_xa * grad).detach()


@torch.no_grad()
def edit_step(sd: StableDiffusion, x_t, t, alpha_bar_t, alpha_bar_prev, c_edit, c_neg, maps_ref,
              config: EditConfig) -> torch.Tensor:
    """One DDIM step of the edit trajectory: guide x_t with the maps of the c_edit branch, then take the
    classifier-free guided step from the guided latent."""
    # NOTE(official): the loss averages over batch rows; the authors' code runs one image at a time, so their
    # step is lambda_xa times one image's gradient. Times B, each image here moves as it would alone.
    x_t = xa_guidance(sd, x_t, t, c_edit, maps_ref, config.lambda_xa * x_t.shape[0])
    # NOTE(official): the authors' code (and diffusers) guides both classifier-free-guidance halves separately
    # and continues from the unconditional one (diffusers_compat.edit_step); Algorithm 1 moves the one latent
    # x_t, and the guided prediction is made from it.
    # Under the explicit softmax, as the reference's recording call, so that with delta_c = 0 and
    # lambda_xa = 0 the two trajectories are identical, not merely close.
    with explicit_cross_attention(sd.unet):
        out = guided_output(sd, x_t, t, c_edit, c_neg, config.guidance_scale)
    return ddim_step(out, x_t, alpha_bar_t, alpha_bar_prev, sd.prediction_type)


def edit(sd: StableDiffusion, x_inv: torch.Tensor, c: torch.Tensor, delta_cs: list[torch.Tensor],
         c_neg: torch.Tensor, config: EditConfig, progress: bool = True,
         on_reference: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
         reference_step: Callable = reference_step, edit_step: Callable = edit_step,
         after_step: Callable | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Denoise x_inv with c (the reference) and with c + delta_c for each delta_c, in lockstep.

    Returns (x0_ref, [x0_edit per delta_c]). c and c_neg are (1, L, D) or (B, L, D); delta_c (1, L, D) or
    (B, L, D), times config.edit_multiplier, is added to every conditional row.
    `on_reference(t, maps_ref)`, if given, sees each step's reference maps (e.g. to draw heat maps).
    `reference_step` and `edit_step` are this module's; diffusers_compat passes its own.
    `after_step(j, x_ref, x_edits) -> (x_ref, x_edits)`, if given, corrects both trajectories after step j
    (direct_inversion.DirectInversion; options.edit plugs it in).
    """
    B = x_inv.shape[0]
    c, c_neg = c.expand(B, -1, -1), c_neg.expand(B, -1, -1)  # one prompt may serve a whole batch
    c_edits = [c + config.edit_multiplier * delta_c.to(c) for delta_c in delta_cs]  # c + delta_c (sec. 3.2)
    x_ref, x_edits = x_inv, [x_inv] * len(delta_cs)
    # alpha_bar stays float32 (0-dim tensors do not change the latents' dtype): in fp16/bf16, 1 - alpha_bar
    # near alpha_bar = 1 would lose most of its digits.
    schedule = sampling_schedule(config.num_steps, alphas_cumprod())
    check = FiniteChecks(x_inv.device)  # on a GPU, no wait for the host in the loop
    for j, (t, alpha_bar_t, alpha_bar_prev) in enumerate(tqdm(schedule, desc="editing", disable=not progress,
                                                              leave=False)):
        where = f"editing step {j + 1}/{len(schedule)} (t={t})"
        x_next, maps_ref = reference_step(sd, x_ref, t, alpha_bar_t, alpha_bar_prev, c, c_neg, config)
        check(x_next, "the reference latent", where)
        if on_reference is not None:
            on_reference(t, maps_ref)
        x_edits = [check(edit_step(sd, x, t, alpha_bar_t, alpha_bar_prev, c_edit, c_neg, maps_ref, config),
                         f"the latent of edit {k + 1}", where)
                   for k, (x, c_edit) in enumerate(zip(x_edits, c_edits, strict=True))]
        if after_step is not None:
            x_next, x_edits = after_step(j, x_next, x_edits)
        x_ref = x_next
    check.raise_first()
    return x_ref, x_edits


@torch.no_grad()
def decode_latents(sd: StableDiffusion, x0: torch.Tensor) -> torch.Tensor:
    """Latents x0 -> images (B, 3, H, W) in [-1, 1] (roughly): D(x0 / LATENT_SCALE)."""
    z = (x0 / sd.latent_scale).to(sd.vae.decoder.conv_in.weight.dtype)  # the VAE's dtype (fp32 by default)
    return check_finite(sd.vae.decode(z), "the decoded image", "VAE decoding")


def initial_noise(shape: tuple[int, ...], generator: torch.Generator, device, dtype) -> torch.Tensor:
    """x_T ~ N(0, I) for a synthetic image, drawn from `generator` (on its device), then moved."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device=device, dtype=dtype)
