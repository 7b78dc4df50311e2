"""train_free_edit.py refuses bad arguments before any model loads, with exit status 2 and the fix in the message.

Runs the command's main() in this process with the model loaders replaced by ones that fail the test, so a
check that came after loading would show up as "model loaded".
"""
import re

import numpy as np
import pytest
from PIL import Image

from pix2pix_zero import cli


@pytest.fixture
def no_models(monkeypatch):
    import pix2pix_zero
    from pix2pix_zero.tools import captions

    def loaded(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(pix2pix_zero, "load_sd", loaded)
    monkeypatch.setattr(captions, "load_captioner", loaded)


def main(argv, capsys) -> tuple[int, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "in" / "cat.png"
    path.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_each_bad_argument_exits_2_naming_the_fix(tmp_path, photo, single_file, no_models, capsys):
    base = ["--input", photo, "--prompt", "a photo of a cat", "--weights", single_file, "--out", tmp_path / "out"]
    empty, latin1 = tmp_path / "empty.txt", tmp_path / "latin1.txt"
    empty.write_text("\n  \n")
    latin1.write_bytes("un chat assis sur la fenêtre\n".encode("latin-1"))
    not_a_checkpoint = tmp_path / "model.safetensors"
    not_a_checkpoint.write_text("hello")
    (tmp_path / "a-file").write_text("x")
    cases = [
        (["--task", "catdog"], "SOURCE2TARGET"),
        (["--task", "cat2dog", "--source-sentences", empty], "empty.txt: no sentences"),
        (["--task", "cat2dog", "--target-sentences", latin1], "latin1.txt: not a UTF-8"),
        (["--task", "cat2dog", "--steps", "0"], "--num-steps"),
        (["--task", "cat2dog", "--guidance-scale", "-1"], "--guidance-scale.*>= 0"),
        (["--task", "cat2dog", "--xa-guidance", "-0.1"], "--lambda-xa.*>= 0"),
        (["--task", "cat2dog", "--size", "100"], "--size must be a positive multiple of 8"),
        (["--task", "cat2dog", "--size", "0"], "--size must be a positive multiple of 8"),
        (["--task", "cat2dog", "--weights", tmp_path / "missing.safetensors"], "missing.safetensors: no such"),
        (["--task", "cat2dog", "--weights", not_a_checkpoint], "model.safetensors: not a safetensors file"),
        (["--task", "cat2dog", "--out", tmp_path / "a-file"], "a-file"),
        (["--task", "cat2dog", "--shard", "2/2"], "--shard"),
        (["--task", "cat2dog", "--setting", "diffusers", "--pair-shifts", "all"], "pair_shifts 'all'.*paper setting"),
    ]
    for extra, problem in cases:
        code, err = main([*base, *extra], capsys)
        assert code == 2, (extra, err)
        assert re.search(problem, err), (extra, err)
    code, err = main(["--input", photo.parent, "--prompt", "x", "--task", "cat2dog", "--weights", single_file,
                      "--out", photo.parent], capsys)
    assert code == 2 and "is the input folder" in err and "--out" in err
    assert sorted(p.name for p in photo.parent.iterdir()) == ["cat.png"]  # nothing written beside the input


def test_fp16_on_a_cpu_is_warned_about_before_loading(tmp_path, photo, single_file, monkeypatch, capsys):
    import pix2pix_zero

    def loaded(*args, **kwargs):
        raise ValueError("loading the model now")

    monkeypatch.setattr(pix2pix_zero, "load_sd", loaded)
    code, err = main(["--input", photo, "--prompt", "x", "--task", "cat2dog", "--weights", single_file, "--out",
                      tmp_path / "out", "--device", "cpu", "--dtype", "fp16", "--quiet"], capsys)
    assert code == 2 and "loading the model now" in err
    assert "warning: --dtype fp16 on a CPU" in err and "--dtype bf16" in err
    assert err.index("warning: --dtype fp16") < err.index("loading the model now")


def test_a_torchrun_rank_whose_model_fails_still_joins_the_gather(tmp_path, photo, single_file, monkeypatch,
                                                                   capsys):
    """Rank 1 of 2 cannot load its model: it records its inputs as failed (exit status 2 in its summary) and
    still hands its summary to the gather, so rank 0 is never left waiting."""
    import json

    import pix2pix_zero
    from pix2pix_zero.tools import distributed
    for i in range(1, 4):
        Image.open(photo).save(photo.parent / f"cat{i}.png")
    gathered = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "start", lambda rank, device: None)
    monkeypatch.setattr(distributed, "gather_json", lambda record, rank: gathered.append(record))
    monkeypatch.setattr(distributed, "finish", lambda: gathered.append("finished"))

    def fails(*args, **kwargs):
        raise ValueError("out of GPU memory while loading")

    monkeypatch.setattr(pix2pix_zero, "load_sd", fails)
    code, err = main(["--input", photo.parent, "--prompt", "x", "--task", "cat2dog", "--weights", single_file,
                      "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 2 and "rank 1: out of GPU memory while loading" in err
    record, finished = gathered
    assert finished == "finished" and record["exit_status"] == 2
    assert [(e["stem"], e["status"]) for e in record["inputs"]] == [("cat2", "failed"), ("cat3", "failed")]
    assert json.loads((tmp_path / "out" / "summary-shard-1-of-2.json").read_text()) == record


@pytest.mark.slow
@pytest.mark.parametrize("command", ["edit", "directions", "evaluate", "pie-bench", "world", "world-bench"])
def test_help_loads_no_model_code(command):
    """--help of every subcommand answers before the model code is imported: no transformers, no UNet module."""
    import subprocess
    import sys
    probe = ("import sys\nfrom pix2pix_zero import cli\ntry:\n    cli.main([%r, '--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('transformers', 'pix2pix_zero.models.unet', 'pix2pix_zero.pipeline') "
             "if m in sys.modules))" % command)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "usage:" in run.stdout and run.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_console_script_is_installed():
    """`pip install -e .` puts pix2pix-zero on PATH; it is the same command line."""
    import shutil
    import subprocess
    script = shutil.which("pix2pix-zero")
    assert script, "pix2pix-zero is not on PATH: install the package with pip install -e ."
    run = subprocess.run([script, "directions", "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "usage: train_free_edit.py directions" in run.stdout
