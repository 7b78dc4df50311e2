"""The README's install-and-test command is the one CI runs, so a green CI means a newcomer's copy-paste works."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_command_verbatim():
    ci_command = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                  if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert len(ci_command) == 1 and "pytest" in ci_command[0]
    assert ci_command[0] in (ROOT / "README.md").read_text().splitlines()
