"""PIE-Bench (Ju et al., "PnP Inversion", ICLR 2024, arXiv:2310.01506) with pix2pix-zero: read the benchmark
as distributed, edit every item, write the edits where PIE-Bench's own evaluator reads them, and score them.

DATA/mapping_file.json maps a key to {image_path, original_prompt, editing_prompt (edited words in
[brackets]), blended_word ("SOURCE TARGET"), mask (RLE, masks.py), editing_type_id ("0".."9")}; images lie
under DATA/annotation_images/. Per item: caption = original_prompt without brackets; source and target
words from blended_word (direction "words" needs two different words: PIE-Bench's attribute, pose and style
items name one word twice, "bicycle bicycle", and fail with that reason); the direction from sentences about
the words (templates or a language model), or
with direction "prompt-pair" from the one prompt pair (delta_c = c(editing_prompt) - c(original_prompt)), as
PIE-Bench ran pix2pix-zero. Under OUT/:
  edits/CATEGORY_DIR/KEY-SOURCE2TARGET.png (+ .json, ...)   the edit command's outputs (resumable)
  output/METHOD/annotation_images/IMAGE_PATH                 the edit, where PnPInversion's evaluation/evaluate.py
                                                              looks for it (METHOD: ddim+pix2pix-zero, ...)
  pie-bench.csv                                              one row per item, every metric
"""
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..image import read_image, save_png
from .report import summaries

METHOD_NAMES = {"ddim": "ddim+pix2pix-zero", "direct": "directinversion+pix2pix-zero",
                "fixed-point": "fixed-point+pix2pix-zero"}  # the first two are PnPInversion's names


@dataclass
class Item:
    key: str
    image_path: str  # relative to DATA/annotation_images
    original_prompt: str
    editing_prompt: str
    blended_word: str
    mask: list[int]
    category: str

    @property
    def caption(self) -> str:
        return strip_brackets(self.original_prompt)

    @property
    def target_prompt(self) -> str:
        return strip_brackets(self.editing_prompt)

    def words(self) -> tuple[str, str] | None:
        """(source, target) from blended_word, or None when it is not two words."""
        parts = self.blended_word.split()
        return (parts[0], parts[1]) if len(parts) == 2 else None


def strip_brackets(prompt: str) -> str:
    """PIE-Bench marks the edited words "[like this]"; its scripts remove the brackets."""
    return prompt.replace("[", "").replace("]", "")


def read_mapping(data: str | os.PathLike) -> list[Item]:
    """Every item of DATA/mapping_file.json, in the file's order; errors name the file and the item."""
    path = Path(data) / "mapping_file.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; --data is the PIE-Bench folder holding mapping_file.json "
                                "and annotation_images/")
    try:
        mapping = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: expected an object mapping keys to items")
    items = []
    for key, entry in mapping.items():
        try:
            items.append(Item(str(key), entry["image_path"], entry["original_prompt"], entry["editing_prompt"],
                              entry.get("blended_word", ""), entry["mask"], str(entry["editing_type_id"])))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: item {key}: missing or malformed field {e}") from None
    return items


def parse_categories(spec: str) -> set[str]:
    """'0-9', '1,3', '0-2,8' -> the editing_type_id strings."""
    chosen = set()
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", part)
        if not m or (m[2] and int(m[2]) < int(m[1])):
            raise ValueError(f"--categories {spec!r}: give numbers and ranges such as 0-9 or 1,3,5-7")
        chosen |= {str(i) for i in range(int(m[1]), int(m[2] or m[1]) + 1)}
    return chosen


def select(items: list[Item], categories: set[str], limit: int | None) -> list[Item]:
    chosen = [item for item in items if item.category in categories]
    return chosen[:limit] if limit is not None else chosen


def method_name(inversion_method: str) -> str:
    return METHOD_NAMES[inversion_method]


def evaluator_root(out: str | os.PathLike, inversion_method: str) -> Path:
    return Path(out) / "output" / method_name(inversion_method)


def evaluator_path(out: str | os.PathLike, method: str, item: Item) -> Path:
    """Where PnPInversion's evaluation/evaluate.py reads this item's edit: output/METHOD/annotation_images/..."""
    return Path(out) / "output" / method / "annotation_images" / item.image_path


def export_for_evaluator(edit_png: Path, target: Path) -> Path:
    """Copy the edit to the evaluator's layout under the item's own file name. NOTE(official): PnPInversion saves
    a panel (prompts | input | reconstruction | edit) and its evaluator crops the last 512 x 512; we save the edit
    alone (square images are not cropped). A .jpg name gets JPEG at quality 95 (PIL's default, 75, which
    PnPInversion's scripts used, loses more); our own scores read the lossless PNG."""
    im = read_image(edit_png)
    if target.suffix.lower() in (".jpg", ".jpeg"):
        from ..files import atomic_path
        with atomic_path(target) as tmp:
            im.save(tmp, format="JPEG", quality=95)
        return target
    return save_png(im, target)


def category_tables(rows: list[dict], seed: int = 0) -> dict[str, dict]:
    """{"all": summaries, "0": summaries of category 0, ...} over the scored rows."""
    tables = {"all": summaries(rows, seed)}
    for category in sorted({r["category"] for r in rows}, key=int):
        tables[category] = summaries([r for r in rows if r["category"] == category], seed)
    return tables


def means_table(tables: dict[str, dict]) -> str:
    """Categories as rows, metrics' means as columns (n: items scored)."""
    metrics = list(tables["all"])
    header = ["category", "n"] + metrics
    lines = [header]
    for name, stats in tables.items():
        n = max((s.count for s in stats.values()), default=0)
        lines.append([name, str(n)] + [("nan" if math.isnan(stats[m].mean) else f"{stats[m].mean:.4g}")
                                       if m in stats else "" for m in metrics])
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in lines)


def item_words(item: Item, direction: str) -> tuple[str, str]:
    """The words naming the edit (and, for direction "words", describing it). With "prompt-pair" an item
    without two blended words is still edited, named original2edited."""
    words = item.words()
    if direction == "words" and words is None:
        raise ValueError(f"item {item.key}: blended_word {item.blended_word!r} is not two words (SOURCE TARGET); "
                         "edit such items with --direction prompt-pair")
    if direction == "words" and words[0] == words[1]:  # e.g. "bicycle bicycle" for "make the bicycle rusty"
        raise ValueError(f"item {item.key}: blended_word {item.blended_word!r} names one word twice (an attribute, "
                         "pose or style edit, not a word swap: its direction would be zero); edit such items with "
                         "--direction prompt-pair")
    return words or ("original", "edited")


def prompt_pair_files(item: Item, folder: Path) -> tuple[Path, Path]:
    """One-sentence files holding the item's two prompts: the prompt-pair direction as sentence files."""
    from ..files import atomic_path
    paths = folder / f"{item.key}-source.txt", folder / f"{item.key}-target.txt"
    for path, text in zip(paths, (item.caption, item.target_prompt)):
        with atomic_path(path) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    return paths


def edit_items(items: list[Item], data, out, make_job, config, load_model, direction: str = "words",
               progress: bool = True, log=print, log_error=print) -> dict[str, tuple[Path | None, str]]:
    """Edit each item (tools/batch.py run: already-done edits are skipped, so a run resumes) and copy it into
    the evaluator's layout. Returns key -> (the edit PNG, "") or (None, why it failed); one item's failure never
    stops the others. make_job(source, target, caption, source_file, target_file) -> a batch.Job."""
    from tqdm.auto import tqdm

    from ..batch import edit_name, run
    from ..files import OutputError
    from ..folder import failure_reason, release_memory, sanitized
    out, sd, results = Path(out), None, {}
    method = method_name(config.inversion_method)
    for item in tqdm(items, desc="PIE-Bench edits", unit="item", disable=not progress):
        stem = sanitized(item.key)
        try:
            source, target = item_words(item, direction)
            files = prompt_pair_files(item, out / ".cache" / "pie-bench-prompts") if direction == "prompt-pair" \
                else (None, None)
            folder = out / "edits" / Path(item.image_path).parent
            sd = sd or load_model()
            run(sd, make_job(source, target, item.caption, *files), config, folder,
                image_path=Path(data) / "annotation_images" / item.image_path, stem=stem, progress=False)
            edit = folder / f"{edit_name(stem, source, target)}.png"
            export_for_evaluator(edit, evaluator_path(out, method, item))
            results[item.key] = (edit, "")
        except OutputError:
            raise
        except Exception as e:  # noqa: BLE001 - one item's failure (a bad file, NaN, out of memory) is recorded
            results[item.key] = (None, failure_reason(e))
            log_error(f"error: item {item.key}: {results[item.key][1]}")
            release_memory()
    return results


def score_items(items: list[Item], data, results: dict, models, options_for, progress: bool = True) -> list[dict]:
    """One row per item: key, category, status, and every metric (PIE-Bench's `pie` modes) of its edit; clip_acc
    is NaN for items without two different blended words.
    options_for(source, target) -> an evaluate.Options."""
    from tqdm.auto import tqdm

    from .evaluate import input_as_edited, score_edit
    from .masks import decode_rle, fit_mask
    rows = []
    for item in tqdm(items, desc="PIE-Bench scores", unit="item", disable=not progress):
        edit_png, reason = results.get(item.key, (None, "not edited"))
        row = {"key": item.key, "category": item.category, "input": item.image_path,
               "target_prompt": item.target_prompt, "status": "failed" if edit_png is None else "done",
               "reason": reason}
        if edit_png is not None:
            try:
                options = options_for(*item_words(item, "prompt-pair"))
                edit = read_image(edit_png)
                settings_path = edit_png.with_suffix(".json")
                settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
                image_path = Path(data) / "annotation_images" / item.image_path
                original = read_image(image_path)
                image, geometry = input_as_edited(image_path, edit.size, settings)
                mask = fit_mask(decode_rle(item.mask, original.size[::-1], f"item {item.key}"), geometry, edit.size,
                                f"item {item.key}")
                row |= {"stem": item.key, "edit": str(edit_png)}
                row |= score_edit(models, image, edit, mask, options.source, options.target, item.target_prompt,
                                  options)
                words = item.words()
                if words is None or words[0] == words[1]:  # CLIP-Acc compares two different words
                    row["clip_acc"] = math.nan
            except (ValueError, OSError) as e:
                row |= {"status": "failed", "reason": str(e)}
        rows.append(row)
    return rows
