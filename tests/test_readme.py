"""The README's install-and-test command is the one CI runs, so a green CI means a newcomer's copy-paste works."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_command_verbatim():
    ci_command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                  if line.strip() and not line.startswith(("#", "set ", "cd ", "command -v chromium"))]
    assert len(ci_command) == 1 and "pytest" in ci_command[0]
    assert ci_command[0] in (ROOT / "README.md").read_text().splitlines()


def python_blocks(markdown: str) -> list[str]:
    blocks, inside = [], None
    for line in markdown.splitlines():
        if inside is None and line.strip() == "```python":
            inside = []
        elif inside is not None and line.strip() == "```":
            blocks.append("\n".join(inside))
            inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


@pytest.mark.slow
def test_readme_python_runs(tmp_path, monkeypatch, one_thread):
    """The README's Python blocks, run in order as one script (on the shipped baby SD, offline) in a folder
    that sees the repository's weights/ and examples/: an example that raises fails CI."""
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 2
    for name in ("weights", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "red-square.png").is_file()
    assert namespace["x_square"].shape == namespace["x_inv"].shape == (1, 4, 16, 16)
