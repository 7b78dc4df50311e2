"""Fast modes against fp32 on the tiny random model: speed, and how far the result moves.

python bench/fast_modes.py [--steps 5] [--size 64] [--modes bf16 compile]

Ours (what edit_image runs: inversion, then editing.edit) on the seeded tiny checkpoint of the tests, in each
setting, at fp32 and in each mode: wall time (after a warm-up run), max |x - x_fp32| of x_inv and of the edited
latent, and the attention loss of the first guidance step. The full-size comparison is
`python bench/speed.py --dtype bf16` (its edit table prints the same deltas when an fp32 run's latents are in --dir).
"""
import argparse
import tempfile
from pathlib import Path

import torch

from speed_child import edit_ours


def run(single: Path, setting: str, dtype: torch.dtype, compile_unet: bool, size: int, steps: int) -> dict:
    from pix2pix_zero import load_sd
    sd = load_sd(single, dtype=dtype)
    if compile_unet:
        from compile_unet import compile_unet as compile_parts
        compile_parts(sd.unet, "resnets-nograd")
    edit_ours(sd, setting, size, steps, "cpu")  # warm-up (and compilation)
    t_invert, t_edit, x_inv, x_edit, loss = edit_ours(sd, setting, size, steps, "cpu")
    return {"time": t_invert + t_edit, "x_inv": x_inv.float(), "x_edit": x_edit.float(), "loss": loss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--modes", nargs="+", choices=["bf16", "compile"], default=["bf16"])
    a = p.parse_args()
    from pix2pix_zero.loading.random_checkpoint import make_checkpoint
    single = make_checkpoint(Path(tempfile.mkdtemp()) / "tiny.safetensors", "single")
    print(f"tiny random SD 1.x, {a.size}x{a.size}, {a.steps} steps, invert + edit one target, "
          f"{torch.get_num_threads()} threads")
    print(f"{'setting':10s} {'mode':8s} {'time s':>7s} {'x fp32 time':>11s} {'max|dx_inv|':>11s} "
          f"{'max|dx_edit|':>12s} {'max|x_edit|':>11s} {'L_xa':>8s} {'L_xa change':>11s}")
    for setting in ("paper", "diffusers"):
        fp32 = run(single, setting, torch.float32, False, a.size, a.steps)
        print(f"{setting:10s} {'fp32':8s} {fp32['time']:7.2f} {1:11.2f} {'':11s} {'':12s} "
              f"{fp32['x_edit'].abs().max().item():11.3f} {fp32['loss']:8.4f}")
        for mode in a.modes:
            m = run(single, setting, torch.bfloat16 if mode == "bf16" else torch.float32, mode == "compile",
                    a.size, a.steps)
            print(f"{setting:10s} {mode:8s} {m['time']:7.2f} {m['time'] / fp32['time']:11.2f} "
                  f"{(m['x_inv'] - fp32['x_inv']).abs().max().item():11.2e} "
                  f"{(m['x_edit'] - fp32['x_edit']).abs().max().item():12.2e} {'':11s} {m['loss']:8.4f} "
                  f"{m['loss'] / fp32['loss'] - 1:+11.2%}")


if __name__ == "__main__":
    main()
