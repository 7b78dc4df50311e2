"""Pictures that teach the method on one world scene, for docs/world.md:

  python -m pix2pix_zero.world.figures [--out docs/world] [--task circle2square] [--scene 0] [--steps 50]

attention.png: the shape word's cross-attention (summed over layers and heads) along the reference and the edit
trajectories, side by side at the same steps; pred_x0.png: the predicted x0 of both trajectories, decoded;
pyramid.png: the noise pyramid's autocorrelation of one inversion step's eps before and after the regularizer.
The loop is editing.edit itself, with step functions that also record (one extra recording UNet call a step).
"""
import argparse
import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from .. import editing, inversion, options
from ..all_shifts import pair_loss_exact
from ..config import EditConfig
from ..models.attention import record_cross_attention
from ..models.ddim import alphas_cumprod, inversion_schedule, x0_from_output
from ..noise_reg import kl_loss, noise_pyramid
from ..tools.files import atomic_path
from ..tools.heatmap import WordAttention, word_token_indices
from ..tools.image import tensor_to_pil
from . import CHECKPOINT, bench, scenes

CELL = 96


def grid(rows: list[tuple[str, list[Image.Image]]], columns: list[str], title: str) -> Image.Image:
    """Labelled rows of CELL x CELL pictures under column headings."""
    lines = title.split("; ")
    left, top = 80, 20 + 14 * len(lines)
    width = max(left + CELL * len(columns), 8 + 6 * max(len(line) for line in lines))
    out = Image.new("RGB", (width, top + (CELL + 4) * len(rows)), "white")
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((4, 2 + 14 * i), line, fill="black")
    for j, name in enumerate(columns):
        draw.text((left + j * CELL + 4, top - 16), name, fill="black")
    for i, (label, images) in enumerate(rows):
        draw.text((4, top + i * (CELL + 4) + CELL // 2 - 6), label, fill="black")
        for j, im in enumerate(images):
            out.paste(im.resize((CELL, CELL), Image.NEAREST), (left + j * CELL, top + i * (CELL + 4)))
    return out


def save(image: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


class Recorder:
    """Step functions for editing.edit that record, at chosen steps, the word's attention map and pred_x0."""

    def __init__(self, sd, tokens: list[int], keep: set[int], latent_hw):
        self.sd, self.tokens, self.keep, self.hw = sd, tokens, keep, latent_hw
        self.step = 0
        self.attention = {"reference": [], "edit": []}
        self.pred_x0 = {"reference": [], "edit": []}

    def record(self, side: str, x_t, t, alpha_bar_t, c, c_neg, config):
        with torch.no_grad(), record_cross_attention(self.sd.unet) as maps:
            out = editing.guided_output(self.sd, x_t, t, c, c_neg, config.guidance_scale)
        word = WordAttention(self.tokens, self.hw)
        word(t, {name: M[-1:] for name, M in maps.items()})
        self.attention[side].append((t, word))
        self.pred_x0[side].append((t, x0_from_output(out, x_t, alpha_bar_t, self.sd.prediction_type)))

    def reference_step(self, sd, x_t, t, alpha_bar_t, alpha_bar_prev, c, c_neg, config):
        if self.step in self.keep:
            self.record("reference", x_t, t, alpha_bar_t, c, c_neg, config)
        return editing.reference_step(sd, x_t, t, alpha_bar_t, alpha_bar_prev, c, c_neg, config)

    def edit_step(self, sd, x_t, t, alpha_bar_t, alpha_bar_prev, c_edit, c_neg, maps_ref, config):
        if self.step in self.keep:
            self.record("edit", x_t, t, alpha_bar_t, c_edit, c_neg, config)
        self.step += 1
        return editing.edit_step(sd, x_t, t, alpha_bar_t, alpha_bar_prev, c_edit, c_neg, maps_ref, config)


def autocorrelation_map(eta: torch.Tensor) -> torch.Tensor:
    """The circular 2-D autocorrelation of each channel of eta (C, H, W), averaged over channels, zero shift at
    the centre: (H, W). White noise shows a single bright centre pixel."""
    spectrum = torch.fft.fft2(eta.double())
    corr = torch.fft.ifft2(spectrum * spectrum.conj()).real / eta.shape[-1] / eta.shape[-2]
    return torch.fft.fftshift(corr.mean(0))


def pyramid_figure(sd, x0, c, config: EditConfig, generator: torch.Generator) -> tuple[Image.Image, dict]:
    """Invert to the middle step, then show eps's pyramid autocorrelations before and after regularize_eps."""
    schedule = inversion_schedule(config.num_steps, alphas_cumprod())
    regularize = options.regularizer(config, x0.device)
    x = x0
    middle = len(schedule) // 2
    with torch.no_grad():
        for j, (t, alpha_bar_t, alpha_bar_prev) in enumerate(schedule):
            eps = inversion.unet_eps(sd, x, t, c, alpha_bar_t, f"step {j}")
            if j == middle:
                break
            eps = regularize(eps.float(), generator)
            x = inversion.ddim_inverse_step(eps, x, alpha_bar_t, alpha_bar_prev)
    after = regularize(eps.float(), generator)
    rows, numbers = [], {"t": int(t)}
    for label, e in (("before", eps.float()), ("after", after)):
        cells = []
        for eta in noise_pyramid(e, config.pyramid_rescale):
            corr = autocorrelation_map(eta[0])
            corr = (corr / corr.abs().max()).clamp(-1, 1)  # the zero shift is 1
            rgb = torch.stack([corr.clamp(min=0), torch.zeros_like(corr), (-corr).clamp(min=0)])  # red +, blue -
            cells.append(tensor_to_pil(rgb[None].float() * 2 - 1))
        rows.append((label, cells))
        numbers[label] = {"L_pair": pair_loss_exact(e, config.pyramid_rescale).item(), "L_KL": kl_loss(e).item()}
    levels = [f"{eta.shape[-1]}x{eta.shape[-1]}" for eta in noise_pyramid(eps.float())]
    title = (f"eps autocorrelation at inversion step {middle + 1} (t={int(t)}); L_pair {numbers['before']['L_pair']:.3g}"
             f" -> {numbers['after']['L_pair']:.3g}, L_KL {numbers['before']['L_KL']:.3g} -> "
             f"{numbers['after']['L_KL']:.3g}")
    return grid(rows, levels, title), numbers


def make_figures(sd, scene: scenes.Scene, target: str, config: EditConfig, out: Path, columns: int = 8) -> dict:
    image = bench.to_model(scenes.render(scene)[0])
    caption = scenes.caption(scene)
    direction = bench.world_direction(sd, scene.shape, target)
    generator = torch.Generator().manual_seed(config.seed)
    x0 = inversion.encode_image(sd, image, "mean", generator)
    c, c_neg = sd.encode_text([caption]), sd.encode_text([caption])
    x_inv = inversion.invert(sd, x0, c, config, generator, progress=False)
    keep = {round(i * (config.num_steps - 1) / (columns - 1)) for i in range(columns)}
    tokens = word_token_indices(sd.tokenizer, caption, scene.shape)
    recorder = Recorder(sd, tokens, keep, tuple(x0.shape[-2:]))
    x_ref, (x_edit,) = editing.edit(sd, x_inv, c, [direction], c_neg, config, progress=False,
                                    reference_step=recorder.reference_step, edit_step=recorder.edit_step)
    headings = [f"t={t}" for t, _ in recorder.attention["reference"]]
    decoded = {side: [tensor_to_pil(editing.decode_latents(sd, x)) for _, x in recorder.pred_x0[side]]
               for side in ("reference", "edit")}
    attention_rows = [(side, [w.overlay(image) for _, w in recorder.attention[side]]) for side in ("reference", "edit")]
    paths = [save(grid(attention_rows, headings, f"cross-attention of '{scene.shape}' (all layers and heads), "
                                                 f"{scene.shape} -> {target}"), out / "attention.png"),
             save(grid([(side, decoded[side]) for side in decoded], headings,
                       f"predicted x0 along both trajectories: '{caption}' -> {target}"), out / "pred_x0.png")]
    pyramid, numbers = pyramid_figure(sd, x0, c, config, torch.Generator().manual_seed(config.seed))
    paths.append(save(pyramid, out / "pyramid.png"))
    final = [tensor_to_pil(x) for x in (image, editing.decode_latents(sd, x_ref), editing.decode_latents(sd, x_edit))]
    paths.append(save(grid([("result", final)], ["input", "reconstruction", "edit"], caption), out / "result.png"))
    record = {"scene": scene.to_dict(), "caption": caption, "target": target, "config": config.to_dict(),
              "regularizer": numbers, "files": [p.name for p in paths]}
    with atomic_path(out / "figures.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pix2pix_zero.world.figures", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/world")
    p.add_argument("--task", default="circle2square")
    p.add_argument("--scene", type=int, default=0)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--weights", default=str(CHECKPOINT))
    a = p.parse_args(argv)
    from ..loading.load import load_sd
    source, target = bench.parse_task(a.task)
    sd = load_sd(a.weights)
    record = make_figures(sd, bench.held_out_scene(source, a.scene), target, EditConfig(num_steps=a.steps),
                          Path(a.out))
    print(json.dumps(record["regularizer"]), "->", ", ".join(str(Path(a.out) / f) for f in record["files"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
