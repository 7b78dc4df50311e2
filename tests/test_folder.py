"""Folder runs (pix2pix_zero.tools.folder): names, shards, a run that goes on past bad inputs, summaries."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pix2pix_zero.config import EditConfig
from pix2pix_zero.tools import folder
from pix2pix_zero.tools.batch import Job
from pix2pix_zero.tools.folder import (check_output_folder, edit_inputs, input_images, merge_shard_files,
                                       output_stems, sanitized, shard, summary_path, summary_record, write_summary)


def test_output_stems_keep_dots_and_separate_shared_stems():
    images = [Path("a/my.cat.png"), Path("a/dog.png"), Path("a/dog.jpg")]
    assert output_stems(images) == {images[0]: "my.cat", images[1]: "dog_png", images[2]: "dog_jpg"}


def test_names_are_sanitised_bounded_and_never_collide():
    assert sanitized(".hidden") == "hidden" and sanitized("../x") == "_x" and sanitized("a b?c") == "a_b_c"
    assert sanitized("café") == "café" and sanitized("...") == "image"
    long = sanitized("é" * 300)
    assert len(long.encode()) <= folder.MAX_STEM_BYTES and long == "é" * (folder.MAX_STEM_BYTES // 2)
    images = [Path(n) for n in ("a b.png", "a_b.png", "Cat.png", "cat.png", "x.png")]
    stems = output_stems(images)
    assert stems[Path("x.png")] == "x"
    assert len({s.casefold() for s in stems.values()}) == len(images)  # distinct even on case-blind file systems
    assert all(s.startswith(("a_b_png-", "Cat_png-", "cat_png-")) for p, s in stems.items() if p.name != "x.png")


@pytest.mark.parametrize("n,count,sizes", [(5, 2, [3, 2]), (7, 3, [3, 2, 2]), (2, 4, [1, 1, 0, 0]), (6, 1, [6])])
def test_shards_are_contiguous_disjoint_and_cover_the_inputs(n, count, sizes):
    items = list(range(n))
    parts = [shard(items, i, count) for i in range(count)]
    assert [len(p) for p in parts] == sizes and sum(parts, []) == items
    with pytest.raises(ValueError, match="0 <= i < n"):
        shard(items, count, count)


def test_inputs_of_a_folder_are_sorted_images_without_hidden_files(tmp_path):
    for name in ("b.png", "a.JPG", ".a.png.host-1-ff.partial", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in input_images(tmp_path)] == ["a.JPG", "b.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images in this folder"):
        input_images(tmp_path / "empty")


def test_output_folder_checks(tmp_path):
    with pytest.raises(ValueError, match="is the input folder.*choose another --out"):
        check_output_folder(tmp_path, tmp_path)
    check_output_folder(tmp_path / "new" / "out", tmp_path)  # can be made: not made yet (an early failure
    assert not (tmp_path / "new").exists()                      # must leave no empty folder behind)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="--out .*file is a file, not a folder"):
        check_output_folder(tmp_path / "file", None)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "file" / "out", None)


def test_output_folder_check_is_safe_when_writers_probe_at_once(tmp_path):
    """torchrun ranks check the same --out at the same moment: no probe may remove another's."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: check_output_folder(tmp_path, None), range(400)))
    assert list(tmp_path.iterdir()) == []


def write_photo(path: Path, seed: int = 0, size=(48, 64)) -> Path:
    Image.fromarray((np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)).save(path)
    return path


FAST = EditConfig(num_steps=2, num_reg_steps=1, num_ac_rolls=1)


def test_a_folder_run_goes_on_past_bad_files_and_failed_edits(tmp_path, sd, monkeypatch):
    """Bad files fail when read, an edit that fails (out of memory here) fails alone, the rest are edited;
    nothing partial is left, and a second run skips exactly what was done."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = [write_photo(inputs / f"{name}.png", i) for i, name in enumerate(("a", "c", "e"))]
    (inputs / "b.png").write_bytes(b"")  # empty
    (inputs / "d.png").write_text("a text file named .png")
    images = input_images(inputs)
    stems = output_stems(images)
    job = Job("cat", ["dog"], prompt="a photo of a cat", size=64)
    out = tmp_path / "out"
    real_run = folder.run

    def run_with_oom_on_c(sd, job, config, out_dir, image_path=None, **kw):
        if Path(image_path).stem == "c":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_run(sd, job, config, out_dir, image_path=image_path, **kw)

    monkeypatch.setattr(folder, "run", run_with_oom_on_c)
    lines = []
    outcomes = edit_inputs(images, stems, job, FAST, out, lambda: sd, log=lines.append, log_error=lines.append,
                           progress=False)
    status = {Path(o.input).name: (o.status, o.reason) for o in outcomes}
    assert [Path(o.input).name for o in outcomes] == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert status["a.png"][0] == status["e.png"][0] == "done"
    assert status["b.png"][0] == "failed" and "b.png: empty file" in status["b.png"][1]
    assert status["d.png"][0] == "failed" and "d.png: not an image" in status["d.png"][1]
    assert status["c.png"][0] == "failed" and "out of memory" in status["c.png"][1] and "--size" in status["c.png"][1]
    assert any(line.startswith("error:") and "b.png" in line for line in lines)
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
    assert not list(out.glob("c-*")) and (out / "a-cat2dog.png").is_file() and (out / "e-cat2dog.png").is_file()
    record = summary_record(outcomes)
    assert record["counts"] == {"done": 2, "skipped": 0, "failed": 3} and record["exit_status"] == 1

    monkeypatch.setattr(folder, "run", real_run)
    again = {Path(o.input).name: o.status for o in edit_inputs(images, stems, job, FAST, out, lambda: sd,
                                                                log=lines.append, log_error=lines.append,
                                                                progress=False)}
    assert again == {"a.png": "skipped", "b.png": "failed", "c.png": "done", "d.png": "failed", "e.png": "skipped"}
    assert all(p.is_file() for p in good)


def test_a_run_with_nothing_to_edit_never_loads_the_model(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"")

    def no_model():
        raise AssertionError("the model was loaded")

    outcomes = edit_inputs([tmp_path / "bad.png"], {tmp_path / "bad.png": "bad"}, Job("cat", ["dog"], prompt="x"),
                           FAST, tmp_path / "out", no_model, log=lambda _: None, log_error=lambda _: None)
    assert outcomes[0].status == "failed"


def test_shard_summaries_merge_when_the_last_shard_finishes(tmp_path):
    parts = [folder.Outcome("a.png", "a", "done"), folder.Outcome("b.png", "b", "failed", "b.png: empty file"),
             folder.Outcome("c.png", "c", "skipped")]
    write_summary(summary_record(parts[:2], (0, 2), 3.0), summary_path(tmp_path, (0, 2)))
    assert merge_shard_files(tmp_path, 2) is None  # shard 1 has not finished
    write_summary(summary_record(parts[2:], (1, 2), 5.0), summary_path(tmp_path, (1, 2)))
    merged = json.loads(merge_shard_files(tmp_path, 2).read_text())
    assert [e["input"] for e in merged["inputs"]] == ["a.png", "b.png", "c.png"]
    assert merged["counts"] == {"done": 1, "skipped": 1, "failed": 1} and merged["exit_status"] == 1
    assert merged["shards"] == [[0, 2], [1, 2]] and merged["seconds"] == 5.0
    assert summary_path(tmp_path).name == "summary.json"
