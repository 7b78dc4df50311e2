"""SDXL on the CPU: the UNet forward, ours against diffusers', and one guided step of pix2pix-zero, on a
full-size random SDXL 1.0 base UNet (2.57 B parameters, seeded random weights; no download).

python bench/sdxl.py [--sizes 512 1024] [--dtype bf16]

Each measurement runs in a fresh process that builds the UNet on the meta device and assigns the seeded weights
(one copy in memory): "ours" and "diffusers" time one forward (batch 1, the packed conditioning / diffusers'
added_cond_kwargs, the same numbers); "guided" records the reference maps M_ref of all 70 cross-attention
layers with one forward (no gradient, as editing.reference_step keeps them), then takes the guidance gradient:
a forward recording M and the backward of the attention loss to the latents (editing.xa_guidance). Reported:
seconds, and peak RSS above the RSS with the weights loaded (VmHWM after a reset), which is what a GPU would
need beside the weights. Wall times on a busy 2-core CPU are noisy: compare ours and diffusers' in one run.
"""
import argparse

from common import run_child

CHILD = r"""
import json, sys, time, torch
from pix2pix_zero.loading.random_checkpoint import diffusers_configs, random_weights, sdxl_models
from pix2pix_zero.models.unet import UNet, pack_conditioning
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
which, px, dtype = sys.argv[1], int(sys.argv[2]), {"bf16": torch.bfloat16, "fp32": torch.float32}[sys.argv[3]]
ucfg, vcfg, text_cfg, _ = sdxl_models(True)
with torch.device("meta"):
    ours = UNet(ucfg)
weights = random_weights(ours, torch.Generator().manual_seed(0), dtype)
if which == "diffusers":
    from diffusers import UNet2DConditionModel
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(diffusers_configs(ucfg, vcfg, text_cfg)["unet"])
else:
    unet = ours
unet.load_state_dict(weights, assign=True)
del weights
unet.eval().requires_grad_(False)
g = torch.Generator().manual_seed(1)
x = torch.randn(1, 4, px // 8, px // 8, generator=g).to(dtype)
c = torch.randn(1, 77, 2048, generator=g).to(dtype)
pooled = torch.randn(1, 1280, generator=g).to(dtype)
time_ids = torch.tensor([px, px, 0, 0, px, px], dtype=torch.float32)
open("/proc/self/clear_refs", "w").write("5")
base = rss("VmRSS")
start = time.perf_counter()
if which == "diffusers":
    with torch.no_grad():
        out = unet(x, 500, c, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids[None]}).sample
elif which == "ours":
    with torch.no_grad():
        out = unet(x, 500, pack_conditioning(c, pooled, time_ids))
else:
    from pix2pix_zero.editing import attention_loss
    from pix2pix_zero.models.attention import record_cross_attention
    packed = pack_conditioning(c, pooled, time_ids)
    with torch.no_grad(), record_cross_attention(unet) as maps:
        unet(x, 500, packed)
    maps_ref = {name: M.to(dtype) for name, M in maps.items()}
    values = sum(M.numel() for M in maps_ref.values())
    with torch.enable_grad(), record_cross_attention(unet) as maps:
        x_grad = x.detach().requires_grad_(True)
        unet(x_grad, 500, pack_conditioning(c + 0.01, pooled, time_ids))  # c + delta_c
        (out,) = torch.autograd.grad(attention_loss(maps, maps_ref), x_grad)
seconds = time.perf_counter() - start
result = {"seconds": seconds, "peak_gib": (rss("VmHWM") - base) / 2**30, "weights_gib": base / 2**30,
          "finite": bool(torch.isfinite(out).all())}
if which == "guided":
    result |= {"layers": len(maps_ref), "map_values_M": values / 1e6}
print(json.dumps(result))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16",
                   help="weights and activations (fp32 needs 10.3 GB for the weights alone)")
    a = p.parse_args()
    print(f"SDXL UNet, full size, random weights, {a.dtype}, CPU")
    print(f"{'px':>5} {'what':10} {'seconds':>8} {'peak GiB':>9}  (above {a.dtype} weights)")
    for px in a.sizes:
        rows = {which: run_child(CHILD, which, px, a.dtype) for which in ("ours", "diffusers", "guided")}
        for which, r in rows.items():
            extra = f"  {r['layers']} layers, M_ref {r['map_values_M']:.1f} M values" if which == "guided" else ""
            print(f"{px:>5} {which:10} {r['seconds']:8.1f} {r['peak_gib']:9.2f}{extra}"
                  f"{'' if r['finite'] else '  NOT FINITE'}")
        print(f"{px:>5} forward ours / diffusers: {rows['ours']['seconds'] / rows['diffusers']['seconds']:.2f} "
              f"time, {rows['ours']['peak_gib'] / rows['diffusers']['peak_gib']:.2f} peak memory; guided step / "
              f"forward: {rows['guided']['seconds'] / rows['ours']['seconds']:.2f}")


if __name__ == "__main__":
    main()
