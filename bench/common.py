"""What the benchmarks share: the full-size random checkpoints, running one measurement in a fresh process, and
the world benches' --object-scale."""
import argparse
import json
import subprocess
import sys
from pathlib import Path


def full_size_checkpoints(folder: Path) -> tuple[Path, Path]:
    """(single file, diffusers folder) of seeded random SD 1.5-shaped fp16 weights, written once into `folder`."""
    import torch

    from pix2pix_zero.loading.random_checkpoint import make_checkpoint
    single, diffusers = folder / "sd15_fp16.safetensors", folder / "sd15_fp16_diffusers"
    if not single.exists():
        make_checkpoint(single, "single", full_size=True, dtype=torch.float16)
    if not diffusers.exists():
        make_checkpoint(diffusers, "diffusers", full_size=True, dtype=torch.float16)
    return single, diffusers


def run_child(code: str, *args) -> dict:
    """Run `code` in a fresh offline Python process with `args`; its last stdout line is a JSON result."""
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    if out.returncode:
        raise SystemExit(f"{args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def object_scale(text: str) -> float:
    """argparse type of the world benches' --object-scale: a number whose objects fit the frame."""
    from pix2pix_zero.world import scenes
    try:
        return scenes.check_object_scale(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
