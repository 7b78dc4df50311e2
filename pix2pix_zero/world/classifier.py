"""The judge of an edit: a small CNN that names the shape of an object mask (circle, square, triangle, star).

It reads the object's silhouette, not the picture: in the world the background without the object is known,
so measure.py finds the edited object exactly where the edit differs from it, and the classifier names that
mask's shape. (A first version read the RGB image and reached 42% on held-out scenes after 600 steps: checks
and stripes are full of corners and edges; the silhouette carries the shape alone.) Trained on the masks of
the world's training scenes (seeds below scenes.HELD_OUT), with random erosion, dilation and speckle so a
decoded, slightly ragged object is judged as a crisp one would be; its accuracy is measured on held-out
scenes. Stored as safetensors with its class names in the metadata.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..tools.files import atomic_path
from . import scenes

FILE = "shape-classifier.safetensors"


class ShapeClassifier(nn.Module):
    """Masks (B, 1, H, W) in {0, 1} -> logits (B, len(SHAPES)); any H, W (global average pooling)."""

    def __init__(self, width: int = 16, classes: int = len(scenes.SHAPES)):
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        self.features = nn.Sequential(*[layer for i in range(4) for layer in (
            nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.GroupNorm(8, chans[i + 1]), nn.SiLU(),
            nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1), nn.SiLU())])
        self.head = nn.Linear(chans[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def augment(masks: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Erode or dilate by 0-2 px (one draw per batch), then flip 0-2% of the pixels."""
    r = int(torch.randint(-2, 3, (1,), generator=g))
    if r > 0:
        masks = F.max_pool2d(masks, 2 * r + 1, stride=1, padding=r)
    elif r < 0:
        masks = -F.max_pool2d(-masks, -2 * r + 1, stride=1, padding=-r)
    flip = torch.rand(masks.shape, generator=g) < 0.02 * float(torch.rand(1, generator=g))
    return torch.where(flip, 1 - masks, masks)


def rendered(seeds, size: int = scenes.SIZE, object_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (B, 1, size, size) in {0, 1} and shape labels (B,) of the scenes with these seeds."""
    chosen = [scenes.sample_scene(int(s), object_scale=object_scale) for s in seeds]
    masks = np.stack([scenes.coverage(scene, size) >= 0.5 for scene in chosen])
    labels = torch.tensor([scenes.SHAPES.index(scene.shape) for scene in chosen])
    return torch.from_numpy(masks)[:, None].float(), labels


def train(steps: int, seed: int, device, batch: int = 64, pool: int = 8000,
          object_scale: float = 1.0) -> tuple[ShapeClassifier, list[float], float]:
    """Train on the masks of `pool` training scenes (rendered once, objects at `object_scale`); return the model,
    its losses and its accuracy on 1000 held-out scenes."""
    torch.manual_seed(seed)
    model = ShapeClassifier().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    images, labels = rendered(range(pool), object_scale=object_scale)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        index = torch.randint(pool, (batch,), generator=g)
        x = augment(images[index], g).to(device)
        for group in optimizer.param_groups:
            group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        loss = F.cross_entropy(model(x), labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0:
            print(f"classifier step {step}/{steps}: loss {np.mean(losses[-100:]):.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    test_images, test_labels = rendered(range(scenes.HELD_OUT, scenes.HELD_OUT + 1000), object_scale=object_scale)
    accuracy = (classify(model, test_images) == test_labels).float().mean().item()
    return model, losses, accuracy


@torch.no_grad()
def classify(model: ShapeClassifier, masks: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """Shape indices into scenes.SHAPES, (B,), for object masks (B, 1, H, W) (bool or {0, 1})."""
    device = next(model.parameters()).device
    return torch.cat([model(masks[i:i + batch].to(device).float()).argmax(-1).cpu()
                      for i in range(0, len(masks), batch)])


def save(model: ShapeClassifier, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp,
                  metadata={"classes": json.dumps(list(scenes.SHAPES))})


def load(path: str | Path, device="cpu") -> ShapeClassifier:
    """The shipped classifier; a missing file names the command that trains it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shape classifier here; the repository ships one in weights/world/ "
                                "(`git checkout weights/world`), or train one with `python -m "
                                "pix2pix_zero.world.train --set stages=classifier --out DIR` and pass --classifier "
                                f"DIR/{FILE}")
    model = ShapeClassifier()
    model.load_state_dict(load_file(path), strict=True)
    return model.to(device).eval()
