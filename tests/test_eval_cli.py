"""`train_free_edit.py evaluate`: bad arguments refused before any model loads; inputs paired with edits by the
edit command's names; an edit identical to its input scores PSNR inf and structure distance 0; and, on a small
folder edited with the tiny SD, masks from saved attention, the CSV, the sheet and the side-by-side comparison
(against a folder of "edits" that are copies of the inputs). main() runs in this process (conftest's `command`)."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pix2pix_zero.tools.evaluation.evaluate import input_as_edited, pair_edits, target_prompt  
from pix2pix_zero.tools.evaluation.report import read_csv  

FAST = ["--steps", "2", "--size", "64", "--quiet", "--reg-steps", "1", "--ac-rolls", "1"]



@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["a.cat.png", "b.png"]):  # a dot in a stem must survive the pairing
        Image.fromarray((np.random.default_rng(i).random((48, 64, 3)) * 255).astype(np.uint8)).save(folder / name)
    return folder


def test_pairing_by_the_edit_commands_names_and_the_target_prompt(tmp_path, photos):
    edits = tmp_path / "edits"
    edits.mkdir()
    shutil.copy(photos / "a.cat.png", edits / "a.cat-cat2dog.png")
    pairs, missing = pair_edits(photos, edits, "cat", "dog")
    assert [(p.stem, p.edit.name) for p in pairs] == [("a.cat", "a.cat-cat2dog.png")] and missing == ["b"]
    assert target_prompt("A Cat on a catwalk", "cat", "dog") == "A dog on a catwalk"
    assert target_prompt(None, "cat", "dog") == "a photo of a dog"


def test_bad_arguments_exit_2_before_models_load(tmp_path, photos, command):
    base = ["evaluate", "--input", photos, "--edits", photos, "--source", "cat", "--target", "dog"]
    code, _, err = command(base + ["--masks", tmp_path, "--attention-masks"])
    assert code == 2 and "not both" in err
    code, _, err = command(base + ["--masks", tmp_path / "nope"])
    assert code == 2 and "nope: no such mask folder" in err
    code, _, err = command(["evaluate", "--input", photos, "--edits", tmp_path / "none", "--source", "cat",
                         "--target", "dog"])
    assert code == 2 and "no such folder of edits" in err
    code, _, err = command(base + ["--clip", "./no-clip-here", "--weights-dir", tmp_path])
    assert code == 2 and "no-clip-here: not a model folder" in err


@pytest.mark.slow
def test_an_edit_identical_to_its_input_scores_inf_and_zero(tmp_path, photos, tiny_clip, tiny_dino, command):
    edits = tmp_path / "same"
    edits.mkdir()
    for stem in ("a.cat", "b"):
        shutil.copy(photos / f"{stem}.png", edits / f"{stem}-cat2dog.png")
    masks = tmp_path / "masks"
    masks.mkdir()
    for stem in ("a.cat", "b"):
        m = np.zeros((48, 64), np.uint8)
        m[10:30, 20:50] = 255
        Image.fromarray(m).save(masks / f"{stem}.png")
    code, out, err = command(["evaluate", "--input", photos, "--edits", edits, "--source", "cat", "--target", "dog",
                           "--masks", masks, "--clip", tiny_clip, "--dino", tiny_dino, "--quiet"])
    assert code == 0, err
    rows = read_csv(edits / "evaluation-cat2dog.csv")
    assert [r["stem"] for r in rows] == ["a.cat", "b"]
    for r in rows:
        assert r["psnr_bg"] == math.inf and r["mse_bg"] == 0 and r["ssim_bg"] == pytest.approx(1)
        assert r["structure_distance"] == 0 and r["clip_acc"] in (0, 1) and r["target_prompt"] == "a photo of a dog"
    assert ",inf," in (edits / "evaluation-cat2dog.csv").read_text()
    assert (edits / "evaluation-sheet-cat2dog.png").is_file() and "psnr_bg" in out
    for stem in ("a.cat", "b"):  # another target in the same folder: its own files, the first ones kept
        shutil.copy(photos / f"{stem}.png", edits / f"{stem}-cat2fox.png")
    code, out, err = command(["evaluate", "--input", photos, "--edits", edits, "--source", "cat", "--target", "fox",
                              "--masks", masks, "--clip", tiny_clip, "--dino", tiny_dino, "--quiet"])
    assert code == 0, err
    assert {p.name for p in edits.glob("evaluation*")} == {f"evaluation{kind}-cat2{t}.{ext}" for t in ("dog", "fox")
                                                            for kind, ext in (("", "csv"), ("-sheet", "png"))}


@pytest.mark.slow
def test_evaluate_a_folder_edited_with_the_tiny_sd(tmp_path, photos, single_file, tiny_clip, tiny_dino, command):
    code, _, err = command(["--input", photos, "--prompt", "a photo of a cat", "--task", "cat2dog", "--weights",
                         single_file, "--save-attention", "--out", tmp_path / "ddim", *FAST])
    assert code == 0, err
    same = tmp_path / "same"  # a second "method": the inputs as edited (cropped), with the first's settings and maps
    same.mkdir()
    for stem in ("a.cat", "b"):
        for name in (f"{stem}-attention-cat-map.png", f"{stem}-cat2dog.json"):
            shutil.copy(tmp_path / "ddim" / name, same)
        settings = json.loads((same / f"{stem}-cat2dog.json").read_text())
        input_as_edited(photos / f"{stem}.png", (64, 64), settings)[0].save(same / f"{stem}-cat2dog.png")
    (same / "b-cat2dog.png").unlink()  # one input without an edit: reported, exit status 1
    code, out, err = command(["evaluate", "--input", photos, "--edits", tmp_path / "ddim", "--edits", same,
                           "--source", "cat", "--target", "dog", "--attention-masks",
                           "--clip", tiny_clip, "--dino", tiny_dino, "--csv", tmp_path / "all.csv", "--quiet"])
    assert code == 1 and "b: no edit b-cat2dog.png" in err
    rows = read_csv(tmp_path / "all.csv")
    assert [(Path(r["edits"]).name, r["stem"]) for r in rows] == [("ddim", "a.cat"), ("ddim", "b"),
                                                                   ("same", "a.cat")]
    expected = {"clip_acc", "clip_score", "clip_score_edited", "structure_distance", "psnr_bg", "mse_bg", "ssim_bg",
                "recon_psnr", "recon_ssim"}
    assert expected <= set(rows[0]) and all(np.isfinite(rows[0][m]) for m in expected)
    assert rows[0]["mask"].endswith("a.cat-attention-cat-map.png")
    recorded = json.loads((tmp_path / "ddim" / "a.cat-cat2dog.json").read_text())["reconstruction"]["psnr_input_db"]
    assert rows[0]["recon_psnr"] == pytest.approx(recorded)  # the edit's own measurement, reused
    assert "[1] - [0]" in out and "1 images in every folder" in out
    line = [l for l in out.splitlines() if l.startswith("structure_distance ")][-1]  # the comparison table
    distance = rows[0]["structure_distance"]
    assert line.split()[-2] == f"[{-distance:.4g}," and rows[2]["structure_distance"] == 0  # same - ddim, one pair
    assert (tmp_path / "ddim" / "evaluation-sheet-cat2dog.png").is_file()
    assert not (tmp_path / "ddim" / "evaluation-cat2dog.csv").exists()  # --csv: one file for all


def test_missing_models_say_which_files_to_put_where(tmp_path, tiny_clip, tiny_dino):
    from pix2pix_zero.tools.evaluation.evaluate import resolve_models
    with pytest.raises(FileNotFoundError) as e:
        resolve_models(None, str(tiny_dino), tmp_path, download=False)
    message = str(e.value)
    assert "openai/clip-vit-base-patch32" in message and str(tmp_path / "clip-vit-base-patch32") in message
    assert "preprocessor_config.json" in message and "--clip PATH" in message
    with pytest.raises(FileNotFoundError, match="facebook/dino-vitb8.*dino-vitb8/"):
        resolve_models(str(tiny_clip), None, tmp_path, download=False)
    paths = resolve_models(str(tiny_clip), str(tiny_dino), tmp_path, download=False)
    assert paths.acc == paths.score == tiny_clip and paths.dino == tiny_dino  # one --clip serves both CLIP metrics
