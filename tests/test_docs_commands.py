"""Every shell command in README.md and docs/ runs: a wrong flag, file name or subcommand in an example fails CI.

The commands of each page run in order, as written, in one scratch folder (a later command may read what an
earlier one wrote, as a reader's would), through the command line's main() in this process. What a reader's
machine has and this one has not is substituted, and only that: the tiny random checkpoint for Stable
Diffusion (`--weights`; a tiny random SDXL for a file named sd_xl...), tiny random BLIP, T5, CLIP and DINO folders for the downloads, 64 px and 2 steps for the
512 px and 50-step defaults (and a caption naming the source word where an example saves its attention map
for `evaluate --attention-masks`), the CPU for `--device cuda`, two ranks on the CPU for torchrun's GPUs, 2 scenes for
`--n 200`. Two kinds are checked, not run, here: the README's install-and-test line is the one CI runs
(test_readme.py checks that), and `app` (a server that runs until stopped) has its arguments parsed here and is
started and driven by test_app.py.
"""
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
FAST = ["--size", "64", "--steps", "2", "--reg-steps", "1", "--ac-rolls", "1", "--quiet"]
# flags a reader's command gives whose value is replaced, not added to
VALUED = {"--weights", "--size", "--steps", "--num-steps", "--n", "--lm", "--num-sentences", "--clip", "--dino",
          "--captioner", "--device"}


def shell_commands(page: str) -> list[str]:
    """The commands in the page's unlabelled or shell code blocks: lines that start with python, python3 or
    torchrun (continuation lines joined, comments cut)."""
    text = (ROOT / page).read_text()
    commands = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang not in ("", "bash", "sh", "shell"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line.startswith(("python ", "python3 ", "torchrun ")):
                commands.append(line)
    return commands


def test_every_page_with_commands_is_found():
    """The collector sees the pages' commands (a change of fence or prompt style would make the test vacuous)."""
    found = {page: len(shell_commands(page)) for page in PAGES}
    assert found["README.md"] >= 3 and found["docs/command-line.md"] >= 10 and found["docs/world.md"] >= 2
    assert found["docs/many-images.md"] >= 4 and found["docs/evaluation.md"] >= 3


def substituted(argv: list[str], models: dict) -> list[str]:
    """argv (after train_free_edit.py) with this machine's stand-ins; see the module docstring."""
    command = argv[0] if argv and not argv[0].startswith("-") else "edit"
    keep, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in VALUED:
            skip = True
            continue
        keep.append(arg.replace("$SLURM_ARRAY_TASK_ID", "0"))
    if command == "app":
        return keep + ["--weights", models["sd"], "--device", "cpu", "--help"]
    if command in ("world", "world-bench"):
        return keep + (["--n", "2", "--steps", "2"] if command == "world-bench" else [])
    if command == "evaluate":
        return keep + ["--clip", models["clip"], "--dino", models["dino"], "--quiet"]
    given = argv[argv.index("--weights") + 1] if "--weights" in argv else ""
    extra = ["--weights", models["sdxl"] if "sd_xl" in given else models["sd"]]
    if "--sentences" in keep and keep[keep.index("--sentences") + 1] == "lm":
        extra += ["--lm", models["t5"], "--num-sentences", "3"]
    if command == "directions":
        return keep + extra
    if "--prompt" not in keep and "--inversion" not in keep and "--input" in keep:
        # a random BLIP's caption cannot name the source word, whose attention map the example saves
        extra += ["--prompt", "a photo of a cat"] if "--save-attention" in keep else ["--captioner", models["blip"]]
    return keep + extra + FAST


@pytest.fixture(scope="module")
def tiny_t5_cat(tmp_path_factory):
    """The tiny random T5 with "cat" in its vocabulary: the pages' language-model examples are about cats."""
    from tiny_models import make_tiny_t5
    return make_tiny_t5(tmp_path_factory.mktemp("t5") / "tiny-t5-cat", extra_words=("cat",))


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    from pix2pix_zero.loading.random_checkpoint import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl.safetensors", "single", family="sdxl")


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A reader's folder: cat.png, photos/ with two images, and the repository's examples/ and weights/."""
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / "cat.png")
    (tmp_path / "photos").mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray((rng.random((72, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "photos" / name)
    for name in ("examples", "weights"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if shell_commands(p)])
def test_page_commands_run(page, scratch, command, single_file, tiny_sdxl, tiny_blip, tiny_t5_cat, tiny_clip,
                           tiny_dino, one_thread):
    models = {"sd": str(single_file), "sdxl": str(tiny_sdxl), "blip": str(tiny_blip), "t5": str(tiny_t5_cat), "clip": str(tiny_clip),
              "dino": str(tiny_dino)}
    for line in shell_commands(page):
        words = shlex.split(line)
        if words[0] == "torchrun":  # GPUs -> two CPU ranks, in processes of their own as torchrun makes them
            script = words.index("train_free_edit.py")
            args = substituted(words[script + 1:], models)
            run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                  str(ROOT / "train_free_edit.py"), *args, "--device", "cpu"],
                                 capture_output=True, text=True, timeout=600, cwd=scratch)
            assert run.returncode == 0, f"{page}: {line}\n{run.stderr[-3000:]}"
            continue
        if words[:2] in (["python3", "-m"], ["python", "-m"]) and words[2] == "venv":
            continue  # the install-and-test line: CI runs it verbatim (test_readme.py)
        assert words[1] == "train_free_edit.py", f"{page}: a command this test does not know how to run: {line}"
        code, out, err = command(substituted(words[2:], models))
        assert code == 0, f"{page}: {line}\nexit status {code}\n{err[-3000:]}"
        assert "--help" not in substituted(words[2:], models) or "usage:" in out
    shutil.rmtree(scratch / "outputs", ignore_errors=True)
