"""tools/evaluation/pie_bench.py and `train_free_edit.py pie-bench`: the benchmark read as distributed, the words
and prompts of an item, category selection, the evaluator's folder layout, and the whole harness on a 3-item
dataset in PIE-Bench's format built here (random images, hand-written RLE masks): a failing item reported
while the others go on, per-category scores, and a rerun that resumes."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix_zero.tools.evaluation import pie_bench  
from pix2pix_zero.tools.evaluation.report import read_csv  

FAST = ["--steps", "2", "--size", "64", "--quiet", "--reg-steps", "1", "--ac-rolls", "1"]
ITEMS = {
    "000000000000": {"image_path": "0_random_140/000000000000.jpg", "original_prompt": "a [cat] sitting on a sofa",
                     "editing_prompt": "a [dog] sitting on a sofa", "editing_instruction": "Make the cat a dog",
                     "editing_type_id": "0", "blended_word": "cat dog", "mask": [650, 20, 714, 20, 778, 20]},
    "111000000000": {"image_path": "1_change_object_80/1_artificial/111000000000.jpg",
                     "original_prompt": "a cat on the grass", "editing_prompt": "a [furry] cat on the grass",
                     "editing_instruction": "", "editing_type_id": "1", "blended_word": "cat cat",
                     "mask": [0, 64, 2000, 300]},
    "212000000000": {"image_path": "2_add_object_80/212000000000.jpg", "original_prompt": "a house",
                     "editing_prompt": "a house with a [tree]", "editing_instruction": "", "editing_type_id": "2",
                     "blended_word": "tree", "mask": []},
}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "PIE-Bench_v1"
    for i, (key, item) in enumerate(ITEMS.items()):
        path = root / "annotation_images" / item["image_path"]
        path.parent.mkdir(parents=True)
        if key == "212000000000":
            path.write_bytes(b"not a jpeg")  # this item's edit fails; the others go on
        else:
            Image.fromarray((np.random.default_rng(i).random((64, 64, 3)) * 255).astype(np.uint8)).save(path)
    (root / "mapping_file.json").write_text(json.dumps(ITEMS))
    return root


def test_items_words_prompts_and_categories(data):
    items = pie_bench.read_mapping(data)
    assert [i.key for i in items] == list(ITEMS) and items[0].category == "0"
    assert items[0].caption == "a cat sitting on a sofa" and items[0].target_prompt == "a dog sitting on a sofa"
    assert items[0].words() == ("cat", "dog") and items[2].words() is None
    assert pie_bench.item_words(items[2], "prompt-pair") == ("original", "edited")
    with pytest.raises(ValueError, match="212000000000.*prompt-pair"):
        pie_bench.item_words(items[2], "words")
    items[0].blended_word = "bicycle bicycle"  # PIE-Bench's attribute edits name the word twice
    with pytest.raises(ValueError, match="twice.*prompt-pair"):
        pie_bench.item_words(items[0], "words")
    assert pie_bench.item_words(items[0], "prompt-pair") == ("bicycle", "bicycle")
    assert pie_bench.parse_categories("0-2,5") == {"0", "1", "2", "5"}
    with pytest.raises(ValueError, match="--categories"):
        pie_bench.parse_categories("3-1")
    assert [i.key for i in pie_bench.select(items, {"1", "2"}, 1)] == ["111000000000"]
    assert pie_bench.evaluator_path("out", "ddim+pix2pix-zero", items[1]) == \
        Path("out/output/ddim+pix2pix-zero/annotation_images/1_change_object_80/1_artificial/111000000000.jpg")


def test_bad_mapping_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="mapping_file.json"):
        pie_bench.read_mapping(tmp_path)
    (tmp_path / "mapping_file.json").write_text(json.dumps({"7": {"image_path": "x.jpg"}}))
    with pytest.raises(ValueError, match="item 7"):
        pie_bench.read_mapping(tmp_path)



def test_out_equal_to_data_and_missing_models_are_refused_before_editing(data, tmp_path, single_file, command):
    code, _, err = command(["pie-bench", "--data", data, "--out", data, "--weights", single_file])
    assert code == 2 and "is the --data folder" in err
    code, _, err = command(["pie-bench", "--data", data, "--out", tmp_path / "o", "--weights", single_file,
                        "--clip", "./no-clip", "--weights-dir", tmp_path])
    assert code == 2 and "no-clip: not a model folder" in err and not (tmp_path / "o" / "edits").exists()


@pytest.mark.slow
def test_pie_bench_end_to_end_on_three_items_and_resume(data, tmp_path, single_file, tiny_clip, tiny_dino, command):
    out = tmp_path / "out"
    argv = ["pie-bench", "--data", data, "--out", out, "--direction", "prompt-pair", "--weights", single_file,
            "--clip", tiny_clip, "--dino", tiny_dino, *FAST]
    code, printed, err = command(argv)
    assert code == 1 and "item 212000000000" in err and "2 scored, 1 failed" in printed
    layout = out / "output" / "ddim+pix2pix-zero" / "annotation_images"
    for key in ("000000000000", "111000000000"):
        exported = layout / ITEMS[key]["image_path"]
        assert Image.open(exported).format == "JPEG" and Image.open(exported).size == (64, 64)
    edit = out / "edits" / "0_random_140" / "000000000000-cat2dog.png"
    assert edit.is_file()
    settings = json.loads(edit.with_suffix(".json").read_text())
    assert settings["caption"] == "a cat sitting on a sofa" and settings["source_sentences"].endswith("-source.txt")
    rows = read_csv(out / "pie-bench.csv")
    assert [(r["key"], r["category"], r["status"]) for r in rows] == [
        ("000000000000", "0", "done"), ("111000000000", "1", "done"), ("212000000000", "2", "failed")]
    for metric in ("structure_distance", "psnr_bg", "mse_bg", "ssim_bg", "clip_score", "clip_score_edited",
                   "clip_acc"):
        assert np.isfinite(rows[0][metric]) and np.isnan(rows[2][metric])
    assert np.isnan(rows[1]["clip_acc"]) and np.isfinite(rows[1]["clip_score"])  # "cat cat": no CLIP-Acc
    assert (out / "edits" / "1_change_object_80" / "1_artificial" / "111000000000-cat2cat.png").is_file()
    table = printed.split("rows: ")[1]
    assert any(line.split()[:2] == ["all", "2"] for line in table.splitlines())
    assert any(line.split()[:2] == ["1", "1"] for line in table.splitlines())

    before = edit.stat().st_mtime_ns
    code, printed, _ = command(argv)  # resumes: the done items are not edited again
    assert code == 1 and edit.stat().st_mtime_ns == before
    again = read_csv(out / "pie-bench.csv")
    assert [r["structure_distance"] for r in again[:2]] == [r["structure_distance"] for r in rows[:2]]
