"""Loading benchmark: a full-size SD 1.5-shaped fp16 checkpoint loaded to fp32 on the CPU.

python bench/load.py [--dir /tmp/p2p0_bench]

Writes seeded random full-size checkpoints once (single file and diffusers folder, fp16), then loads each in a
fresh process and reports wall time and peak RSS during the load (peak minus the RSS just before it), as a
multiple of the fp32 parameter bytes. The reference is diffusers' from_pretrained (UNet, VAE) plus
transformers' CLIPTextModel.from_pretrained on the same diffusers folder, in the same run.
"""
import argparse
from pathlib import Path

from common import full_size_checkpoints, run_child

CHILD = r"""
import json, sys, time, torch
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
which, path = sys.argv[1], sys.argv[2]
if which.startswith("diffusers"):
    import diffusers, transformers
else:
    from pix2pix_zero.loading.load import load_sd
open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS counter (VmHWM)
before = rss("VmRSS")
t0 = time.perf_counter()
if which.startswith("diffusers"):
    unet = diffusers.UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=torch.float32)
    vae = diffusers.AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32)
    text = transformers.CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=torch.float32)
    modules = [unet, vae, text]
else:
    sd = load_sd(path, dtype=torch.float32)
    modules = [sd.unet, sd.vae, sd.text_encoder]
seconds = time.perf_counter() - t0
params = sum(p.numel() for m in modules for p in m.parameters())
assert all(p.dtype == torch.float32 for m in modules for p in m.parameters())
print(json.dumps({"seconds": seconds, "peak_delta": rss("VmHWM") - before, "fp32_bytes": 4 * params}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/p2p0_bench"))
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    single, folder = full_size_checkpoints(a.dir)
    rows = {}
    for r in range(a.repeats):
        for which, path in (("ours single file", single), ("ours diffusers folder", folder),
                            ("diffusers from_pretrained", folder)):
            m = run_child(CHILD, which if not which.startswith("diffusers") else "diffusers", path)
            best = rows.get(which)
            rows[which] = m if best is None else {k: min(best[k], m[k]) if k != "fp32_bytes" else m[k] for k in m}
    ref = rows["diffusers from_pretrained"]
    print(f"fp16 checkpoint -> fp32 on CPU, best of {a.repeats} (fp32 parameter bytes: {ref['fp32_bytes'] / 2**30:.2f} GiB)")
    print(f"{'':28s} {'seconds':>8s} {'peak RSS GiB':>13s} {'x fp32 bytes':>13s} {'time ratio':>11s} {'mem ratio':>10s}")
    for which, m in rows.items():
        print(f"{which:28s} {m['seconds']:8.2f} {m['peak_delta'] / 2**30:13.2f} {m['peak_delta'] / m['fp32_bytes']:13.2f} "
              f"{m['seconds'] / ref['seconds']:11.2f} {m['peak_delta'] / ref['peak_delta']:10.2f}")


if __name__ == "__main__":
    main()
