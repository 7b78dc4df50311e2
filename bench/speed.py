"""Speed and memory of the whole method, against diffusers and against the machine's own matmul peak.

python bench/speed.py [--dir /tmp/p2p0_bench] [--device cpu] [--sizes 256 [512]] [--steps 10] [--repeats 3]

On full-size random SD 1.5-shaped weights (bench/common.py), ours and diffusers' StableDiffusionPix2PixZeroPipeline,
every measurement in a fresh process (bench/speed_child.py), ours and theirs alternating:
  parts (median of --repeats processes per side): UNet forward at batch 1 and 2 for each size's latents, the
    guided step (forward recording maps + backward to the latents + the CFG forward), VAE encode and decode;
  the whole inversion and edit (one target) at each size, --edit-repeats paired runs (median);
  FLOPs of the whole edit (torch.utils.flop_counter + the CPU's fused attention by torch's own formula), the
    reference maps' bytes, and GFLOP/s against fp32 and bf16 matmul peaks measured in the same run;
  parity: in the `diffusers` setting our latents against the pipeline's (relative L2, at most 1e-3).
Prints a table of medians with ratios and writes JSON (--json, default DIR/speed.json). bench/README.md has
the measured tables and the default's run time.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

from common import full_size_checkpoints, run_child
from compile_unet import MODES

ROOT, BENCH = Path(__file__).resolve().parents[1], Path(__file__).resolve().parent
# the child imports this checkout's pix2pix_zero, whatever is installed
CHILD = (f"import sys, json; sys.path[:0] = [{str(ROOT)!r}, {str(BENCH)!r}]; import speed_child; "
         "print(json.dumps(speed_child.main(sys.argv[1], json.loads(sys.argv[2]))))")
SIDES = {"theirs": "diffusers pipeline", "diffusers": "ours, diffusers setting", "paper": "ours, paper setting"}


def sides(a) -> dict:
    """The whole-edit runs, in the order they alternate; only --sides's."""
    return {side: name for side, name in SIDES.items() if side in a.sides}
PARITY_TOLERANCE = 1e-3
GiB = 2**30


def child(kind: str, **args) -> dict:
    """One measurement in a fresh process; its result is also appended to DIR/speed_log.jsonl as it comes."""
    print(f"  {kind} {args.get('side', '')} {args.get('size', '')}".rstrip(), file=sys.stderr, flush=True)
    result = run_child(CHILD, kind, json.dumps(args))
    with open(Path(args["log"]), "a") as log:
        log.write(json.dumps({"kind": kind, "args": args, "result": result}) + "\n")
    return result


def relative_l2(a, b) -> float:
    return float(((a - b).norm() / b.norm()).item())


def latents_file(a, side: str, size: int, dtype: str | None = None, compiled: bool | None = None) -> Path:
    """Where a run's latents go: per side, size, and (ours) dtype and compilation, so fast modes compare to fp32."""
    dtype, compiled = dtype or a.dtype, a.compile if compiled is None else compiled
    mode = "" if side == "theirs" else f"_{dtype}{'_compiled' if compiled else ''}"
    return a.dir / f"latents_{side}_{size}{mode}.safetensors"


def parity(a, size: int) -> dict:
    """Relative L2 of our `diffusers`-setting latents against the pipeline's (fp32 runs)."""
    from safetensors.torch import load_file
    ours, theirs = (load_file(latents_file(a, side, size)) for side in ("diffusers", "theirs"))
    return {name: relative_l2(ours[name], theirs[name]) for name in ("x_inv", "x_edit")}


def fast_mode_change(a, size: int, side: str) -> dict | None:
    """A bf16 or compiled run against the fp32 run of the same side (if its latents are there): max |x - x_fp32|."""
    from safetensors.torch import load_file
    fp32 = latents_file(a, side, size, "fp32", False)
    if (a.dtype == "fp32" and not a.compile) or not fp32.exists():
        return None
    ours, ref = load_file(latents_file(a, side, size)), load_file(fp32)
    return {f"max_abs_{name}": float((ours[name] - ref[name]).abs().max()) for name in ("x_inv", "x_edit")}


def measure(a) -> dict:
    single, folder = full_size_checkpoints(a.dir)
    common = dict(single=str(single), folder=str(folder), device=a.device, dtype=a.dtype, compile=a.compile,
                  log=str(a.dir / "speed_log.jsonl"))
    results = {"args": {k: str(v) for k, v in vars(a).items()}, "peaks": child("peaks", **common)}
    if "parts" in a.only:
        runs = {side: [] for side in ("theirs", "ours")}
        for _ in range(a.repeats):
            for side in runs:
                runs[side].append(child("parts", side=side, sizes=a.sizes, **common)["times"])
        results["parts"] = {side: {name: statistics.median(r[name] for r in rs) for name in rs[0]}
                            for side, rs in runs.items()}
    for size in a.sizes:
        if "edit" in a.only:
            runs = {side: [] for side in sides(a)}
            for _ in range(a.edit_repeats):
                for side in runs:
                    latents = str(latents_file(a, side, size))
                    runs[side].append(child("edit", side=side, size=size, steps=a.steps, latents=latents, **common))
            results[f"edit {size}"] = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                                       for side, rs in runs.items()}
            if a.dtype == "fp32" and not a.compile and {"theirs", "diffusers"} <= set(a.sides):
                results[f"parity {size}"] = parity(a, size)
            for side in {"diffusers", "paper"} & set(a.sides):
                if (change := fast_mode_change(a, size, side)) is not None:
                    results[f"change vs fp32 {size} {side}"] = change
        if "flops" in a.only:
            results[f"flops {size}"] = {side: child("flops", side=side, size=size, steps=a.steps, **common)
                                        for side in ("theirs", "diffusers", "paper")}
    return results


def report(r: dict, a) -> None:
    peaks = r["peaks"]
    compiled = f" compiled ({a.compile})" if a.compile else ""
    print(f"\nSD 1.5 shapes, random weights, {a.device}, ours at {a.dtype}{compiled}, "
          f"diffusers at fp32; matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    if "parts" in r:
        print(f"\nparts, median of {a.repeats} fresh processes each     {'diffusers s':>11s} {'ours s':>8s} "
              f"{'ratio':>6s}")
        theirs, ours = r["parts"]["theirs"], r["parts"]["ours"]
        for name, t in ours.items():
            ref = theirs.get(name, theirs.get(name.replace("(paper)", "(diffusers)")))
            print(f"  {name:44s} {ref:11.2f} {t:8.2f} {t / ref:6.2f}")
    for size in a.sizes:
        if f"edit {size}" in r:
            e = r[f"edit {size}"]
            ref = e.get("theirs", {"invert": float("nan"), "edit": float("nan"), "working": float("nan")})
            print(f"\n{size}x{size}, {a.steps} steps, invert + edit one target, median of {a.edit_repeats} run(s)")
            print(f"  {'':26s} {'invert s':>9s} {'edit s':>8s} {'total s':>8s} {'time ratio':>10s} "
                  f"{'peak GiB':>9s} {'work GiB':>9s} {'work ratio':>10s}")
            for side, m in e.items():
                name = sides(a)[side]
                total, ref_total = m["invert"] + m["edit"], ref["invert"] + ref["edit"]
                print(f"  {name:26s} {m['invert']:9.1f} {m['edit']:8.1f} {total:8.1f} {total / ref_total:10.2f} "
                      f"{m['peak'] / GiB:9.2f} {m['working'] / GiB:9.2f} {m['working'] / ref['working']:10.2f}"
                      + (f"   (first run, compiling: {m['first_run']:.1f} s)" if "first_run" in m else ""))
            if f"parity {size}" in r:
                p = r[f"parity {size}"]
                ok = max(p.values()) <= PARITY_TOLERANCE
                print(f"  parity, diffusers setting vs pipeline: relative L2 x_inv {p['x_inv']:.1e}, x_edit "
                      f"{p['x_edit']:.1e} ({'ok' if ok else 'FAILED'}: <= {PARITY_TOLERANCE:g})")
        for side in ("diffusers", "paper"):
            if f"change vs fp32 {size} {side}" in r:
                ch = r[f"change vs fp32 {size} {side}"]
                print(f"  {SIDES[side]} vs its fp32 run: max |x_inv - fp32| {ch['max_abs_x_inv']:.2e}, max |x_edit - "
                      f"fp32| {ch['max_abs_x_edit']:.2e}")
        if f"edit {size}" in r:
            losses = {side: m.get("attention_loss") for side, m in r[f"edit {size}"].items() if side in SIDES}
            print("  attention loss at the first guidance step: " +
                  ", ".join(f"{SIDES[s]} {v:.6g}" for s, v in losses.items() if v is not None))
        if f"flops {size}" in r:
            print(f"\n{size}x{size}, {a.steps} steps: work and distance to the machine's limit")
            print(f"  {'':26s} {'TFLOP':>7s} {'GFLOP/s':>8s} {'x fp32 peak':>11s} {'x bf16 peak':>11s} "
                  f"{'M_ref MiB':>9s}")
            for side in r[f"flops {size}"]:
                f = r[f"flops {size}"][side]
                line = f"  {SIDES[side]:26s} {f['flops'] / 1e12:7.2f}"
                if f"edit {size}" in r:
                    m = r[f"edit {size}"][side]
                    rate = f["flops"] / (m["invert"] + m["edit"]) / 1e9
                    line += f" {rate:8.1f} {rate / peaks['fp32']:11.2f} {rate / peaks['bf16']:11.2f}"
                else:
                    line += f" {'':8s} {'':11s} {'':11s}"
                print(line + (f" {f['map_bytes'] / 2**20:9.1f}" if "map_bytes" in f else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/p2p0_bench"), help="checkpoints, latents, JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[256], help="image sides (add 512 for the paper's)")
    p.add_argument("--512", dest="with_512", action="store_true", help="same as --sizes 256 512")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps of the whole edit")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per side for the parts (median)")
    p.add_argument("--edit-repeats", type=int, default=1, help="paired runs of the whole edit (median)")
    p.add_argument("--only", nargs="+", choices=["parts", "edit", "flops"], default=["parts", "edit", "flops"])
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="our UNet and text encoder's")
    p.add_argument("--compile", nargs="?", const="resnets-nograd", choices=MODES, help="torch.compile parts of our "
                   "UNet (bench/compile_unet.py; default mode resnets-nograd); the whole edit runs once untimed first")
    p.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES), help="whose whole edit to time "
                   "(e.g. --dtype bf16 --sides diffusers paper, against the fp32 pipeline of an earlier run)")
    p.add_argument("--json", type=Path, help="where to write the results (default DIR/speed.json)")
    a = p.parse_args()
    if a.with_512 and 512 not in a.sizes:
        a.sizes = [*a.sizes, 512]
    a.dir.mkdir(parents=True, exist_ok=True)
    results = measure(a)
    report(results, a)
    out = a.json or a.dir / "speed.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
