"""Safetensors readers: ours (SafetensorsFile) against safetensors' safe_open and load_file, on a full-size file.

python bench/readers.py [--dir /tmp/p2p0_bench] [--repeats 3]

Reads the seeded random full-size SD 1.5-shaped fp16 single file (written once by common.full_size_checkpoints)
to fp32 on the CPU, every tensor kept in a dict as a load does (integer tensors are kept as they are), in a fresh
process per measurement, three ways:
  ours       SafetensorsFile(path).read(key, "cpu", torch.float32) for every key (plain file reads, then cast)
  safe_open  with safe_open(path, "pt", device="cpu") as f: f.get_tensor(key).to(torch.float32) for every key
  load_file  safetensors.torch.load_file(path), then each tensor .to(torch.float32) (what most code does)
Reports wall seconds and peak RSS above the RSS just before the read (VmHWM after resetting it), in GiB and as a
multiple of the fp32 bytes read; the methods run interleaved (ours, safe_open, load_file, ours, ...) and the
median of the repeats is printed, with the ratios ours / safe_open. safe_open maps the file, so its peak counts
the touched pages of the mapping (page cache, which plain reads also fill but RSS does not count); so the peak of
anonymous memory alone (RssAnon, sampled every 5 ms) and RssFile after the read are printed too.
"""
import argparse
import statistics
from pathlib import Path

from common import full_size_checkpoints, run_child

CHILD = r"""
import json, sys, threading, time, torch
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
peak_anon, done = [0], threading.Event()
def sample_anon():  # no kernel peak counter for anonymous memory alone: sample it every 5 ms
    while not done.wait(0.005):
        peak_anon[0] = max(peak_anon[0], rss("RssAnon"))
which, path = sys.argv[1], sys.argv[2]
from safetensors import safe_open
from safetensors.torch import load_file
from pix2pix_zero.loading.checkpoint import SafetensorsFile
def fp32(t):
    return t.to(torch.float32) if t.is_floating_point() else t
open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS counter (VmHWM)
before, anon_before = rss("VmRSS"), rss("RssAnon")
sampler = threading.Thread(target=sample_anon)
sampler.start()
t0 = time.perf_counter()
if which == "ours":
    f = SafetensorsFile(path)
    out = {k: f.read(k, "cpu", torch.float32) for k in f.keys()}
elif which == "safe_open":
    with safe_open(path, "pt", device="cpu") as f:
        out = {k: fp32(f.get_tensor(k)) for k in f.keys()}
else:
    sd = load_file(path)
    out = {k: fp32(v) for k, v in sd.items()}
    del sd
seconds = time.perf_counter() - t0
done.set()
sampler.join()
peak_anon = max(peak_anon[0], rss("RssAnon"))
floats = [t for t in out.values() if t.is_floating_point()]
assert all(t.dtype == torch.float32 for t in floats)
print(json.dumps({"seconds": seconds, "peak_delta": rss("VmHWM") - before,
                  "fp32_bytes": 4 * sum(t.numel() for t in floats),
                  "anon_peak_delta": peak_anon - anon_before, "file_after": rss("RssFile"), "keys": len(out),
                  "checksum": sum(out[k].reshape(-1)[:64].double().sum().item() for k in sorted(out))}))
"""

METHODS = ("ours", "safe_open", "load_file")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/p2p0_bench"))
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    single, _ = full_size_checkpoints(a.dir)
    runs = {m: [] for m in METHODS}
    for r in range(a.repeats):
        for m in METHODS:
            runs[m].append(run_child(CHILD, m, single))
            x = runs[m][-1]
            print(f"  run {r + 1} {m:10s} {x['seconds']:6.2f} s  peak {x['peak_delta'] / 2**30:5.2f} GiB", flush=True)
    sums = {m: {x["checksum"] for x in runs[m]} for m in METHODS}
    assert len(set.union(*sums.values())) == 1, f"the three readers disagree: {sums}"
    med = {m: {k: statistics.median(x[k] for x in runs[m]) for k in runs[m][0]} for m in METHODS}
    ref = med["safe_open"]
    fp32 = ref["fp32_bytes"]
    print(f"\n{single} ({single.stat().st_size / 2**30:.2f} GiB fp16, {int(ref['keys'])} tensors) -> fp32 on CPU, "
          f"median of {a.repeats} (fp32 bytes: {fp32 / 2**30:.2f} GiB)")
    print(f"{'':10s} {'seconds':>8s} {'peak RSS GiB':>13s} {'x fp32 bytes':>13s} {'peak anon GiB':>14s} {'file GiB':>9s} "
          f"{'time / safe_open':>17s} {'mem / safe_open':>16s}")
    for m, x in med.items():
        print(f"{m:10s} {x['seconds']:8.2f} {x['peak_delta'] / 2**30:13.2f} {x['peak_delta'] / fp32:13.2f} "
              f"{x['anon_peak_delta'] / 2**30:14.2f} {x['file_after'] / 2**30:9.2f} "
              f"{x['seconds'] / ref['seconds']:17.2f} {x['peak_delta'] / ref['peak_delta']:16.2f}")
    print("(peak anon: RssAnon above its value before the read, sampled every 5 ms; file: RssFile just after the read,\n"
          " i.e. mapped pages of the file, page cache that is resident either way; all three results agree)")


if __name__ == "__main__":
    main()
