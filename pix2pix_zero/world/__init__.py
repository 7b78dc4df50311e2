"""The generated-scenes world: scenes with ground truth (scenes.py), the baby SD trained on them (train.py), the
method measured against the truth (measure.py, bench.py, commands.py) and the pictures of docs/world.md."""
from pathlib import Path

WORLD_DIR = Path(__file__).resolve().parents[2] / "weights" / "world"  # what the repository ships
CHECKPOINT = WORLD_DIR / "baby-sd.safetensors"
SENTENCE_SOURCES = ("world", "templates", "one")  # where a world direction's sentences come from (bench.py)
