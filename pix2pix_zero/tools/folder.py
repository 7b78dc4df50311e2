"""Editing many inputs: a run that never stops at a bad one, resumes, shards, and ends with a summary.

Order of work: stale temporaries of dead writers are removed; every image is read once (a bad file fails
here, named, and the rest go on); BLIP captions the good ones and is released; a language model writes the
missing sentence files and is released; then Stable Diffusion is loaded and the inputs are edited one by
one (batch.run), each failure (NaN, out of memory, ...) recorded and the next input taken. A summary JSON
lists every input with its status: done, skipped (already done with the same settings) or failed and why.

Exit status of the command (`exit_status`): 0 every input done or skipped, 1 some inputs failed, 2 a usage or
model error (bad arguments, a checkpoint that does not load, a saved inversion that does not fit the run, an
output folder that cannot be written: raised, not recorded). Inputs are split between processes by `shard`:
contiguous chunks of the sorted list, the first len % n shards one longer (as accelerate's split_between_processes).
"""
import dataclasses
import gc
import hashlib
import json
import os
import secrets
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import EditConfig
from ..models.sd import StableDiffusion
from .batch import Job, run
from .files import OutputError, atomic_path, remove_stale_temporaries
from .image import ImageError, plan_geometry, read_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
MAX_STEM_BYTES = 100  # leaves room for "-SOURCE2TARGET-side_by_side.png" under the usual 255-byte name limit
EXIT_DONE, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def input_images(path: str | os.PathLike, log: Callable[[str], None] = print) -> list[Path]:
    """An image file, or every image file directly inside a folder, sorted by name (hidden files and names
    without an image suffix are not inputs, and each of the latter gets a line; a file with an image suffix that
    is no image fails when read)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        for p in files:
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                log(f"skipped: {p}: not an image file name ({', '.join(sorted(IMAGE_SUFFIXES))})")
        if not images:
            raise FileNotFoundError(f"{path}: no images in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return images
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file or folder")
    return [path]


def sanitized(name: str) -> str:
    """A file-name stem safe on every file system: letters, digits, '.', '-', '_' kept, anything else '_';
    no leading dots or dashes; at most MAX_STEM_BYTES of UTF-8."""
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name).lstrip(".-")
    stem = stem.encode()[:MAX_STEM_BYTES].decode(errors="ignore")
    return stem or "image"


def output_stems(images: list[Path]) -> dict[Path, str]:
    """The output stem of each image: its sanitised name without the extension; where two images share one
    (cat.png and cat.jpg, or names equal but for case or for characters sanitised away), the extension is
    joined by '_' (cat_png, cat_jpg), and if that still collides, 8 hex digits of the name's SHA-256 too."""
    def collisions(stems: dict[Path, str]) -> set[Path]:
        count = Counter(s.casefold() for s in stems.values())
        return {p for p, s in stems.items() if count[s.casefold()] > 1}

    stems = {p: sanitized(p.stem) for p in images}
    for p in collisions(stems):
        stems[p] = sanitized(f"{p.stem}_{p.suffix[1:]}")
    for p in collisions(stems):
        stems[p] = f"{stems[p]}-{hashlib.sha256(p.name.encode()).hexdigest()[:8]}"
    return stems


def shard(items: list, index: int, count: int) -> list:
    """Shard `index` of `count` (0-based): a contiguous chunk, the first len % count shards one item longer."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n (e.g. --shard 0/2 and --shard 1/2)")
    size, extra = divmod(len(items), count)
    start = index * size + min(index, extra)
    return items[start:start + size + (index < extra)]


@dataclass
class Outcome:
    input: str
    stem: str
    status: str  # "done", "skipped" (already done with the same settings) or "failed"
    reason: str | None = None
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0


def failure_reason(e: BaseException) -> str:
    if isinstance(e, torch.OutOfMemoryError):
        return (f"out of memory ({str(e).splitlines()[0]}); try a smaller --size, --dtype bf16, or fewer "
                "--target words at once")
    if isinstance(e, (ValueError, OSError)):  # ours: the message names the file and the problem
        return str(e)
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(e).__name__}{where}: {e}"


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def usable_images(images: list[Path | None], size: int = 512, pad: bool = False) -> tuple[list, dict[Path, str]]:
    """(inputs that read and fit the size policy, {input: why not} for the others); None passes through."""
    good, bad = [], {}
    for image in images:
        try:
            if image is not None:
                plan_geometry(*read_image(image).size, size, pad, str(image))
            good.append(image)
        except (ImageError, OSError) as e:
            bad[image] = str(e)
    return good, bad


def edit_inputs(images: list[Path | None], stems: dict, job: Job, config: EditConfig, out_dir: str | os.PathLike,
                load_model: Callable[[], StableDiffusion], inversion_path: str | None = None,
                captioner: dict | None = None, log: Callable[[str], None] = print,
                log_error: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
                progress: bool = True) -> list[Outcome]:
    """Edit each input (image paths; [None] for a saved inversion or a synthetic image) as the module
    docstring says; return one Outcome per input. Errors that concern no single image propagate: the model,
    the arguments, a saved inversion that does not fit the run, a full disk. captioner: caption_files'
    arguments (spec, weights_dir, device, dtype) when the captions come from BLIP (job.prompt None)."""
    out_dir = Path(out_dir)
    for p in remove_stale_temporaries(out_dir):
        log(f"removed {p}, left by an interrupted run")
    outcomes: dict = {}
    good, bad = usable_images(images, job.size, job.pad)
    for image, reason in bad.items():
        outcomes[image] = Outcome(str(image), stems[image], "failed", reason)
        log_error(f"error: {reason}")

    captions = {image: job.prompt for image in good}
    caption_from = job.caption_from
    if captioner is not None and good:
        from .captions import caption_files
        captions, caption_from = caption_files(good, stems, out_dir, progress=progress, **captioner)
        for image in good:
            log(f"{image}: caption \"{captions[image]}\" ({caption_from})")

    if job.sentence_options is not None and job.sentence_options.sentences == "lm":
        from .sentences import generate_missing_sentences
        words = ([job.source] if job.source_sentences is None else []) + \
            [t for t, f in zip(job.targets, job.target_sentences or [None] * len(job.targets)) if f is None]
        if words:
            generate_missing_sentences(words, job.sentence_options, job.cache_dir)

    todo = [image for image in good if captions[image] or image is None]
    for image in good:
        if image is not None and not captions[image]:
            outcomes[image] = Outcome(str(image), stems[image], "failed", f"{image}: {caption_from} wrote an "
                                      "empty caption; give one with --prompt")
            log_error(f"error: {outcomes[image].reason}")
    sd = load_model() if todo else None
    for image in todo:
        name = str(image or inversion_path or "synthetic")
        stem = stems.get(image) or (Path(inversion_path).stem.removesuffix("-inversion") if inversion_path else
                                    "synthetic")
        start = time.perf_counter()
        try:
            written = run(sd, dataclasses.replace(job, prompt=captions[image], caption_from=caption_from), config,
                          out_dir, image_path=image, inversion_path=inversion_path, stem=stems.get(image),
                          progress=progress)
            outcome = Outcome(name, stem, "done" if written else "skipped", outputs=[str(w) for w in written])
            log(f"{name}: " + (", ".join(outcome.outputs) if written else "already done (same settings)"))
        except OutputError:  # a full disk or read-only folder: every later write would fail too
            raise
        except Exception as e:  # one image's failure (NaN, out of memory, a bad file) never stops the others
            if image is None:  # a saved inversion or a synthetic image: the run's only input
                raise
            outcome = Outcome(name, stem, "failed", failure_reason(e))
            log_error(f"error: {name}: {outcome.reason.removeprefix(name + ': ')}")  # the file named once
            release_memory()
        outcome.seconds = round(time.perf_counter() - start, 3)
        outcomes[image] = outcome
    return [outcomes[image] for image in images]


def summary_record(outcomes: list[Outcome], shard_of: tuple[int, int] = (0, 1), seconds: float = 0.0) -> dict:
    counts = Counter(o.status for o in outcomes)
    return {"inputs": [dataclasses.asdict(o) for o in outcomes],
            "counts": {s: counts.get(s, 0) for s in ("done", "skipped", "failed")},
            "shards": [list(shard_of)], "seconds": round(seconds, 3),
            "exit_status": EXIT_SOME_FAILED if counts.get("failed") else EXIT_DONE}


def merge_summaries(records: list[dict]) -> dict:
    """One summary of several shards' (inputs in the order of the shards)."""
    inputs = [entry for r in records for entry in r["inputs"]]
    counts = Counter(entry["status"] for entry in inputs)
    return {"inputs": inputs, "counts": {s: counts.get(s, 0) for s in ("done", "skipped", "failed")},
            "shards": sorted(s for r in records for s in r["shards"]),
            "seconds": max((r["seconds"] for r in records), default=0.0),
            "exit_status": max((r["exit_status"] for r in records), default=EXIT_DONE)}


def summary_path(out_dir: str | os.PathLike, shard_of: tuple[int, int] = (0, 1)) -> Path:
    """summary.json for a whole run; summary-shard-I-of-N.json for one shard of it."""
    i, n = shard_of
    return Path(out_dir) / ("summary.json" if n == 1 else f"summary-shard-{i}-of-{n}.json")


def write_summary(record: dict, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return path


def merge_shard_files(out_dir: str | os.PathLike, n: int) -> Path | None:
    """With every shard's summary present in `out_dir` (the last shard to finish sees them all), write the
    merged summary.json; None while some are missing."""
    paths = [summary_path(out_dir, (i, n)) for i in range(n)]
    try:
        records = [json.loads(p.read_text()) for p in paths]
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return write_summary(merge_summaries(records), summary_path(out_dir))


def report(record: dict, log: Callable[[str], None] = print) -> None:
    """The end of a run: counts, then each failure with its reason."""
    c = record["counts"]
    log(f"{c['done']} done, {c['skipped']} already done, {c['failed']} failed")
    for entry in record["inputs"]:
        if entry["status"] == "failed":
            reason = entry["reason"] or ""  # our messages begin with the file already; say it once
            log(f"  failed: {entry['input']}: {reason.removeprefix(entry['input'] + ': ')}")


def check_output_folder(out_dir: str | os.PathLike, input_path: str | os.PathLike | None) -> None:
    """Refuse, before any work, an output folder that is the input folder (the outputs would become inputs of
    the next run) or that cannot be written (a test file is written and removed)."""
    out_dir = Path(out_dir)
    if input_path is not None and Path(input_path).is_dir() and Path(input_path).resolve() == out_dir.resolve():
        raise ValueError(f"--out {out_dir} is the input folder: the outputs would become inputs of the next run; "
                         "choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder: give a folder (it is made if missing)")
    if not out_dir.exists():  # made by the first output written, so a run that fails early leaves no empty folder
        parent = next(p for p in out_dir.absolute().parents if p.exists())
        if not parent.is_dir():
            raise ValueError(f"--out {out_dir}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"--out {out_dir}: cannot create it, {parent} is not writable")
        return
    # A name unique to this process: torchrun ranks probe the same folder at the same moment.
    probe = out_dir / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
    with atomic_path(probe) as tmp:  # OutputError naming the folder if it cannot be written
        tmp.write_bytes(b"")
    probe.unlink()


def finish_summary(record: dict, out_dir: str | os.PathLike, rank) -> tuple[dict, Path]:
    """Write this process's summary; under torchrun rank 0 gathers every rank's and writes the merged one, and a
    --shard run merges the shard files present. Returns the record to report and the file that holds it."""
    from . import distributed
    written = write_summary(record, summary_path(out_dir, (rank.index, rank.count)))
    if rank.torchrun:
        records = distributed.gather_json(record, rank)
        if records is not None:
            record = merge_summaries(records)
            written = write_summary(record, summary_path(out_dir))
        distributed.finish()
    elif rank.count > 1:
        written = merge_shard_files(out_dir, rank.count) or written
    return record, written
