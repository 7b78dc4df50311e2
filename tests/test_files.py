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
        assert tmp.parent == path.parent and tmp.name.startswith(".") and f"-{os.getpid()}-" in tmp.name
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


@pytest.mark.parametrize("code,why", [("ENOSPC", "the disk is full"), ("EROFS", "the file system is read-only"),
                                      ("EACCES", "permission denied")])
def test_a_full_disk_or_read_only_folder_names_the_path_and_keeps_written_files(tmp_path, monkeypatch, code, why):
    import errno

    from pix2pix_zero.tools.files import OutputError
    (tmp_path / "done.png").write_bytes(b"whole")

    def fails(src, dst):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(os, "replace", fails)
    with pytest.raises(OutputError, match=rf"next\.txt: cannot write it: {why}.*files written before are complete"):
        with atomic_path(tmp_path / "next.txt") as tmp:
            tmp.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.png"]
    assert (tmp_path / "done.png").read_bytes() == b"whole"


def test_temporary_names_are_unique_per_writer_and_name_it(tmp_path):
    from pix2pix_zero.tools.files import host
    names = set()
    for _ in range(2):
        with atomic_path(tmp_path / "a.txt") as tmp:
            names.add(tmp.name)
            tmp.write_text("x")
    assert len(names) == 2  # two writers in one process (or two machines with the same pid) never share one
    assert all(n.startswith(".a.txt.") and n.endswith(".partial") and f"{host()}-{os.getpid()}-" in n for n in names)


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys
    import time

    from pix2pix_zero.tools.files import STALE_AFTER_S, host, remove_stale_temporaries
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        files = {"dead": f".a.png.{host()}-{dead_pid}-00ff00ff.partial",
                 "live": f".b.png.{host()}-{live.pid}-00ff00ff.partial",
                 "other_host_recent": ".c.png.elsewhere-1-00ff00ff.partial",
                 "other_host_old": ".d.png.elsewhere-1-00ff00ff.partial",
                 "output": "e.png"}
        for name in files.values():
            (tmp_path / name).write_text("x")
        old = time.time() - STALE_AFTER_S - 10
        os.utime(tmp_path / files["other_host_old"], (old, old))
        removed = {p.name for p in remove_stale_temporaries(tmp_path)}
        assert removed == {files["dead"], files["other_host_old"]}
        assert {p.name for p in tmp_path.iterdir()} == {files[k] for k in ("live", "other_host_recent", "output")}
    finally:
        live.kill()
        live.wait()


def test_a_safetensors_file_gets_the_mode_open_gives(tmp_path):
    """safetensors' save_file creates its file 0600; written through atomic_path it gets 0666 less the umask, as
    a PNG or JSON does, so a shared folder's other readers can read the checkpoints and caches too."""
    import stat

    import torch
    from safetensors.torch import save_file

    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"a": torch.zeros(2)}, tmp)
        os.chmod(tmp, 0o600)  # what safetensors (0.8 here) chooses, made certain
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o666 & ~umask
