"""Captioning benchmark: peak memory of a folder run that captions with BLIP, then edits with Stable Diffusion.

python bench/captions.py [--dir /tmp/p2p0_bench] [--images 2]

Full-size random BLIP-base (transformers' default BlipConfig) and SD 1.5-shaped weights (fp16 on disk, fp32 in
memory), a folder of random images, the real command line (`train_free_edit.py --input FOLDER`, no --prompt),
each run in a fresh process, peak RSS from /proc (VmHWM). Also BLIP alone (--caption-only) and SD alone
(--prompt): the folder run should peak near the larger of the two, not their sum, since BLIP is released before
SD is loaded. 1 step at 64 px: the edit's own memory is small next to the models'.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import full_size_checkpoints

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak": peak, "rc": code}))
"""


def full_size_blip(folder: Path) -> Path:
    """A random BLIP-base captioner in transformers' layout (fp32 safetensors), with a made-up WordPiece vocabulary
    of BERT's size and special-token ids (the random captions are meaningless; memory is the model's)."""
    if (folder / "tokenizer.json").is_file():
        return folder
    import torch
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig()).save_pretrained(folder)
    words = [f"w{i}" for i in range(30523)]
    for i, w in {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1000: "a", 1001: "picture",
                 1002: "of", 30522: "[DEC]"}.items():
        words[i] = w
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, bos_token="[DEC]").save_pretrained(folder)
    return folder


def measure(*args) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "train_free_edit.py"), *map(str, args)],
                         capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
                         cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"]:
        raise SystemExit(f"{args} failed:\n{out.stderr[-3000:]}")
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/tmp/p2p0_bench")
    p.add_argument("--images", type=int, default=2)
    a = p.parse_args()
    import numpy as np
    import torch
    from PIL import Image
    from safetensors import safe_open
    folder = Path(a.dir)
    single, _ = full_size_checkpoints(folder)
    blip = full_size_blip(folder / "blip_base_random")
    photos = folder / "photos"
    photos.mkdir(exist_ok=True)
    for i in range(a.images):
        pixels = (np.random.default_rng(i).random((96, 128, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(photos / f"{i}.png")
    with safe_open(blip / "model.safetensors", "pt") as f:
        blip_bytes = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()) * 4
    with safe_open(single, "pt") as f:
        sd_bytes = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys()) * 4  # fp32 in memory
    fast = ["--task", "cat2dog", "--weights", single, "--steps", "1", "--size", "64", "--reg-steps", "1",
            "--ac-rolls", "1", "--quiet", "--device", "cpu"]
    runs = {"BLIP alone (--caption-only)": measure("--input", photos, "--caption-only", "--captioner", blip),
            "SD alone (--prompt)": measure("--input", photos, "--prompt", "a photo of a cat", *fast, "--out",
                                           folder / "out_prompt"),
            "folder run, BLIP then SD": measure("--input", photos, "--captioner", blip, *fast, "--out",
                                                folder / "out_caption")}
    gib = 2 ** 30
    print(f"parameter bytes in memory (fp32): BLIP base {blip_bytes / gib:.2f} GiB, SD 1.5 {sd_bytes / gib:.2f} GiB, "
          f"sum {(blip_bytes + sd_bytes) / gib:.2f} GiB; {a.images} images, torch {torch.__version__}")
    print(f"{'':30s} peak RSS GiB   x (BLIP + SD bytes)")
    for name, r in runs.items():
        print(f"{name:30s} {r['peak'] / gib:12.2f}   {r['peak'] / (blip_bytes + sd_bytes):18.2f}")


if __name__ == "__main__":
    main()
