"""Editing benchmark: invert + edit one image with ours and with diffusers' StableDiffusionPix2PixZeroPipeline.

python bench/edit.py [--dir /tmp/p2p0_bench] [--size 256] [--steps 3] [--device cpu]

Full-size SD 1.5-shaped random weights (written once by pix2pix_zero.loading.random_checkpoint, fp16, loaded at
fp32), the same image, caption and sentences on both sides, each side in a fresh process: wall time of inversion and of
editing, and peak RSS of the whole run. Ours runs in the `diffusers` setting (the same work, step for step)
and in the `paper` setting. Random weights make the pictures meaningless; the cost is the real one.
"""
import argparse
from pathlib import Path

from common import full_size_checkpoints, run_child

CHILD = f"BENCH = {str(Path(__file__).resolve().parent)!r}\n" + r"""
import json, sys, time, numpy as np, torch
from PIL import Image
which, folder, single, size, steps, device = sys.argv[1:7]
size, steps = int(size), int(steps)
def peak():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
image = Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8))
caption, src, tgt = "a photo of a cat", ["a cat", "a photo of a cat"], ["a dog", "a photo of a dog"]
if which == "reference":
    sys.path.insert(0, BENCH)
    from speed_child import theirs  # the pipeline on the same folder, as bench/speed.py builds it
    pipe = theirs(folder, device)
    t0 = time.perf_counter()
    inv = pipe.invert(caption, image=image, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                      output_type="latent").latents
    t1 = time.perf_counter()
    pipe(caption, source_embeds=pipe.get_embeds(src), target_embeds=pipe.get_embeds(tgt), num_inference_steps=steps,
         cross_attention_guidance_amount=0.1, guidance_scale=5.0, latents=inv, negative_prompt=caption,
         output_type="latent", generator=torch.Generator().manual_seed(0))
    t2 = time.perf_counter()
else:
    from pix2pix_zero import EditConfig, load_sd
    from pix2pix_zero.directions import mean_embedding
    from pix2pix_zero.inversion import encode_image
    from pix2pix_zero import diffusers_compat, editing, inversion
    from pix2pix_zero.pipeline import setting_rules
    from pix2pix_zero.tools.image import pil_to_tensor
    sd = load_sd(single, device=device)
    config = setting_rules(EditConfig(setting=which, num_steps=steps))
    # what edit_image runs (inversion_method ddim), timed in two parts
    invert, edit = ((diffusers_compat.invert, diffusers_compat.edit) if which == "diffusers" else
                    (inversion.invert, editing.edit))
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    c = sd.encode_text([caption])
    x_inv = invert(sd, encode_image(sd, pil_to_tensor(image).to(device), config.posterior, g), c, config, g,
                   progress=False)
    t1 = time.perf_counter()
    delta_c = mean_embedding(sd, tgt) - mean_embedding(sd, src)
    edit(sd, x_inv, c, [delta_c], c, config, progress=False)
    t2 = time.perf_counter()
print(json.dumps({"invert": t1 - t0, "edit": t2 - t1, "peak": peak()}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("/tmp/p2p0_bench"))
    p.add_argument("--size", type=int, default=256, help="image side (the paper uses 512)")
    p.add_argument("--steps", type=int, default=3, help="DDIM steps (the paper uses 50-100)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    single, folder = full_size_checkpoints(a.dir)
    rows = {name: run_child(CHILD, which, folder, single, a.size, a.steps, a.device) for name, which in
            (("diffusers pipeline", "reference"), ("ours, diffusers setting", "diffusers"), ("ours, paper setting", "paper"))}
    ref = rows["diffusers pipeline"]
    print(f"SD 1.5 shapes, fp32, {a.device}, {a.size}x{a.size}, {a.steps} steps (invert + edit one target)")
    print(f"{'':26s} {'invert s':>9s} {'edit s':>8s} {'peak RSS GiB':>13s} {'time ratio':>11s} {'mem ratio':>10s}")
    for name, m in rows.items():
        total, ref_total = m["invert"] + m["edit"], ref["invert"] + ref["edit"]
        print(f"{name:26s} {m['invert']:9.1f} {m['edit']:8.1f} {m['peak'] / 2**30:13.2f} {total / ref_total:11.2f} "
              f"{m['peak'] / ref['peak']:10.2f}")


if __name__ == "__main__":
    main()
