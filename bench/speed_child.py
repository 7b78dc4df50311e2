"""One measurement of bench/speed.py, run in a fresh process: `python -c ... KIND JSON_ARGS`; prints one JSON line.

Kinds: peaks (fp32/bf16 matmul GFLOP/s), parts (UNet forward, guided step, VAE of one side), edit (invert + edit
one target with one side, timed, peak and working memory, latents saved), flops (the whole edit's FLOPs,
ours). Sides: "theirs" (diffusers' StableDiffusionPix2PixZeroPipeline), "diffusers" and "paper" (ours in that
setting). Working memory is peak RSS minus RSS right after loading (the kernel's high-water mark is reset there
through /proc/self/clear_refs, so the load's own transient peak is not counted).
"""
import json
import sys
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

CAPTION, SOURCE, TARGET = "a photo of a cat", ["a cat", "a photo of a cat"], ["a dog", "a photo of a dog"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def rss(field: str = "VmRSS") -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))


def reset_peak() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; returns that RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss()


def timed(fn, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def matmul_peaks(device: str, reps: int = 3) -> dict:
    """Best GFLOP/s of an n x n x n matmul (2 n^3 FLOPs) at fp32 (n = 2048) and bf16: the machine's reachable
    peak. bf16 runs at n = 512 on a CPU: without AVX-512 BF16 or AMX it runs at ~1 GFLOP/s, and n = 2048 would
    take minutes; with them, n = 512 already fills the units."""
    out = {}
    for name, dtype in DTYPES.items():
        n = 512 if name == "bf16" and device == "cpu" else 2048
        a, b = (torch.randn(n, n, device=device, generator=torch.Generator(device).manual_seed(i)).to(dtype)
                for i in range(2))
        a @ b  # warm-up
        out[name] = 2 * n**3 / min(timed(lambda: a @ b, device) for _ in range(reps)) / 1e9
    return out


def image(size: int):
    from PIL import Image
    return Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8))


# --- loading -------------------------------------------------------------------------------------------------

def theirs(folder: str, device: str):
    import diffusers
    import transformers
    kw = dict(torch_dtype=torch.float32)
    pipe = diffusers.StableDiffusionPix2PixZeroPipeline(
        vae=diffusers.AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw),
        text_encoder=transformers.CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        unet=diffusers.UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw),
        scheduler=diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler"),
        inverse_scheduler=diffusers.DDIMInverseScheduler.from_pretrained(folder, subfolder="scheduler"),
        feature_extractor=None, safety_checker=None, caption_generator=None, caption_processor=None,
        requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ours(single: str, device: str, dtype: str = "fp32", compile_mode: str | None = None):
    from pix2pix_zero import load_sd
    sd = load_sd(single, device=device, dtype=DTYPES[dtype])
    if compile_mode:
        from compile_unet import compile_unet
        compile_unet(sd.unet, compile_mode)
    return sd


# --- the parts ------------------------------------------------------------------------------------------------

def parts_theirs(pipe, device: str, sizes: list[int]) -> dict:
    from diffusers.pipelines.deprecated.stable_diffusion_variants.pipeline_stable_diffusion_pix2pix_zero import (
        Pix2PixZeroL2Loss, prepare_unet)
    unet, vae, g = pipe.unet, pipe.vae, torch.Generator(device).manual_seed(0)
    c = torch.randn(2, 77, 768, generator=g, device=device)
    out = {}
    with torch.no_grad():
        unet(torch.randn(1, 4, 32, 32, generator=g, device=device), 1, encoder_hidden_states=c[:1])  # warm-up
        for s in sizes:
            h = s // 8
            for B in (1, 2):
                x = torch.randn(B, 4, h, h, generator=g, device=device)
                out[f"unet b{B} {h}x{h}"] = timed(lambda: unet(x, 501, encoder_hidden_states=c[:B]), device)
            img = torch.rand(1, 3, s, s, generator=g, device=device) * 2 - 1
            out[f"vae encode {s}px"] = timed(lambda: vae.encode(img), device)
            z = torch.randn(1, 4, h, h, generator=g, device=device)
            out[f"vae decode {s}px"] = timed(lambda: vae.decode(z), device)
    prepare_unet(unet)
    for i, s in enumerate(sizes):
        h, t = s // 8, torch.tensor(501, device=device)
        x = torch.randn(2, 4, h, h, generator=g, device=device)

        @torch.no_grad()
        def record():  # the reference maps of this timestep (untimed), as the pipeline records them; used once
            unet(x, t, encoder_hidden_states=c, cross_attention_kwargs={"timestep": t})

        def guided_step():  # the pipeline's edit step: guided [x; x], then the CFG forward
            x_in = x.detach().clone().requires_grad_(True)
            opt = torch.optim.SGD([x_in], lr=0.1)
            loss = Pix2PixZeroL2Loss()
            unet(x_in, t, encoder_hidden_states=c, cross_attention_kwargs={"timestep": t, "loss": loss})
            loss.loss.backward()
            opt.step()
            with torch.no_grad():
                unet(x_in.detach(), t, encoder_hidden_states=c, cross_attention_kwargs={"timestep": None})
        if i == 0:
            record()
            guided_step()  # warm-up: the process's first backward pass
        record()
        out[f"guided step {h}x{h} (diffusers)"] = timed(guided_step, device)
    return out


@torch.no_grad()
def parts_ours(sd, device: str, sizes: list[int]) -> dict:
    from pix2pix_zero import diffusers_compat, editing
    from pix2pix_zero.config import EditConfig
    unet, vae, g = sd.unet, sd.vae, torch.Generator(device).manual_seed(0)
    dtype = unet.conv_in.weight.dtype
    c = torch.randn(2, 77, 768, generator=g, device=device).to(dtype)
    unet(torch.randn(1, 4, 32, 32, generator=g, device=device).to(dtype), 1, c[:1])  # warm-up
    out = {}
    for s in sizes:
        h = s // 8
        for B in (1, 2):
            x = torch.randn(B, 4, h, h, generator=g, device=device).to(dtype)
            out[f"unet b{B} {h}x{h}"] = timed(lambda: unet(x, 501, c[:B]), device)
        img = torch.rand(1, 3, s, s, generator=g, device=device) * 2 - 1
        out[f"vae encode {s}px"] = timed(lambda: vae.encode(img), device)
        z = torch.randn(1, 4, h, h, generator=g, device=device)
        out[f"vae decode {s}px"] = timed(lambda: vae.decode(z), device)
    for i, s in enumerate(sizes):
        h = s // 8
        x = torch.randn(1, 4, h, h, generator=g, device=device).to(dtype)
        for name, module in (("diffusers", diffusers_compat), ("paper", editing)):
            config = EditConfig(setting=name)
            _, maps_ref = module.reference_step(sd, x, 501, 0.5, 0.6, c[1:], c[:1], config)
            step = lambda: module.edit_step(sd, x, 501, 0.5, 0.6, c[1:], c[:1], maps_ref, config)  # noqa: E731
            if i == 0:
                step()  # warm-up: the process's first backward pass
            out[f"guided step {h}x{h} ({name})"] = timed(step, device)
    return out


# --- the whole edit -------------------------------------------------------------------------------------------

def edit_theirs(pipe, size: int, steps: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    t0 = time.perf_counter()
    x_inv = pipe.invert(CAPTION, image=image(size), num_inference_steps=steps,
                        generator=torch.Generator().manual_seed(0), output_type="latent").latents
    t1 = time.perf_counter()
    x_edit = pipe(CAPTION, source_embeds=pipe.get_embeds(SOURCE), target_embeds=pipe.get_embeds(TARGET),
                  num_inference_steps=steps, cross_attention_guidance_amount=0.1, guidance_scale=5.0,
                  latents=x_inv, negative_prompt=CAPTION, output_type="latent",
                  generator=torch.Generator().manual_seed(0)).images
    return t1 - t0, time.perf_counter() - t1, x_inv, x_edit


def edit_ours(sd, setting: str, size: int, steps: int, device: str):
    """What edit_image runs (inversion_method ddim), timed in two parts."""
    from pix2pix_zero import diffusers_compat, editing, inversion
    from pix2pix_zero.config import EditConfig
    from pix2pix_zero.directions import mean_embedding
    from pix2pix_zero.pipeline import setting_rules
    from pix2pix_zero.tools.image import pil_to_tensor
    config = setting_rules(EditConfig(setting=setting, num_steps=steps))
    module_invert, module_edit = ((diffusers_compat.invert, diffusers_compat.edit) if setting == "diffusers" else
                                  (inversion.invert, editing.edit))
    g = torch.Generator(device).manual_seed(0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t0 = time.perf_counter()
    c = sd.encode_text([CAPTION])
    x0 = inversion.encode_image(sd, pil_to_tensor(image(size)).to(device), config.posterior, g)
    x_inv = module_invert(sd, x0, c, config, g, progress=False)
    sync()
    t1 = time.perf_counter()
    delta_c = mean_embedding(sd, TARGET) - mean_embedding(sd, SOURCE)
    _, (x_edit,) = module_edit(sd, x_inv, c, [delta_c], c, config, progress=False)
    sync()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, x_inv, x_edit, first_attention_loss(sd, x_inv, c, delta_c, config)


@torch.no_grad()
def first_attention_loss(sd, x_inv, c, delta_c, config) -> float:
    """The attention loss ||M(x_inv, c + delta_c) - M_ref||^2 the first guidance step descends (untimed)."""
    from pix2pix_zero.editing import attention_loss, reference_step
    from pix2pix_zero.models.attention import record_cross_attention
    from pix2pix_zero.models.ddim import alphas_cumprod, sampling_schedule
    t, alpha_bar_t, alpha_bar_prev = sampling_schedule(config.num_steps, alphas_cumprod())[0]
    _, maps_ref = reference_step(sd, x_inv, t, alpha_bar_t, alpha_bar_prev, c, c, config)
    with record_cross_attention(sd.unet) as maps:
        sd.unet(x_inv, t, c + delta_c.to(c))
    return float(attention_loss(maps, maps_ref))


# CPU attention runs in a fused kernel that torch's FLOP formulas do not list (CUDA's are listed): count it by
# torch's own formula for attention, the two (forward) or five (backward) matmuls
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default:
        lambda q, k, v, *rest, **kw: sdpa_flop_count(q.shape, k.shape, v.shape),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
        lambda grad_out, q, k, v, *rest, **kw: sdpa_backward_flop_count(grad_out.shape, q.shape, k.shape, v.shape),
}


class CountFlops(TorchDispatchMode):
    """Sum of every op's FLOPs by torch.utils.flop_counter's formulas (matmuls, convolutions, attention), plus
    CPU_ATTENTION. A bare dispatch mode: FlopCounterMode's module tracker breaks torch.autograd.grad."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func._overloadpacket in flop_registry:
            self.flops += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        elif func in CPU_ATTENTION:
            self.flops += CPU_ATTENTION[func](*args, **kwargs)
        return out


def count_flops(sd, setting: str, size: int, steps: int, device: str) -> dict:
    """FLOPs of invert + edit at `steps`, from counted runs at 1 and 2 steps: every step does the same tensor
    work (only the regularizer's line search varies, a few MFLOPs), so F(N) = F(1) + (N - 1) (F(2) - F(1))."""
    counts = []
    for n in (1, 2):
        with CountFlops() as mode:
            edit_theirs(sd, size, n) if setting == "theirs" else edit_ours(sd, setting, size, n, device)
        counts.append(mode.flops)
    return {"flops": counts[0] + (steps - 1) * (counts[1] - counts[0]), "flops_1": counts[0], "flops_2": counts[1]}


def map_bytes(sd, setting: str, size: int, device: str) -> int:
    """Bytes of one step's reference maps M_t^ref (all cross-attention layers), the only maps ever held."""
    from pix2pix_zero import diffusers_compat, editing
    from pix2pix_zero.config import EditConfig
    module = diffusers_compat if setting == "diffusers" else editing
    c = sd.encode_text([CAPTION])
    x = torch.zeros(1, 4, size // 8, size // 8, device=device, dtype=c.dtype)
    _, maps = module.reference_step(sd, x, 501, 0.5, 0.6, c, c * 0, EditConfig(setting=setting))
    return sum(M.numel() * M.element_size() for M in maps.values())


def main(kind: str, a: dict) -> dict:
    device = a["device"]
    torch.manual_seed(0)  # nothing should draw from it; a stray draw is at least repeatable
    if kind == "peaks":
        return matmul_peaks(device)
    side = a["side"]
    model = theirs(a["folder"], device) if side == "theirs" else ours(a["single"], device, a.get("dtype", "fp32"),
                                                                       a.get("compile"))
    loaded = reset_peak()
    result = {"loaded_rss": loaded}
    if kind == "parts":
        result["times"] = (parts_theirs if side == "theirs" else parts_ours)(model, device, a["sizes"])
    elif kind == "edit":
        setting = side
        if a.get("compile") and side != "theirs":  # compile every shape the edit meets, outside the timing
            t0 = time.perf_counter()
            edit_ours(model, setting, a["size"], a["steps"], device)
            result["first_run"] = time.perf_counter() - t0
        run = (edit_theirs(model, a["size"], a["steps"]) if side == "theirs" else
               edit_ours(model, setting, a["size"], a["steps"], device))
        result.update(invert=run[0], edit=run[1], **({"attention_loss": run[4]} if len(run) > 4 else {}))
        if a.get("latents"):
            from safetensors.torch import save_file
            save_file({"x_inv": run[2].float().cpu().contiguous(), "x_edit": run[3].float().cpu().contiguous()},
                      a["latents"])
    elif kind == "flops":
        result.update(count_flops(model, side, a["size"], a["steps"], device))
        if side != "theirs":
            result.update(map_bytes=map_bytes(model, side, a["size"], device))
    result.update(peak=rss("VmHWM"), working=rss("VmHWM") - loaded)
    if device.startswith("cuda"):
        result.update(cuda_peak=torch.cuda.max_memory_allocated())
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
