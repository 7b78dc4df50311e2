"""Where the world's reconstruction loses its background: PSNR by background kind, stage by stage, no edit involved.

  python bench/world_backgrounds.py [--weights weights/world/baby-sd.safetensors] [--n 24] [--steps 50]
                                    [--sheet outputs/world-backgrounds.png]

For n held-out scenes of each background kind (plain, stripes, checks, gradient, texture), the reconstruction
the edit starts from, taken apart:
1. the VAE alone: encode (posterior mean) and decode;
2. plain DDIM inversion and the reference denoising (the caption as c and as c_neg, as for real images);
3. the same with the paper's regularizer (sec. 3.1, the defaults: lambda 20, 5 iterations, x2 pyramid);
4. the same with the authors' unscaled pyramid.
PSNR is over the whole image, in dB, against the rendered input (world-bench's psnr_recon). Then, as the
regularizer sees noise: E[L_pair] (all_shifts.pair_loss_expected, the paper's loss without its draw) of x_inv
scaled to unit variance, after plain DDIM inversion and after the regularized one, against white noise's.
--sheet shows the first scene of each kind, one row each: input | VAE alone | the three reconstructions.
"""
import argparse
from dataclasses import replace
from statistics import mean

import torch
from PIL import Image

from pix2pix_zero import load_sd, options
from pix2pix_zero.all_shifts import pair_loss_expected
from pix2pix_zero.config import EditConfig
from pix2pix_zero.editing import decode_latents
from pix2pix_zero.inversion import encode_image
from pix2pix_zero.pipeline import setting_rules
from pix2pix_zero.tools.image import save_png, side_by_side, tensor_to_pil
from pix2pix_zero.world import CHECKPOINT, scenes
from pix2pix_zero.world.bench import to_model
from pix2pix_zero.world.commands import as_markdown
from pix2pix_zero.world.measure import psnr, unit

SETTINGS = {"DDIM, no regularizer": {"num_reg_steps": 0}, "paper regularizer (defaults)": {},
            "unscaled pyramid (authors)": {"pyramid_rescale": False}}


def scenes_with_background(kind: str, n: int) -> list[scenes.Scene]:
    """The first n held-out scenes (seeds from HELD_OUT + 20000, apart from the bench's) drawn with `kind`."""
    chosen, seed = [], scenes.HELD_OUT + 20_000
    while len(chosen) < n:
        scene = scenes.sample_scene(seed)
        if scene.background == kind:
            chosen.append(scene)
        seed += 1
    return chosen


def psnrs(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Each image's PSNR in dB, (B, 3, H, W) in [-1, 1]: world-bench's psnr_recon."""
    return [psnr(unit(a[i]), unit(b[i])) for i in range(len(a))]


def whiteness(x: torch.Tensor) -> list[float]:
    """E[L_pair] of each map (B, 4, h, w) scaled to unit variance: how far from white noise the regularizer sees it."""
    return pair_loss_expected(x / x.flatten(1).std(dim=1)[:, None, None, None]).tolist()


@torch.no_grad()
def reconstruct(sd, x: torch.Tensor, captions: list[str], config: EditConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Inversion and the reference pass (options.invert_path, options.edit with no edit): (images (B, 3, H, W),
    x_inv (B, 4, h, w))."""
    c = sd.encode_text(captions)
    generator = torch.Generator().manual_seed(config.seed)
    x0 = encode_image(sd, x, config.posterior, generator)
    x_inv = options.invert_path(sd, x0, c, config, generator, progress=False)[-1]
    x_ref, _ = options.edit(sd, x_inv, c, [], c, config, progress=False)
    return decode_latents(sd, x_ref), x_inv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(CHECKPOINT))
    p.add_argument("--n", type=int, default=24, help="held-out scenes per background kind")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (the defaults' 50)")
    p.add_argument("--sheet", default="outputs/world-backgrounds.png", help="the first scene of each kind, taken apart")
    a = p.parse_args()
    sd = load_sd(a.weights, "cpu", torch.float32)
    base = setting_rules(EditConfig(num_steps=a.steps))
    white = mean(whiteness(torch.randn((256, 4, scenes.SIZE // 8, scenes.SIZE // 8),
                                       generator=torch.Generator().manual_seed(0))))
    print(f"{a.weights}: reconstruction PSNR (dB) by background, {a.n} held-out scenes each, {a.steps} steps")
    table = [["background", "VAE alone", *SETTINGS, f"E[L_pair] of x_inv, no regularizer / paper (white: {white:.4f})"]]
    sheet = []
    for kind in scenes.BACKGROUNDS:
        chosen = scenes_with_background(kind, a.n)
        x = torch.cat([to_model(scenes.render(s)[0]) for s in chosen])
        captions = [scenes.caption(s) for s in chosen]
        vae = decode_latents(sd, encode_image(sd, x))
        cells, pair, shown = [mean(psnrs(vae, x))], [], [x[:1], vae[:1]]
        for name, changes in SETTINGS.items():
            images, x_inv = reconstruct(sd, x, captions, replace(base, **changes))
            cells.append(mean(psnrs(images, x)))
            shown.append(images[:1])
            if name in ("DDIM, no regularizer", "paper regularizer (defaults)"):
                pair.append(mean(whiteness(x_inv)))
        table.append([kind, *(f"{v:.1f}" for v in cells), " / ".join(f"{v:.4f}" for v in pair)])
        sheet.append(side_by_side([tensor_to_pil(image) for image in shown]))
        print(f"{kind} done", flush=True)
    print(as_markdown(table))
    grid = Image.new("RGB", (sheet[0].width, sum(row.height for row in sheet)))
    for i, row in enumerate(sheet):
        grid.paste(row, (0, i * row.height))
    print(f"wrote {save_png(grid, a.sheet)} (rows {', '.join(scenes.BACKGROUNDS)}; input | VAE alone | "
          f"{' | '.join(SETTINGS)})")


if __name__ == "__main__":
    main()
