"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written report, config or checkpoint; a crash or a full disk
leaves the previous file intact.
"""

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from framecast.errors import FramecastError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def previous_path(path: str | Path) -> Path:
    """Where ``atomic_write(..., keep_previous=True)`` keeps the file it replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], keep_previous: bool = False) -> None:
    """Call ``write(f)`` on a temporary file and move it to ``path`` once complete (fsynced).

    ``keep_previous``: the file being replaced stays readable as ``previous_path(path)``; at every
    moment ``path`` is either the old complete file or the new complete file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():
            _keep(path, previous_path(path))
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in DISK_FULL:
            raise FramecastError(
                f"disk full while writing {path} ({os.strerror(e.errno)}); the previous file was kept: "
                f"free some space and run the same command again"
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _keep(path: Path, prev: Path) -> None:
    """Make ``prev`` a complete copy of ``path`` (a hard link where the file system has them)."""
    tmp = prev.with_name(f".{prev.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, prev)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
