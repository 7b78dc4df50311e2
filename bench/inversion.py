"""Reconstruction by inversion method: invert x0, sample back with the caption (the reference trajectory), and
report RMS(x_ref - x0) and the time of each half, for ddim, direct and fixed-point at 1, 2, 5, 10 iterations.

python bench/inversion.py --model tiny [--steps 10 50]                      (the tests' tiny random model)
python bench/inversion.py --model sd15 --size 256 --steps 10 --iters 2      (full-size random SD 1.5, fp16 -> fp32)

The regularizer is run off, on with the paper's x2 pyramid, and on with the authors' unscaled pyramid
(--no-pyramid-rescale). Random weights make the pictures meaningless, but the numerics are the real ones.
"""
import argparse
import time
from pathlib import Path

import torch

from pix2pix_zero.config import EditConfig
from pix2pix_zero.inversion import encode_image
from pix2pix_zero.loading.load import load_sd
from pix2pix_zero.options import edit, invert_path

REGULARIZER = {"off": dict(lambda_ac=0, lambda_kl=0), "on (x2)": {}, "on (authors')": dict(pyramid_rescale=False)}


def model(name: str, folder: Path, device: str):
    from pix2pix_zero.loading.random_checkpoint import make_checkpoint
    path = folder / ("tiny.safetensors" if name == "tiny" else "sd15_fp16.safetensors")
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        full = name == "sd15"
        make_checkpoint(path, "single", full_size=full, dtype=torch.float16 if full else torch.float32)
    return load_sd(path, device=device, dtype=torch.float32)


def measure(sd, x0, c, config: EditConfig) -> dict:
    residuals = []
    t0 = time.perf_counter()
    path = invert_path(sd, x0, c, config, torch.Generator().manual_seed(0), progress=False, residuals=residuals)
    t1 = time.perf_counter()
    x_path = path if config.inversion_method == "direct" else None
    x_ref, _ = edit(sd, path[-1], c, [], c, config, progress=False, x_path=x_path)
    t2 = time.perf_counter()
    last = max((r[-1] for r in residuals if r), default=float("nan"))  # the worst step's last residual
    return {"rms": ((x_ref - x0) ** 2).mean().sqrt().item(), "invert": t1 - t0, "reference": t2 - t1,
            "residual": last}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    p.add_argument("--dir", type=Path, default=Path("/tmp/p2p0_bench"))
    p.add_argument("--size", type=int, default=64, help="image side in pixels (latents are 1/8)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    p.add_argument("--iters", type=int, nargs="+", default=[1, 2, 5, 10], help="fixed-point iterations")
    p.add_argument("--regularizer", nargs="+", default=list(REGULARIZER), choices=list(REGULARIZER))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    sd = model(a.model, a.dir, a.device)
    image = torch.rand(1, 3, a.size, a.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x0 = encode_image(sd, image.to(a.device))
    c = sd.encode_text(["a photo of a cat"])
    print(f"{a.model}, {a.device}, {a.size}x{a.size} px, x0 RMS {x0.pow(2).mean().sqrt().item():.3f}")
    print("| N | regularizer | method | RMS(x_ref - x0) | worst last fixed-point residual | invert s | reference s |")
    print("|---|---|---|---|---|---|---|")
    methods = [("ddim", {}), ("direct", {})] + [(f"fixed-point {k}", dict(inversion_method="fixed-point",
                                                                            inversion_iters=k)) for k in a.iters]
    for N in a.steps:
        for reg in a.regularizer:
            for name, kw in methods:
                kw = {"inversion_method": name} if name in ("ddim", "direct") else kw
                m = measure(sd, x0, c, EditConfig(num_steps=N, **REGULARIZER[reg], **kw))
                print(f"| {N} | {reg} | {name} | {m['rms']:.2e} | {m['residual']:.1e} | {m['invert']:.1f} | "
                      f"{m['reference']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
