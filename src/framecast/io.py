"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written report, config or checkpoint; a crash or a full disk
leaves the previous file intact. The new file gets the mode an ordinary ``open(path, "w")`` would
give it: the replaced file's mode, or 0666 less the umask for a new file.

Temporary files are ``.<name>.<random>.tmp`` beside the target. One left by a killed writer is
removed by the next write of the same target once it is older than ``STALE_SECONDS``: a live
writer keeps touching its temporary file, and framecast writes each file from one process only
(under DDP, rank 0 writes checkpoints, configs and reports), so no live writer's file is ever
that old. Temporary files of other targets are never touched.
"""

import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from framecast.errors import FramecastError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# a temporary file of the same target this much older than now was left by a killed writer
STALE_SECONDS = 60.0


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
    remove_stale_temporaries(path)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _chmod(f.fileno(), tmp, mode)  # mkstemp makes 0600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():
            _keep(path, previous_path(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself survive a power cut
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


def _temporary_pattern(path: Path) -> re.Pattern[str]:
    # mkstemp's random part has no dots, so ".last.ckpt.x.<random>.tmp" (target "last.ckpt.x")
    # never matches the pattern of "last.ckpt"
    return re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")


def remove_stale_temporaries(path: str | Path, max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove the temporary files of ``path`` (``.<name>.<random>.tmp``) last modified more than
    ``max_age`` seconds ago: leftovers of a writer killed mid-write. Returns what was removed."""
    path = Path(path)
    pattern, now, removed = _temporary_pattern(path), time.time(), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone meanwhile, or not ours to remove: the write goes on regardless
            continue
    return removed


def _umask() -> int:
    """The process umask, read without changing it where /proc has it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way is to set it and set it back: racy across threads (one creating a
    # file in between gets umask 022 for it), acceptable for a fallback.
    old = os.umask(0o022)
    os.umask(old)
    return old


def _mode_for(path: Path) -> int:
    """What ``open(path, "w")`` would leave: the existing file's permission bits, else 0666 & ~umask."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return st.st_mode & 0o777  # a write clears set-id bits anyway
    except OSError:
        pass
    return 0o666 & ~_umask()


def _chmod(fd: int, name: str, mode: int) -> None:
    if os.chmod in os.supports_fd:
        os.chmod(fd, mode)
    else:  # Windows: only the read-only bit means anything
        os.chmod(name, mode)


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename in it is durable; a no-op where directories can't be opened
    or synced (Windows, some network file systems). The new file is already complete and in
    place, so a failure here is not reported as a failed write."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _keep(path: Path, prev: Path) -> None:
    """Make ``prev`` a complete copy of ``path`` (a hard link where the file system has them)."""
    tmp = prev.with_name(f".{prev.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
        shutil.copymode(path, tmp)
    os.replace(tmp, prev)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
