"""Writing files so that none is ever half-written: a temporary name in the same folder, renamed into place.

A rename within one folder is atomic, so a reader (or a resumed run) sees the old file or the whole new
one, never a part. The temporary name is `.NAME.HOST-PID-RANDOM.partial`: unique per process even when
processes on several machines write to one shared folder, never taken for an output (a leading dot and the
`.partial` suffix), and it says who wrote it, so that `remove_stale_temporaries` can tell a dead writer's
leftovers (after a SIGKILL, a power cut) from a live writer's file.
"""
import errno
import hashlib
import os
import secrets
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SUFFIX = ".partial"
STALE_AFTER_S = 3600  # a temporary from another machine this old is taken to be dead: writes last seconds
UMASK = os.umask(0o022)  # read once, at import (os.umask can only be read by setting it), and put back
os.umask(UMASK)


class OutputError(OSError):
    """An output could not be written (full disk, read-only folder); the message names the path."""


def host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, hex, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`, on error removed.

        with atomic_path(out / "cat.png") as tmp:
            image.save(tmp, format="PNG")

    A full disk or a read-only folder raises OutputError naming `path`; files written before stay whole. The file
    gets the permissions a plain open() would give it (0666 less the umask), whatever the writer chose.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{host()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.is_file():  # the mode open() gives: safetensors' writer, for one, makes its files 0600
            os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, OutputError) or e.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM,
                                                         errno.EDQUOT):
            raise
        why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only"}.get(e.errno, "permission denied")
        raise OutputError(e.errno, f"{path}: cannot write it: {why} ({e.strerror}); the files written before "
                                   "are complete") from None
    finally:
        tmp.unlink(missing_ok=True)


def writer_alive(tmp_name: str) -> bool:
    """Whether the process that names a temporary file (see the module docstring) may still be writing it."""
    try:
        who = tmp_name.removesuffix(SUFFIX).rsplit(".", 1)[1]
        writer_host, pid, _ = who.rsplit("-", 2)
        pid = int(pid)
    except (IndexError, ValueError):
        return False  # not one of ours (an older naming): nothing is writing it under this name
    if writer_host != host():
        return True  # another machine's: judged by age instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()  # our own pid on a leftover: an earlier process that had it died


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries left in `folder` by writers that are gone (a dead process on this machine, or
    any writer's file older than STALE_AFTER_S); return what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for p in folder.glob(f".*{SUFFIX}"):
        try:
            old = now - p.stat().st_mtime > STALE_AFTER_S
            if old or not writer_alive(p.name):
                p.unlink()
                removed.append(p)
        except FileNotFoundError:
            pass  # its writer finished meanwhile
    return removed
