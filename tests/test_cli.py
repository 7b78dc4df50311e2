"""train_free_edit.py run as a user runs it, on tiny weights in a temporary folder.

`cli` runs the command line's main(argv) in this process, in the given folder, with its exit status, stdout
and stderr, as a subprocess would report them: a fresh interpreter would spend ~4 s importing torch and
transformers per call. What needs a process of its own (a kill mid-run, torchrun's ranks, the console script,
--help's imports) starts one: here and in test_cli_arguments.py.
"""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test here runs whole commands


def cli(*args, cwd) -> subprocess.CompletedProcess:
    """`train_free_edit.py ARGS` run from `cwd`, offline, in this process."""
    from pix2pix_zero.cli import main
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(here)
        if offline is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = offline
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "my.cat.png"  # a dot in the stem must survive in output names
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(path)
    return path


FAST = ["--steps", "2", "--size", "64", "--quiet", "--reg-steps", "1", "--ac-rolls", "1"]


def test_edit_writes_every_output_and_resumes_and_reedits_from_the_inversion(tmp_path, photo, single_file):
    before = photo.read_bytes()
    r = cli("--input", photo, "--prompt", "a photo of a cat", "--task", "cat2dog", "--target", "fox",
            "--weights", single_file, "--save-attention", "--out", tmp_path / "out", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir() if p.is_file()}
    for name in ("my.cat-inversion.safetensors", "my.cat-reconstruction.png", "my.cat-attention-cat.png",
                 "my.cat-cat2dog.png", "my.cat-cat2dog-side_by_side.png", "my.cat-cat2dog.json",
                 "my.cat-cat2fox.png", "my.cat-cat2fox-side_by_side.png", "my.cat-cat2fox.json"):
        assert name in names
    assert not [n for n in names if n.endswith(".partial")]
    assert photo.read_bytes() == before  # the input is untouched
    settings = json.loads((out / "my.cat-cat2dog.json").read_text())
    assert settings["config"]["num_steps"] == 2 and settings["target"] == "dog" and settings["caption"] == "a photo of a cat"
    assert settings["checkpoint"]["identity"] and "torch" in settings["versions"]
    assert Image.open(out / "my.cat-cat2dog-side_by_side.png").size == (3 * 64, 64)

    again = cli("--input", photo, "--prompt", "a photo of a cat", "--task", "cat2dog", "--target", "fox",
                "--weights", single_file, "--save-attention", "--out", out, *FAST, cwd=tmp_path)
    assert again.returncode == 0 and "already done" in again.stdout

    # another setting into the same folder: refused, the earlier edit kept; --overwrite replaces it
    kept = (out / "my.cat-cat2dog.png").read_bytes()
    other = cli("--input", photo, "--prompt", "a photo of a cat", "--task", "cat2dog", "--weights", single_file,
                "--out", out, *FAST, "--lambda-xa", "0.3", cwd=tmp_path)
    assert other.returncode == 1 and "config.lambda_xa" in other.stdout and "--overwrite" in other.stdout
    assert (out / "my.cat-cat2dog.png").read_bytes() == kept
    other = cli("--input", photo, "--prompt", "a photo of a cat", "--task", "cat2dog", "--weights", single_file,
                "--out", out, *FAST, "--lambda-xa", "0.3", "--overwrite", cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert json.loads((out / "my.cat-cat2dog.json").read_text())["config"]["lambda_xa"] == 0.3
    assert not (out / "summary.json").exists()  # one image: no folder summary

    # re-edit from the saved inversion, into the same folder (the README's example): the steps come from the file
    reconstruction = (out / "my.cat-reconstruction.png").read_bytes()
    r = cli("--inversion", out / "my.cat-inversion.safetensors", "--source", "cat", "--target", "owl",
            "--weights", single_file, "--out", out, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "my.cat-cat2owl.png").is_file()
    record = json.loads((out / "my.cat-cat2owl.json").read_text())
    assert record["inverted_with"]["num_steps"] == 2 and record["config"]["num_steps"] == 2
    assert record["geometry"] == settings["geometry"]  # the crop of the image the inversion was made from
    assert (out / "my.cat-reconstruction.png").read_bytes() == reconstruction  # left alone
    # the side-by-side starts with the input image itself (still there, same bytes), not D(x0)
    panel = lambda name: np.asarray(Image.open(out / name))[:, :64]  # noqa: E731
    assert np.array_equal(panel("my.cat-cat2owl-side_by_side.png"), panel("my.cat-cat2dog-side_by_side.png"))
    r = cli("--inversion", out / "my.cat-inversion.safetensors", "--source", "cat", "--target", "owl",
            "--weights", single_file, "--out", out, "--steps", "3", "--quiet", cwd=tmp_path)
    assert r.returncode == 2 and "num_steps 2" in r.stderr and "drop the flag" in r.stderr


def test_synthetic_edit_and_directions_command(tmp_path, single_file):
    r = cli("--prompt", "a cat on a sofa", "--source", "cat", "--target", "dog", "--weights", single_file,
            "--out", tmp_path, *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "synthetic-a_cat_on_a_sofa-seed0-cat2dog.png").is_file()
    r = cli("directions", "--task", "cat2dog", "--weights", single_file, "--out", tmp_path / "d.safetensors",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file
    delta_c = load_file(tmp_path / "d.safetensors")["delta_c"]
    assert delta_c.shape == (1, 77, 64)
    assert "cat: 58 sentences from built-in (58 templates)" in r.stdout and "dog: 58 sentences" in r.stdout
    norm = float(re.search(r"\|delta_c\| = ([0-9.]+)", r.stdout)[1])
    assert norm == pytest.approx(delta_c.norm().item(), abs=1e-4)
    assert re.search(r"cos\(mean c\(cat\), mean c\(dog\)\) = 0\.\d{4}", r.stdout)
    listed = cli("directions", "--list", cwd=tmp_path)  # cached under outputs/.cache by default
    assert listed.returncode == 0 and "cat -> dog" in listed.stdout and "built-in (58 templates)" in listed.stdout


def test_directions_for_several_targets_feed_edit_direction(tmp_path, single_file, command, one_thread):
    """`directions` writes one file per target into a folder; `edit --direction FILE` uses it, and the edit is
    the one the same sentences give without the file (same delta_c, same pixels)."""
    code, out, err = command(["directions", "--source", "cat", "--target", "dog", "--target", "fox", "--weights",
                              single_file, "--out", tmp_path / "dirs", "--cache-dir", tmp_path / "cache"])
    assert code == 0, err
    assert {p.name for p in (tmp_path / "dirs").iterdir()} == {"cat2dog.safetensors", "cat2fox.safetensors"}
    synthetic = ["--prompt", "a cat on a sofa", "--source", "cat", "--target", "dog", "--weights", single_file,
                 *FAST]
    code, _, err = command([*synthetic, "--out", tmp_path / "a", "--direction",
                            tmp_path / "dirs" / "cat2dog.safetensors"])
    assert code == 0, err
    code, _, err = command([*synthetic, "--out", tmp_path / "b"])
    assert code == 0, err
    name = "synthetic-a_cat_on_a_sofa-seed0-cat2dog.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / name)), np.asarray(Image.open(tmp_path / "b" / name)))
    record = json.loads((tmp_path / "a" / name.replace(".png", ".json")).read_text())
    assert record["direction_file"].endswith("cat2dog.safetensors")
    from safetensors.torch import save_file
    save_file({"delta_c": torch.zeros(1, 77, 768)}, tmp_path / "sd15.safetensors")  # another family's width
    code, _, err = command([*synthetic, "--out", tmp_path / "c", "--direction", tmp_path / "sd15.safetensors"])
    assert code == 2 and "sd15.safetensors: delta_c has shape (77, 768)" in err
    code, _, err = command([*synthetic, "--out", tmp_path / "c", "--direction", tmp_path / "missing.safetensors"])
    assert code == 2 and "--direction" in err and "missing.safetensors: no such file" in err


@pytest.mark.slow
def test_no_prompt_blip_captions_and_the_caption_is_recorded_and_reused(tmp_path, photo, single_file, tiny_blip):
    r = cli("--input", photo, "--caption-only", "--captioner", tiny_blip, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    caption = re.search(r'caption "(.*)" \(BLIP ', r.stdout)[1]
    assert caption and not (tmp_path / "out").exists()  # --caption-only writes nothing
    r = cli("--input", photo, "--task", "cat2dog", "--captioner", tiny_blip, "--weights", single_file,
            "--out", tmp_path / "out", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "out" / "my.cat-cat2dog.json").read_text())
    assert settings["caption"] == caption and settings["caption_from"] == f"BLIP {tiny_blip}"
    from pix2pix_zero.tools.inversion_file import Inversion
    assert Inversion.load(tmp_path / "out" / "my.cat-inversion.safetensors").caption == caption
    # editing the same image again: the stored caption is reused, BLIP is not even loaded (its folder is gone)
    import shutil
    moved = shutil.copytree(tiny_blip, tmp_path / "blip")
    r = cli("--input", photo, "--task", "cat2fox", "--captioner", moved, "--weights", single_file, "--out",
            tmp_path / "out", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # another captioner name: captions again, then edits
    shutil.rmtree(moved)
    r = cli("--input", photo, "--task", "cat2owl", "--captioner", moved, "--weights", single_file, "--out",
            tmp_path / "out", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "my.cat-cat2owl.json").read_text())["caption_from"] == f"BLIP {moved}"


@pytest.mark.slow
def test_language_model_sentences_direction_and_edit_then_the_cache(tmp_path, photo, single_file, tiny_t5):
    r = cli("directions", "--task", "cat2dog", "--sentences", "lm", "--lm", tiny_t5, "--num-sentences", "4",
            "--weights", single_file, cwd=tmp_path)
    assert r.returncode == 2 and "'cat'" in r.stderr and "usable sentences of the 4 wanted" in r.stderr
    import shutil
    lm = shutil.copytree(tiny_t5, tmp_path / "lm")
    edit = ["--input", photo, "--prompt", "a photo of a tree", "--source", "tree", "--target", "car", "--sentences",
            "lm", "--lm", lm, "--num-sentences", "2", "--weights", single_file, "--out", tmp_path / "out", *FAST]
    r = cli(*edit, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "out" / "my.cat-tree2car.json").read_text())
    assert settings["source_sentences"] == f"language model {lm} (n=2, seed=0)"
    assert len(list((tmp_path / "out" / ".cache" / "sentences").glob("*.txt"))) == 2
    shutil.rmtree(lm)  # a second run needs no language model: sentences and direction come from the cache
    r = cli(*edit, "--guidance-scale", "4", "--overwrite", cwd=tmp_path)  # another setting: a new edit
    assert r.returncode == 0, r.stderr
    r = cli("directions", "--list", "--cache-dir", tmp_path / "out" / ".cache", cwd=tmp_path)
    assert r.returncode == 0 and "tree -> car" in r.stdout and "tree: 2 sentences, language model" in r.stdout


def test_folder_input_keeps_images_with_the_same_stem_apart(tmp_path, photo, single_file):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(photo).save(folder / "cat.png")
    Image.open(photo).convert("RGB").save(folder / "cat.jpg")
    r = cli("--input", folder, "--prompt", "a photo of a cat", "--task", "cat2dog", "--weights", single_file,
            "--out", tmp_path / "out", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "cat_png-cat2dog.png").is_file() and (tmp_path / "out" / "cat_jpg-cat2dog.png").is_file()
    r = cli("--input", folder, "--prompt", "x", "--task", "cat2dog", "--weights", single_file, "--out", folder,
            cwd=tmp_path)
    assert r.returncode == 2 and "--out" in r.stderr


def test_clear_errors_exit_2_and_name_the_problem(tmp_path, photo, single_file):
    r = cli("--input", photo, "--task", "cat2dog", "--weights", single_file, *FAST, cwd=tmp_path)  # no captioner
    assert r.returncode == 2 and "Salesforce/blip-image-captioning-base" in r.stderr and "--captioner" in r.stderr
    assert "weights/blip-image-captioning-base/" in r.stderr and "preprocessor_config.json" in r.stderr
    r = cli("--input", tmp_path / "missing.png", "--prompt", "x", "--task", "cat2dog", "--weights", single_file,
            cwd=tmp_path)
    assert r.returncode == 2 and "missing.png" in r.stderr
    r = cli("--input", photo, "--prompt", "x", "--source", "cat", cwd=tmp_path)
    assert r.returncode == 2 and "--target" in r.stderr
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        (weights / name).write_bytes(single_file.read_bytes())
    r = cli("--input", photo, "--prompt", "x", "--task", "cat2dog", "--weights-dir", weights, cwd=tmp_path)
    assert r.returncode == 2 and "a.safetensors" in r.stderr and "b.safetensors" in r.stderr and "--weights" in r.stderr


def test_offline_with_no_weights_says_what_to_place_where(tmp_path, photo):
    r = cli("--input", photo, "--prompt", "x", "--task", "cat2dog", "--weights-dir", tmp_path / "empty", cwd=tmp_path)
    assert r.returncode == 2
    assert "CompVis/stable-diffusion-v1-4" in r.stderr and "--weights" in r.stderr and "empty" in r.stderr


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_default_edit_at_512_px_is_the_library_edit_and_finite_for_several_seeds(tmp_path, family):
    """The README's command with every default but --steps (the paper setting, lambda_ac = lambda_kl = 20,
    5 x 5 regularizer steps, 512 px; for the SD 2.x v-model, whose default is 768, --size 512 said) on random
    checkpoints of several seeds. Before the regularizer's steps were made unable to overshoot, these inversions
    were all NaN and the edits black (and the run exited 0).
    The written edit is, pixel for pixel, the one `edit_image` computes in this process with the settings the
    run recorded (the CLI runs the paper's loops, nothing else); the inversion is finite."""
    from safetensors.torch import load_file

    from pix2pix_zero import EditConfig, edit_image, load_sd
    from pix2pix_zero.loading.random_checkpoint import make_checkpoint
    from pix2pix_zero.tools.image import load_image, tensor_to_pil
    y, x = np.mgrid[0:512, 0:512] / 512  # a smooth picture, as photographs mostly are
    Image.fromarray((np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x) * np.cos(4 * y)], -1) * 255).astype(np.uint8)).save(
        tmp_path / "smooth.png")
    for seed in (0, 1, 2):
        weights = make_checkpoint(tmp_path / f"{family}-{seed}", "diffusers", seed=seed, family=family)
        out = tmp_path / f"out-{seed}"
        size = ["--size", "512"] if family == "sd2" else []  # the random sd2 folder is a v-model
        r = cli("--input", tmp_path / "smooth.png", "--prompt", "a photo of a cat", "--task", "cat2dog",
                "--weights", weights, "--out", out, "--steps", "2", "--quiet", *size, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        inversion = load_file(out / "smooth-inversion.safetensors")
        assert torch.isfinite(inversion["x_inv"]).all() and inversion["x_inv"].shape == (1, 4, 64, 64)
        edited = np.asarray(Image.open(out / "smooth-cat2dog.png"))
        assert edited.shape == (512, 512, 3) and edited.astype(np.float32).std() > 1.0
        if seed == 0:
            settings = json.loads((out / "smooth-cat2dog.json").read_text())
            config = EditConfig(**settings["config"])
            assert config == EditConfig(num_steps=2, posterior="mean")  # the defaults, the setting's posterior
            image, _ = load_image(tmp_path / "smooth.png", size=512)
            ours = edit_image(load_sd(weights), image, "a photo of a cat", "cat", ["dog"], config,
                              torch.Generator().manual_seed(config.seed), progress=False)
            torch.testing.assert_close(ours.x_inv, inversion["x_inv"], rtol=0, atol=0)
            assert np.array_equal(np.asarray(tensor_to_pil(ours.edits[0])), edited)


@pytest.mark.slow
def test_direct_inversion_flags_reconstruction_record_resume_and_method_check(tmp_path, photo, single_file):
    """--inversion-method direct and --no-pyramid-rescale reach EditConfig (a bool field is --flag/--no-flag);
    the settings file records the reconstruction error (direct: the reference lands on x0 exactly), which does
    not stop a rerun from being recognized as done; a direct inversion refuses to be edited as ddim."""
    args = ["--input", photo, "--prompt", "a photo of a cat", "--task", "cat2dog", "--weights", single_file,
            "--out", tmp_path / "out", "--inversion-method", "direct", "--no-pyramid-rescale", *FAST]
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "out" / "my.cat-cat2dog.json").read_text())
    assert record["config"]["inversion_method"] == "direct" and record["config"]["pyramid_rescale"] is False
    measured = record["reconstruction"]
    assert measured["latent_rms"] == 0.0 and measured["psnr_decoded_x0_db"] is None  # identical: infinite PSNR
    assert 0 < measured["psnr_input_db"] < 100
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "already done" in again.stdout
    reedit = ["--inversion", tmp_path / "out" / "my.cat-inversion.safetensors", "--source", "cat", "--target", "owl",
              "--weights", single_file, "--out", tmp_path / "out", *FAST]
    r = cli(*reedit, "--inversion-method", "ddim", cwd=tmp_path)  # a flag naming another method: refused
    assert r.returncode == 2 and "inversion_method direct" in r.stderr and "drop the flag" in r.stderr
    r = cli(*reedit, cwd=tmp_path)  # no flag: the file's method, Direct Inversion
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "my.cat-cat2owl.json").read_text())["config"]["inversion_method"] == "direct"


# --- many inputs, bad inputs, interruptions, several processes ----------------------------------------------------

def write_photos(folder: Path, n: int) -> Path:
    """p0.png ... p{n-1}.png, 64 x 48 random pictures, in a new folder."""
    folder.mkdir()
    for i in range(n):
        Image.fromarray((np.random.default_rng(i).random((48, 64, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def write_corpus(folder: Path) -> dict[str, str]:
    """Every kind of input a folder run meets, written here; name -> "done" or the failure message (a regex)."""
    import io
    from test_image import png_header_claiming
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    good = io.BytesIO()
    Image.fromarray(rgb).save(good, format="PNG")
    (folder / "truncated.png").write_bytes(good.getvalue()[:len(good.getvalue()) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("this is a text file named .png\n")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.random((48, 64)) * 65535).astype(np.uint16)).save(folder / "gray16.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(np.dstack([rgb, (rng.random((48, 64)) * 255).astype(np.uint8)]), "RGBA").save(folder / "rgba.png")
    Image.fromarray((rng.random((40, 2000, 3)) * 255).astype(np.uint8)).save(folder / "wide.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 120 x 60, shown rotated: 60 x 120
    Image.fromarray((rng.random((60, 120, 3)) * 255).astype(np.uint8)).save(folder / "rotated.jpg", exif=exif)
    (folder / "bomb.png").write_bytes(png_header_claiming(100_000, 100_000))
    return {"truncated.png": "truncated|corrupt", "zero.png": "empty file", "text.png": "not an image",
            "cmyk.jpg": "done", "gray16.png": "done", "palette.png": "done", "rgba.png": "done",
            "wide.png": "too thin.*--pad", "rotated.jpg": "done", "bomb.png": "refused before decoding"}


def test_bad_input_corpus_mixed_in_one_folder_and_one_by_one(tmp_path, single_file):
    """Mixed: each bad file gets its one-line error, every good one is edited, exit status 1, and summary.json
    lists every input with its status. One by one: exit 0 for a good file, 1 naming the problem for a bad one."""
    expected = write_corpus(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    out = tmp_path / "out"
    r = cli("--input", tmp_path / "in", "--prompt", "a photo of a cat", "--task", "cat2dog", "--weights", single_file,
            "--out", out, *FAST, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {Path(e["input"]).name: e for e in summary["inputs"]}
    assert set(status) == set(expected)
    for name, want in expected.items():
        stem = Path(name).stem
        if want == "done":
            assert status[name]["status"] == "done", status[name]
            assert (out / f"{stem}-cat2dog.png").is_file()
        else:
            assert status[name]["status"] == "failed" and re.search(want, status[name]["reason"]), status[name]
            assert re.search(f"error: .*{re.escape(name)}.*({want})", r.stderr), name
            assert not list(out.glob(f"{stem}-*"))
    assert Image.open(out / "rotated-cat2dog.png").size == (64, 128)  # portrait: the EXIF rotation was applied
    assert summary["counts"] == {"done": 5, "skipped": 0, "failed": 5} and "5 failed" in r.stdout
    assert not list(out.glob(".*partial"))
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").iterdir()} == before  # inputs untouched

    for name, want in expected.items():
        if name in ("cmyk.jpg", "wide.png", "bomb.png"):  # one good and two bad ones, alone
            r = cli("--input", tmp_path / "in" / name, "--prompt", "a photo of a cat", "--task", "cat2dog",
                    "--weights", single_file, "--out", tmp_path / "alone", *FAST, cwd=tmp_path)
            assert r.returncode == (0 if want == "done" else 1), r.stderr
            if want != "done":
                assert name in r.stderr and re.search(want, r.stderr)


def test_pad_keeps_the_whole_wide_image_and_records_the_geometry(tmp_path, single_file):
    expected = write_corpus(tmp_path / "in")
    assert expected["wide.png"] != "done"
    r = cli("--input", tmp_path / "in" / "wide.png", "--prompt", "a photo", "--task", "cat2dog", "--pad",
            "--weights", single_file, "--out", tmp_path / "out", *FAST, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "out" / "wide-cat2dog.json").read_text())
    assert record["geometry"] == {"original": [2000, 40], "resized": [128, 3], "crop": None, "pad": [0, 30, 0, 31],
                                  "size": [128, 64]}
    assert Image.open(tmp_path / "out" / "wide-cat2dog.png").size == (128, 64)


def test_sigkill_mid_run_then_rerun_does_each_image_exactly_once(tmp_path, single_file):
    import signal
    import time
    folder = write_photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    args = [sys.executable, str(ROOT / "train_free_edit.py"), "--input", folder, "--prompt", "a photo of a cat",
            "--task", "cat2dog", "--weights", single_file, "--out", out, "--steps", "20", "--size", "64", "--quiet",
            "--reg-steps", "1", "--ac-rolls", "1"]
    run = subprocess.Popen([str(a) for a in args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=os.environ | {"HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while not list(out.glob("p*-cat2dog.json")) and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}
    done_first = {n.removesuffix("-cat2dog.json") for n in first if n.endswith("-cat2dog.json")}
    assert 1 <= len(done_first) < 4, "the kill must land after the first image and before the last"
    for name in first:  # nothing under a final name is partial: every PNG decodes, every JSON parses
        if name.endswith(".png"):
            Image.open(out / name).load()
        elif name.endswith(".json"):
            json.loads((out / name).read_text())

    again = cli(*args[2:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {e["stem"]: e["status"] for e in summary["inputs"]}
    assert status == {f"p{i}": "skipped" if f"p{i}" in done_first else "done" for i in range(4)}
    for name, mtime in first.items():  # what the killed run finished was not redone
        if name.split("-")[0] in done_first:
            assert (out / name).stat().st_mtime_ns == mtime, name
    assert not list(out.glob(".*.partial"))  # the killed run's temporaries were removed


def test_torchrun_two_ranks_edit_each_image_once_and_rank_0_merges(tmp_path, single_file):
    folder = write_photos(tmp_path / "in", 5)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "train_free_edit.py"), "--input", str(folder), "--prompt", "a photo of a cat",
                        "--task", "cat2dog", "--weights", str(single_file), "--out", str(out), *FAST],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    shards = [json.loads((out / f"summary-shard-{i}-of-2.json").read_text()) for i in range(2)]
    assert [[e["stem"] for e in s["inputs"]] for s in shards] == [["p0", "p1", "p2"], ["p3", "p4"]]
    merged = json.loads((out / "summary.json").read_text())
    assert [e["stem"] for e in merged["inputs"]] == [f"p{i}" for i in range(5)]
    assert all(e["status"] == "done" for e in merged["inputs"]) and merged["shards"] == [[0, 2], [1, 2]]
    assert sorted(p.name for p in out.glob("*-cat2dog.png")) == [f"p{i}-cat2dog.png" for i in range(5)]


def test_shard_flag_splits_like_torchrun_and_the_last_shard_merges(tmp_path, single_file):
    folder = write_photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    for i in (1, 0):
        r = cli("--input", folder, "--prompt", "a photo of a cat", "--task", "cat2dog", "--weights", single_file,
                "--out", out, "--shard", f"{i}/2", *FAST, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    merged = json.loads((out / "summary.json").read_text())
    assert [(e["stem"], e["status"]) for e in merged["inputs"]] == [("p0", "done"), ("p1", "done"), ("p2", "done")]


def test_caption_only_goes_on_past_a_bad_file(tmp_path, tiny_blip):
    folder = write_photos(tmp_path / "in", 2)
    (folder / "broken.png").write_bytes(b"")
    r = cli("--input", folder, "--caption-only", "--captioner", tiny_blip, "--out", tmp_path / "out", cwd=tmp_path)
    assert r.returncode == 1
    assert "broken.png: empty file" in r.stderr
    assert len(re.findall(r'p[01]\.png: caption "', r.stdout)) == 2
