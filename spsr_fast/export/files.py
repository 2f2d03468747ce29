"""Writing exported files atomically, next to the destination."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .deploy import ExportError


def check_destination(path, overwrite: bool) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"-o {path}: is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ExportError(f"-o {path}: exists (use --overwrite to replace it)")
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` with the same suffix (torch's pt2 writers want
    `.pt2`); on success it is synced and renamed over `path`, on any error removed, so
    `path` is either untouched or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
