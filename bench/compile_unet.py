"""torch.compile of our UNet against eager, call by call, on full-size random SD 1.5 weights.

python bench/compile_unet.py [--sizes 256 [512]] [--modes blocks resnets resnets-nograd unet] [--reps 5]

Each mode runs in a fresh process (compiled code and inductor settings must not leak between modes). In it, on
the same weights and inputs, eager and compiled calls alternate (torch.compiler.set_stance("force_eager")
switches), median of --reps each: the UNet's gradient-free forward at batch 2 (the classifier-free-guidance
call) and one paper-setting edit step at batch 1 (forward recording the maps, backward of the attention loss to
x_t, then the gradient-free CFG forward). It also prints the first compiled call's time (compilation included:
inductor writes C++ kernels and builds them) and the largest difference from eager. Modes (`compile_unet`):

  blocks          each down, mid and up block compiled on its own ("regional" compilation), static shapes
  resnets         each ResnetBlock2D compiled with static shapes and inductor's freezing (weights folded in as
                  constants, conv weights prepacked for oneDNN once instead of at every call)
  resnets-nograd  the same, but a UNet call with gradients enabled (the guided forward) runs eager
  unet            the whole forward compiled, static shapes, the timestep handed to it as a tensor

`torch.compile(unet)` as such would compile the model again at every denoising step: both loops pass the
timestep as a Python int and dynamo specializes on its value (tiny model, CPU: 87 s for the first call, 48-54 s
for each new t). The `unet` mode wraps the call so that t arrives as a tensor; the other modes compile blocks
below the timestep embedding, which see only tensors.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from common import full_size_checkpoints, run_child
from speed_child import timed

ROOT, BENCH = Path(__file__).resolve().parents[1], Path(__file__).resolve().parent
CHILD = (f"import sys, json; sys.path[:0] = [{str(ROOT)!r}, {str(BENCH)!r}]; import compile_unet; "
         "print(json.dumps(compile_unet.measure(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), "
         "int(sys.argv[4]))))")
MODES = ("blocks", "resnets", "resnets-nograd", "unet")


def compile_unet(unet: torch.nn.Module, mode: str) -> None:
    """Compile parts of `unet` in place (names and weights unchanged) as `mode` says; see the module docstring."""
    from pix2pix_zero.models.unet import ResnetBlock2D
    assert mode in MODES, mode
    # every block of the UNet and every latent shape is its own static graph: allow that many
    torch._dynamo.config.recompile_limit = 256
    if mode == "unet":
        body = torch.compile(unet.forward, dynamic=False)
        unet.forward = lambda x, t, context: body(x, torch.as_tensor(t, device=x.device), context)
        return
    if mode == "blocks":
        parts = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    else:
        torch._inductor.config.freezing = True  # applies only to graphs compiled without gradients
        parts = [m for m in unet.modules() if isinstance(m, ResnetBlock2D)]
    for part in parts:
        part.compile(dynamic=False)
    if mode == "resnets-nograd":
        forward = unet.forward

        def dispatch(x, t, context):
            if not torch.is_grad_enabled():
                return forward(x, t, context)
            with torch.compiler.set_stance("force_eager"):
                return forward(x, t, context)
        unet.forward = dispatch


def measure(single: str, mode: str, sizes: list[int], reps: int) -> dict:
    """In this process: load our UNet, compile it as `mode` says, time eager and compiled calls alternately."""
    from pix2pix_zero import editing, load_sd
    from pix2pix_zero.config import EditConfig
    sd = load_sd(single)
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2, 77, sd.unet.config.context_dim, generator=g)
    config = EditConfig(setting="paper")
    compile_unet(sd.unet, mode)
    out = {}
    for s in sizes:
        h = s // 8
        x = torch.randn(2, 4, h, h, generator=g)
        with torch.compiler.set_stance("force_eager"):  # compiling starts in the timed first call below
            _, maps_ref = editing.reference_step(sd, x[:1], 501, 0.5, 0.6, c[1:], c[:1], config)
        calls = {f"unet b2 {h}x{h} no grad": torch.no_grad()(lambda: sd.unet(x, 501, c)),
                 f"edit step {h}x{h} (paper)":
                     lambda: editing.edit_step(sd, x[:1], 501, 0.5, 0.6, c[1:], c[:1], maps_ref, config)}
        for name, call in calls.items():
            with torch.compiler.set_stance("force_eager"):
                ref = call()
            t0 = time.perf_counter()
            y = call()
            first = time.perf_counter() - t0
            eager, compiled = [], []
            for _ in range(reps):
                for stance, times in (("force_eager", eager), ("default", compiled)):
                    with torch.compiler.set_stance(stance):
                        times.append(timed(call, "cpu"))
            out[name] = dict(first=first, eager=statistics.median(eager), compiled=statistics.median(compiled),
                             max_diff=(y - ref).abs().max().item())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/p2p0_bench"), help="checkpoints and JSON")
    p.add_argument("--sizes", type=int, nargs="+", default=[256], help="image sides; latents are side / 8")
    p.add_argument("--modes", nargs="+", choices=MODES, default=["blocks", "resnets", "resnets-nograd"])
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    single, _ = full_size_checkpoints(a.dir)
    print(f"torch.compile of our UNet, SD 1.5 shapes, random weights, cpu, {torch.get_num_threads()} threads, "
          f"median of {a.reps}, eager and compiled alternating in one process per mode")
    print(f"{'mode':15s} {'call':28s} {'1st call s':>10s} {'eager s':>8s} {'compiled s':>10s} {'ratio':>6s} "
          f"{'max|diff|':>9s}")
    results = {}
    for mode in a.modes:
        print(f"  {mode}...", file=sys.stderr, flush=True)
        results[mode] = run_child(CHILD, single, mode, json.dumps(a.sizes), a.reps)
        for name, r in results[mode].items():
            print(f"{mode:15s} {name:28s} {r['first']:10.1f} {r['eager']:8.3f} {r['compiled']:10.3f} "
                  f"{r['compiled'] / r['eager']:6.2f} {r['max_diff']:9.1e}", flush=True)
    (a.dir / "compile_unet.json").write_text(json.dumps(results, indent=1))
    print(f"JSON: {a.dir / 'compile_unet.json'}")


if __name__ == "__main__":
    main()
