"""Why the `diffusers` setting reconstructs the world's scenes about 10 dB worse than the `paper` setting.

  python bench/diffusers_zero_shift.py [--n 10] [--task circle2square] [--weights weights/world/baby-sd.safetensors]

diffusers' pipeline (and the authors' code before Sep 2024) draws each regularizer shift from [0, S/2), 0
included, one shift for both axes. At shift 0 the "autocorrelation" is the map's second moment, so the pair loss
then pulls the noise's variance towards 0: with the authors' step (lambda_ac / rolls = 4) a zero draw on both axes
scales a level-0 map of N cells by about 1 - 32 / N, i.e. 0.875 on the world's 16 x 16 latents and 0.992 on SD's
64 x 64, and at 16 x 16 one draw in 8 is 0 (one in 32 at 64 x 64). This runs the same held-out scenes four ways:
the paper setting, the diffusers setting, the diffusers setting with its shifts drawn from [1, S/2) (nothing else
changed), and both settings with the regularizer off, and prints reconstruction PSNR, background PSNR, colour
error and success. Edits one scene at a time (the diffusers setting's own path), about 3 s an edit on 2 cores.
"""
import argparse
import statistics
from contextlib import contextmanager
from dataclasses import replace
from unittest import mock

import torch

from pix2pix_zero import diffusers_compat, load_sd
from pix2pix_zero.config import EditConfig
from pix2pix_zero.noise_reg import autocorrelations, noise_pyramid
from pix2pix_zero.world import CHECKPOINT, WORLD_DIR, classifier
from pix2pix_zero.world.bench import run_bench


def pair_loss_without_zero(eps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """diffusers_compat.pair_loss with every shift drawn from [1, S/2) instead of [0, S/2); the rest unchanged."""
    levels = noise_pyramid(eps)
    B, C = eps.shape[:2]
    delta = torch.cat([1 + torch.randint(eta.shape[-2] // 2 - 1, (1,), generator=generator, device=generator.device)
                       for _ in range(B * C) for eta in levels]).view(B, C, len(levels))
    return sum((autocorrelations(eta, delta[..., p], -2) ** 2 + autocorrelations(eta, delta[..., p], -1) ** 2).sum()
               for p, eta in enumerate(levels))


@contextmanager
def no_zero_shift(on: bool):
    if not on:
        yield
        return
    with mock.patch.object(diffusers_compat, "pair_loss", pair_loss_without_zero):
        yield


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(CHECKPOINT))
    p.add_argument("--n", type=int, default=10, help="held-out scenes")
    p.add_argument("--task", default="circle2square")
    a = p.parse_args()
    sd, judge = load_sd(a.weights), classifier.load(WORLD_DIR / classifier.FILE)
    base = EditConfig()
    runs = [("paper", base, False), ("diffusers", replace(base, setting="diffusers"), False),
            ("diffusers, shifts from 1", replace(base, setting="diffusers"), True),
            ("paper, regularizer off", replace(base, num_reg_steps=0), False),
            ("diffusers, regularizer off", replace(base, setting="diffusers", num_reg_steps=0), False)]
    print(f"{a.weights}: {a.task}, {a.n} held-out scenes (mean over scenes)")
    print(f"{'run':28s} {'recon dB':>9s} {'bg dB':>7s} {'colour':>7s} {'success':>8s}")
    for name, config, patched in runs:
        with no_zero_shift(patched):
            rows = run_bench(sd, judge, [a.task], a.n, config, batch=1)
        mean = lambda key: statistics.fmean(r[key] for r in rows if r[key] == r[key])  # NaN (no object) skipped
        print(f"{name:28s} {mean('psnr_recon'):9.2f} {mean('psnr_bg'):7.2f} {mean('colour_error'):7.1f} "
              f"{100 * mean('success'):7.0f}%", flush=True)


if __name__ == "__main__":
    main()
