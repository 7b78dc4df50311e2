"""Writing files so that none is ever half-written: a temporary name in the same folder, renamed into place.

A rename within one folder is atomic, so a reader (or a resumed run) sees the old file or the whole new
one, never a part. The temporary name carries the process id, so processes writing to one folder never share
one, and it starts with a dot and ends in `.partial`, so it is never taken for an output.
"""
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`, on error removed.

        with atomic_path(out / "cat.png") as tmp:
            image.save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
