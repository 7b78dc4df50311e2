"""The web app: `train_free_edit.py app [--weights ...] [--host 127.0.0.1] [--port 7860]` (Gradio, `pip install -e
".[app]"`; nothing else in the package imports this module).

One page does what the authors' demo does and more: an image (uploaded, a shipped example, or generated from a
prompt and seed), its caption (BLIP, or typed), source and target words (several targets at once; a cached
direction from the dropdown with its provenance), where the sentences come from (templates, a language model,
pasted sentences, an uploaded mean embedding `.pt`, or the world's own sentences on the baby model), every
EditConfig field as a control (as the command line makes one flag of each), then input | reconstruction |
edits, the source word's cross-attention map with a slider over the steps, the reconstruction error, and
downloads (edit PNGs, the settings JSON, the inversion file). The inversion of the current image is kept
(keyed by the image's bytes, the caption, the model and the settings that change it), so a second edit of the
same image with another target, lambda_xa or multiplier only re-runs the edit. Requests are queued, one edit
at a time: one model in memory. Bad input gets a message in the page; files are written only to a temporary
folder the app removes when it stops.
"""
import argparse
import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
import typing
from pathlib import Path

import gradio as gr
import torch

from ..config import EditConfig
from ..finite import NonFiniteError
from ..pipeline import edit_image
from .arguments import DTYPES, field_comments
from .heatmap import WordAttention, word_token_indices
from .image import ImageError, geometry_time_ids, load_image, save_png, tensor_to_pil
from .inversion_file import Inversion

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# What the inversion depends on besides the image, the caption and the model (editing.py reads the rest).
INVERSION_FIELDS = ("setting", "num_steps", "lambda_ac", "lambda_kl", "num_reg_steps", "num_ac_rolls", "pair_shifts",
                    "posterior", "inversion_method", "inversion_iters", "inversion_average", "pyramid_rescale", "seed")
SLIDERS = {"num_steps": (1, 100, 1), "lambda_xa": (0.0, 1.0, 0.01), "guidance_scale": (1.0, 15.0, 0.5),
           "edit_multiplier": (0.0, 3.0, 0.1)}
SENTENCE_SOURCES = ["templates", "language model", "pasted sentences", "mean embedding (.pt)"]
MAX_UPLOAD_BYTES = 50 * 2**20


def examples() -> dict[str, tuple[Path, str]]:
    """name -> (image, caption) of the shipped examples: the world's scenes (captions from their truth) and cat.png."""
    found = {}
    for image in sorted((EXAMPLES / "world").glob("*.png")):
        truth = image.with_suffix(".json")
        if truth.is_file():
            found[f"world: {image.stem}"] = (image, json.loads(truth.read_text())["caption"])
    if (EXAMPLES / "cat.png").is_file():
        found["cat.png"] = (EXAMPLES / "cat.png", "")
    return found


class Session:
    """The model, its inversion cache and the app's temporary folder, shared by the queued requests."""

    def __init__(self, sd, size: int, cache_dir: Path, world: bool):
        self.sd, self.size, self.world = sd, size, world
        self.tmp = Path(tempfile.mkdtemp(prefix="pix2pix-zero-app-"))
        self.cache_dir = cache_dir
        self.inversions: dict[str, tuple] = {}  # key -> (x0, x_inv, x_path, decoded input), newest last

    def inversion_key(self, image_bytes: bytes, caption: str, config: EditConfig) -> str:
        settings = {name: getattr(config, name) for name in INVERSION_FIELDS}
        text = json.dumps([self.sd.identity, caption, settings], sort_keys=True)
        return hashlib.sha256(image_bytes + text.encode()).hexdigest()

    def remember(self, key: str, value: tuple) -> None:
        self.inversions[key] = value
        while len(self.inversions) > 8:  # a few images' worth; the oldest goes first
            self.inversions.pop(next(iter(self.inversions)))


def config_controls() -> dict[str, gr.components.Component]:
    """One control per EditConfig field, its type, choices and help from the field (as tools.arguments does)."""
    comments, controls = field_comments(EditConfig), {}
    for f in dataclasses.fields(EditConfig):
        label, info = f.name, comments.get(f.name, "")
        if typing.get_origin(f.type) is typing.Literal:
            choices = [c for c in typing.get_args(f.type) if c is not None]
            default = f.default if f.default is not None else "(the setting's)"
            if f.default is None:
                choices = ["(the setting's)", *choices]
            controls[f.name] = gr.Dropdown(choices, value=default, label=label, info=info)
        elif f.type is bool:
            controls[f.name] = gr.Checkbox(value=f.default, label=label, info=info)
        elif f.name in SLIDERS:
            low, high, step = SLIDERS[f.name]
            controls[f.name] = gr.Slider(low, high, value=f.default, step=step, label=label, info=info)
        else:
            controls[f.name] = gr.Number(value=f.default, precision=0 if f.type is int else None, label=label,
                                         info=info)
    return controls


def make_config(values: dict) -> EditConfig:
    """EditConfig from the controls' values; ValueError (shown in the page) for a bad one."""
    kwargs = {}
    for f in dataclasses.fields(EditConfig):
        value = values[f.name]
        if value == "(the setting's)":
            value = None
        elif f.type is int:
            value = int(value)
        elif f.type is float:
            value = float(value)
        kwargs[f.name] = value
    return EditConfig(**kwargs)


def read_upload(path: str, size: int) -> tuple[torch.Tensor, bytes, dict]:
    """An uploaded file -> ((1, 3, H, W) in [-1, 1], its bytes, its geometry); ImageError for anything else."""
    path = Path(path)
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise ImageError(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB, more than the app's "
                         f"{MAX_UPLOAD_BYTES // 2**20} MiB limit")
    image, geometry = load_image(path, size)
    return image, path.read_bytes(), geometry.to_dict()


def directions_for(session: Session, source: str, targets: list[str], how: str, pasted: str, upload,
                   cached: str | None) -> tuple[list[torch.Tensor], str]:
    """delta_c per target and a line saying where it came from."""
    from ..directions import edit_direction, template_sentences
    from .sentences import (SentenceOptions, import_mean_embedding, read_direction, word_direction)
    sd, shape = session.sd, session.sd.conditioning_shape
    if cached:
        path = Path(cached.split(" | ")[0])
        return [read_direction(path, shape)] * len(targets), f"cached direction {path.name}"
    if session.world and how == "templates":
        from ..world import scenes
        return [edit_direction(sd, scenes.shape_sentences(source), scenes.shape_sentences(t)) for t in targets], \
            "the world's own sentences"
    if how == "templates":
        return [edit_direction(sd, template_sentences(source), template_sentences(t)) for t in targets], \
            "built-in templates"
    if how == "pasted sentences":
        blocks = [b for b in pasted.split("\n\n") if b.strip()]
        if len(blocks) != len(targets) + 1:
            raise ValueError(f"paste {len(targets) + 1} blocks of sentences separated by an empty line: the "
                             f"source's, then one per target ({', '.join(targets)}); found {len(blocks)}")
        lines = [[s.strip() for s in b.splitlines() if s.strip()] for b in blocks]
        return [edit_direction(sd, lines[0], lines[i + 1]) for i in range(len(targets))], "pasted sentences"
    if how == "mean embedding (.pt)":
        if upload is None:
            raise ValueError("upload the target's mean embedding (.pt, (1, 77, D)) for 'mean embedding (.pt)'")
        target_mean = import_mean_embedding(upload, shape)
        from ..directions import mean_embedding
        return [target_mean.to(sd.text_encoder.device) - mean_embedding(sd, template_sentences(source))] * \
            len(targets), f"uploaded mean embedding {Path(upload).name} minus the source's templates"
    options = SentenceOptions("lm", None, 100, 0, "weights", str(sd.text_encoder.device), torch.float32, False)
    return [word_direction(sd, source, t, None, None, session.cache_dir, options).delta_c for t in targets], \
        "a language model's sentences"


def cached_choices(session: Session) -> list[str]:
    from .sentences import cached_directions
    return [f"{path} | {meta.get('source')} -> {meta.get('target')}, {meta.get('source_origin', '?')}"
            for path, meta in cached_directions(session.cache_dir) if "source" in meta]


def build(session: Session) -> gr.Blocks:
    found = examples()
    with gr.Blocks(title="pix2pix-zero") as demo:
        gr.Markdown("# pix2pix-zero\nZero-shot image-to-image translation (Parmar et al., arXiv:2302.03027) on "
                    f"`{Path(session.sd.source).name}`. Pick or upload an image, name the word to change and "
                    "what to change it into, and edit.")
        heat_maps = gr.State([])
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="image (PNG, JPEG, WebP, ...)", type="filepath")
                example = gr.Dropdown(["", *found], value="", label="or a shipped example")
                with gr.Accordion("or generate one from a prompt", open=False):
                    synth_prompt = gr.Textbox(label="prompt (used when no image is given)")
                caption = gr.Textbox(label="caption c (what the image shows; BLIP writes it if empty)")
                with gr.Row():
                    source = gr.Textbox(label="source word", value="circle" if session.world else "cat")
                    targets = gr.Textbox(label="target words (comma-separated)",
                                         value="square" if session.world else "dog")
                cached = gr.Dropdown(["", *cached_choices(session)], value="", label="or a cached direction "
                                     "(file | provenance)")
                how = gr.Radio(SENTENCE_SOURCES, value="templates", label="sentences for delta_c"
                               + (" (templates: the world's own sentences)" if session.world else ""))
                pasted = gr.Textbox(lines=4, label="pasted sentences: the source's, an empty line, each target's")
                embedding = gr.File(label="target mean embedding (.pt)", type="filepath")
                with gr.Accordion("method settings (EditConfig)", open=False):
                    controls = config_controls()
                with gr.Row():
                    run = gr.Button("Edit", variant="primary")
                    stop = gr.Button("Cancel")
            with gr.Column():
                gallery = gr.Gallery(label="input | reconstruction | edits", columns=4, height="auto",
                                     format="png")  # lossless: what is shown is what was computed
                status = gr.Markdown()
                heat = gr.Image(label="cross-attention of the source word (reference trajectory)", type="pil",
                                format="png")
                step = gr.Slider(0, 1, value=0, step=1, label="step")
                files = gr.File(label="downloads", file_count="multiple")

        def pick_example(name):
            return found[name][1] if name in found else gr.update()
        example.change(pick_example, example, caption)

        def edit(upload_path, example_name, prompt, caption_text, source_word, target_text, cached_choice, how_,
                 pasted_text, embedding_path, *values, progress=gr.Progress(track_tqdm=True)):
            try:
                return run_edit(session, upload_path, found.get(example_name), prompt, caption_text, source_word,
                                target_text, cached_choice, how_, pasted_text, embedding_path,
                                dict(zip(controls, values)), progress)
            except torch.OutOfMemoryError:
                raise gr.Error("out of memory: try fewer steps, fewer targets or a smaller image") from None
            except (ValueError, OSError, NonFiniteError) as e:
                raise gr.Error(str(e)) from None

        event = run.click(edit, [upload, example, synth_prompt, caption, source, targets, cached, how, pasted,
                                 embedding, *controls.values()], [gallery, status, heat_maps, step, heat, files],
                          api_name="edit")
        stop.click(None, None, None, cancels=[event])
        step.change(lambda maps, i: maps[int(i)] if maps else None, [heat_maps, step], heat)
    return demo


def run_edit(session: Session, upload_path, example, prompt, caption, source, target_text, cached, how, pasted,
             embedding, values, progress):
    sd, started = session.sd, time.perf_counter()
    config = make_config(values)
    source = source.strip()
    targets = [t.strip() for t in target_text.split(",") if t.strip()]
    if not source or not targets:
        raise ValueError("name the source word and at least one target word")
    image = image_bytes = geometry = None
    if upload_path:
        image, image_bytes, geometry = read_upload(upload_path, session.size)
    elif example is not None:
        image, image_bytes, geometry = read_upload(str(example[0]), session.size)
    elif not (prompt or "").strip():
        raise ValueError("upload an image, pick an example, or give a prompt to generate one")
    caption = (caption or "").strip() or (prompt or "").strip()
    if image is not None and not caption:
        progress(0, desc="captioning")
        caption = blip_caption(image)
    progress(0, desc="directions")
    directions, origin = directions_for(session, source, targets, how, pasted, embedding, cached or None)
    maps_per_step = []
    tokens = word_token_indices(sd.tokenizer, caption, source)
    H, W = (image.shape[-2:] if image is not None else (session.size, session.size))

    def record(t, maps):
        if tokens:
            one = WordAttention(tokens, (H // 8, W // 8))
            one(t, maps)
            maps_per_step.append(one)

    generator = torch.Generator().manual_seed(config.seed)
    inverted = x_path = None
    key = session.inversion_key(image_bytes, caption, config) if image is not None else None
    reused = key in session.inversions
    if reused:
        x0, x_inv, x_path, decoded = session.inversions[key]
        inverted = (x0, x_inv)
    progress(0, desc="editing" if reused or image is None else "inversion, then editing")
    result = edit_image(sd, None if reused else image, caption, source, targets, config, generator,
                        directions=directions, inverted=inverted, x_path=x_path,
                        size=None if image is not None else (H, W), on_reference=record, progress=True,
                        time_ids=geometry_time_ids(geometry) if geometry and sd.family == "sdxl" else None)
    if image is not None and not reused:
        session.remember(key, (result.x0, result.x_inv, result.x_path, result.image))
    seconds = time.perf_counter() - started
    shown = image if image is not None else result.image
    panels = [(tensor_to_pil(shown), "input"), (tensor_to_pil(result.reconstruction), "reconstruction")]
    panels += [(tensor_to_pil(e), f"{source} -> {t}") for t, e in zip(targets, result.edits)]
    out = Path(tempfile.mkdtemp(dir=session.tmp))
    written = [save_png(im, out / f"{name.replace(' -> ', '2')}.png") for im, name in panels[2:]]
    error = result.reconstruction_error
    if error and reused:  # edit_image compared with D(x0), having no image: compare with the input itself
        from ..pipeline import psnr
        error = error | {"psnr_input_db": psnr(image, result.reconstruction)}
    settings = result.settings | {"direction_origin": origin, "geometry": geometry, "reconstruction_error": error,
                                  "seconds": round(seconds, 3), "inversion_reused": reused}
    (out / "settings.json").write_text(json.dumps(settings, indent=2))
    written.append(out / "settings.json")
    if result.x0 is not None:
        written.append(Inversion(result.x_inv, result.x0, caption, sd.identity, settings["config"], result.x_path)
                       .save(out / "inversion.safetensors"))
    heat_maps = [m.overlay(shown) for m in maps_per_step]
    lines = [f"caption: *{caption}*; delta_c from {origin}",
             f"{'edit only (inversion reused)' if reused else 'inversion + edit'}: {seconds:.1f} s"]
    if error:
        lines.append(f"reconstruction PSNR {error['psnr_input_db']:.2f} dB (latent RMS {error['latent_rms']:.4f})")
    if not tokens:
        lines.append(f"'{source}' is not a word of the caption: no attention map")
    last = max(0, len(heat_maps) - 1)
    return (panels, "\n\n".join(lines), heat_maps, gr.update(maximum=last, value=last),
            heat_maps[-1] if heat_maps else None, [str(p) for p in written])


def blip_caption(image: torch.Tensor) -> str:
    from .captions import caption_images, load_captioner
    try:
        captioner = load_captioner("base")
    except (OSError, ValueError, ConnectionError) as e:
        raise ValueError(f"no caption and no BLIP to write one ({e}); type the caption") from None
    return caption_images(captioner, [tensor_to_pil(image)])[0]


def main_app(argv: list[str]) -> int:
    from .arguments import HelpFormatter, native_size
    p = argparse.ArgumentParser(prog="train_free_edit.py app", formatter_class=HelpFormatter,
                                description="The web app (Gradio). It opens on the world's baby SD when no "
                                            "--weights is given, so it works offline at once.")
    p.add_argument("--weights", help="a checkpoint the command line accepts (default: the world's baby SD)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--size", type=int, default=None,
                   help="image side (default: 128 for the baby SD, 1024 for SDXL, 768 for SD 2.x v-models, else 512)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    p.add_argument("--cache-dir", default="outputs/.cache", help="sentence and direction cache (read and written)")
    a = p.parse_args(argv)
    from ..loading.load import load_sd
    from ..world import CHECKPOINT
    weights = Path(a.weights) if a.weights else CHECKPOINT
    world = weights.resolve() == CHECKPOINT.resolve()
    sd = load_sd(weights, a.device, DTYPES[a.dtype])
    session = Session(sd, a.size or (128 if world else native_size(sd.family, sd.prediction_type)),
                      Path(a.cache_dir), world)
    demo = build(session)
    demo.queue(default_concurrency_limit=1)  # one model in memory: one edit at a time
    try:
        demo.launch(server_name=a.host, server_port=a.port, allowed_paths=[str(session.tmp)])
    finally:
        shutil.rmtree(session.tmp, ignore_errors=True)
    return 0
