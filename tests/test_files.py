"""Atomic writes (pix2pix_zero.tools.files): a write that fails half-way leaves neither a partial file under the
final name nor a temporary one, and an existing file stays as it was."""
import os

import pytest
from PIL import Image

from pix2pix_zero.tools.files import atomic_path
from pix2pix_zero.tools.image import save_png


def test_the_file_appears_whole_under_its_name_only_at_the_end(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("hello")
        assert not path.exists()  # nothing under the final name while writing
        assert tmp.parent == path.parent and tmp.name.startswith(".") and str(os.getpid()) in tmp.name
    assert path.read_text() == "hello" and [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_text("new, half")
            raise OSError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_save_png_interrupted_mid_write_leaves_nothing(tmp_path, monkeypatch):
    """A PNG encoder that dies after writing some bytes (a full disk, a killed process): with a plain
    `im.save(path)` a truncated out.png would be left behind."""
    def dies_half_way(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", dies_half_way)
    with pytest.raises(OSError, match="No space"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []
