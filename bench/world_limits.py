"""What limits the world's edit success: three measurements of a baby SD checkpoint, no edit involved.

  python bench/world_limits.py [--weights weights/world/baby-sd.safetensors ...] [--n 32] [--object-scale 1]
                               [--classifier weights/world/shape-classifier.safetensors]

1. The VAE alone: held-out scenes of each shape encoded (posterior mean) and decoded; the share the shape
   classifier still names right. No edit can score above it.
2. How much the UNet reads the shape word: on held-out scenes' latents noised to t, the eps MSE with the right
   caption against the caption with the shape (or, for scale, the colour) word swapped; +x% is how much worse
   the wrong word predicts. The edit's shape must be decided where the object's layout is (t >= 500).
3. Shapes from text alone: DDIM samples (50 steps, classifier-free guidance 5, the edit's) of held-out captions
   on plain backgrounds, judged against the named background colour: does the model draw the shape it is told?
Several checkpoints are measured on the same scenes and noise, one after the other. --object-scale draws the
scenes with objects that many times larger, for a model trained on them; judge them with a classifier trained at
that scale too (`python -m pix2pix_zero.world.train --set stages=classifier object_scale=...`).
"""
import argparse
from dataclasses import replace

import torch

from pix2pix_zero import load_sd
from pix2pix_zero.editing import decode_latents, guided_output
from pix2pix_zero.inversion import encode_image
from pix2pix_zero.models.ddim import alphas_cumprod, ddim_step, sampling_schedule
from pix2pix_zero.world import CHECKPOINT, WORLD_DIR, classifier, scenes
from pix2pix_zero.world.bench import held_out_scene, to_model
from pix2pix_zero.world.measure import object_mask, unit

from common import object_scale

TIMESTEPS = (100, 300, 500, 700, 900)


def judged_right(judge, images: torch.Tensor, chosen: list[scenes.Scene]) -> float:
    """Share of images (B, 3, H, W) whose object, found against each scene's true background, is its shape."""
    masks = torch.stack([object_mask(unit(images[i]), unit(scenes.render(s)[2])) for i, s in enumerate(chosen)])
    predicted = classifier.classify(judge, masks[:, None])
    return (predicted == torch.tensor([scenes.SHAPES.index(s.shape) for s in chosen])).float().mean().item()


@torch.no_grad()
def vae_round_trip(sd, judge, n: int, object_scale: float = 1.0) -> dict[str, float]:
    result = {}
    for shape in scenes.SHAPES:
        chosen = [held_out_scene(shape, k, object_scale) for k in range(n)]
        x = torch.cat([to_model(scenes.render(s)[0]) for s in chosen])
        result[shape] = judged_right(judge, decode_latents(sd, encode_image(sd, x)), chosen)
    return result


def swapped(scene: scenes.Scene, field: str, names: list[str]) -> scenes.Scene:
    return replace(scene, **{field: names[(names.index(getattr(scene, field)) + 1) % len(names)]})


@torch.no_grad()
def word_reliance(sd, n: int, object_scale: float = 1.0) -> dict[int, dict[str, float]]:
    """{t: {"shape": +%, "colour": +%, "mse": eps MSE with the right caption}} on 2n held-out scenes."""
    chosen = [scenes.sample_scene(scenes.HELD_OUT + 3000 + k, object_scale=object_scale) for k in range(2 * n)]
    z = encode_image(sd, torch.cat([to_model(scenes.render(s)[0]) for s in chosen]))  # (B, 4, h, w)
    c = {"right": sd.encode_text([scenes.caption(s) for s in chosen]),
         "shape": sd.encode_text([scenes.caption(swapped(s, "shape", list(scenes.SHAPES))) for s in chosen]),
         "colour": sd.encode_text([scenes.caption(swapped(s, "colour", list(scenes.COLOURS))) for s in chosen])}
    alpha_bar, result = alphas_cumprod(), {}
    for t in TIMESTEPS:
        eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(t))
        x_t = alpha_bar[t].sqrt() * z + (1 - alpha_bar[t]).sqrt() * eps
        mse = {k: (sd.unet(x_t, t, v) - eps).pow(2).mean().item() for k, v in c.items()}
        result[t] = {"shape": 100 * (mse["shape"] / mse["right"] - 1),
                     "colour": 100 * (mse["colour"] / mse["right"] - 1), "mse": mse["right"]}
    return result


@torch.no_grad()
def shapes_from_text(sd, judge, n: int, w: float = 5.0, steps: int = 50, object_scale: float = 1.0
                     ) -> dict[str, float]:
    alpha_bar, result = alphas_cumprod(), {}
    for shape in scenes.SHAPES:
        chosen = [replace(scenes.sample_scene(scenes.HELD_OUT + 500 + k, shape=shape, object_scale=object_scale),
                          background="plain")
                  for k in range(n)]
        c, c_neg = sd.encode_text([scenes.caption(s) for s in chosen]), sd.encode_text([""] * n)
        x = torch.randn((n, 4, scenes.SIZE // 8, scenes.SIZE // 8), generator=torch.Generator().manual_seed(1))
        for t, alpha_bar_t, alpha_bar_prev in sampling_schedule(steps, alpha_bar):
            x = ddim_step(guided_output(sd, x, t, c, c_neg, w), x, alpha_bar_t, alpha_bar_prev, sd.prediction_type)
        result[shape] = judged_right(judge, decode_latents(sd, x), chosen)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", nargs="+", default=[str(CHECKPOINT)])
    p.add_argument("--n", type=int, default=32, help="held-out scenes per shape")
    p.add_argument("--object-scale", type=object_scale, default=1.0, help="objects this many times the world's size")
    p.add_argument("--classifier", default=str(WORLD_DIR / classifier.FILE), help="the shape judge")
    a = p.parse_args()
    s = a.object_scale
    judge = classifier.load(a.classifier)
    shares = lambda result: ", ".join(f"{shape} {100 * v:.1f}%" for shape, v in result.items())
    for weights in a.weights:
        sd = load_sd(weights, "cpu", torch.float32)
        print(f"\n{weights}", flush=True)
        print(f"  VAE round trip, classified right (n = {a.n} per shape): {shares(vae_round_trip(sd, judge, a.n, s))}")
        print(f"  eps MSE with a swapped word, vs the right caption (n = {2 * a.n}):")
        for t, r in word_reliance(sd, a.n, s).items():
            print(f"    t = {t:3d}: shape word {r['shape']:+5.1f}%, colour word {r['colour']:+5.1f}% "
                  f"(MSE {r['mse']:.4f})")
        print("  samples from text alone (plain backgrounds, guidance 5), classified right: "
              f"{shares(shapes_from_text(sd, judge, a.n, object_scale=s))}", flush=True)


if __name__ == "__main__":
    main()
