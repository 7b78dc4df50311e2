"""Does a longer-trained UNet edit more shapes? Continue the shipped baby SD's UNet from its weights.

  python bench/world_longer_unet.py [--steps 4000] [--stop 3000] [--lr 3e-4] [--object-scale 1] [--work DIR]
                                   [--out DIR]

The shipped checkpoint keeps only the UNet's EMA weights (its training state went with the machine that made
it), so this continues from them with a fresh AdamW: a warm restart, the recipe of world/train.py otherwise
(the same 20000 scenes, latents of the shipped VAE, Min-SNR-5, 10% empty captions, EMA 0.999), the learning rate
warmed up to --lr and decayed on a cosine over --steps. --stop ends the run early at that step (the schedule
stays the one of --steps); the run resumes from --work. It writes OUT/baby-sd.safetensors, an ordinary
checkpoint for `world-bench --weights` and `bench/world_limits.py --weights` (docs/world.md, "What limits
success"). It trains beyond the 90-minute budget of the shipped model, so its result is measured, not shipped.
--object-scale trains on the same seeds with objects that many times larger (scenes.sample_scene): does the
UNet learn shapes it is given more latent cells to draw? Benchmark that checkpoint with `world-bench
--object-scale` at the same scale.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from pix2pix_zero import load_sd
from pix2pix_zero.loading.clip_text import load_tokenizer
from pix2pix_zero.world import CHECKPOINT
from pix2pix_zero.world import train

from common import object_scale


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4000, help="the learning-rate schedule's length")
    p.add_argument("--stop", type=int, default=None, help="stop at this step (default: --steps)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of the restart")
    p.add_argument("--object-scale", type=object_scale, default=1.0, help="objects this many times the world's size")
    p.add_argument("--work", default="runs/world-longer", help="training state (resumed) and cached data")
    p.add_argument("--out", default="runs/world-longer", help="where the checkpoint goes")
    a = p.parse_args()
    stop = a.stop or a.steps
    if not 0 < stop <= a.steps:
        p.error(f"--stop must be in 1..--steps ({a.steps}), not {stop}")
    work, out = Path(a.work), Path(a.out)
    work.mkdir(parents=True, exist_ok=True)
    config = train.TrainConfig(unet_steps=stop, unet_lr=a.lr, object_scale=a.object_scale)
    sd = load_sd(str(CHECKPOINT), "cpu", torch.float32)
    images = train.render_dataset(config, work)
    latents = train.encode_dataset(sd.vae, images, work, "cpu")
    if not (work / "unet-state.pt").is_file():  # step 0 of the restart: the shipped weights, as model and as EMA
        unet = train.UNet(config.unet_config())
        unet.load_state_dict({k: v.float() for k, v in sd.unet.state_dict().items()})
        start = train.Stage("unet", work, unet, a.lr, config.seed + 1003, stop, config)
        start.save()
        start.bar.close()
    # the schedule of --steps while the loop stops at --stop: Stage.update reads train.learning_rate
    schedule = train.learning_rate
    train.learning_rate = lambda step, steps, peak, warmup: schedule(step, a.steps, peak, warmup)
    unet, stage = train.train_unet(config, latents, train.frozen_text_encoder(config, "cpu"), load_tokenizer(), work,
                                   "cpu")
    path = train.write_checkpoint(out / "baby-sd.safetensors", config, unet, sd.vae, sd.text_encoder, {
        "world": {"config": {"unet_steps": a.steps, "stop": stop, "lr": a.lr, "object_scale": a.object_scale},
                  "trained_with": "python bench/world_longer_unet.py, from the shipped UNet"}})
    print(json.dumps({"checkpoint": str(path), "steps": stage.step, "minutes": round(stage.seconds / 60, 1),
                      "final_loss": train.final_loss(stage.losses, 100)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
