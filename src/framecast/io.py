"""Atomic file writes, and the lock that makes a run folder one process's.

Atomic writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written report, config or checkpoint; a crash or a full disk
leaves the previous file intact. The new file gets the mode an ordinary ``open(path, "w")`` would
give it: the replaced file's mode, or 0666 less the umask for a new file.

Temporary files are ``.<name>.<random>.tmp`` beside the target. One left by a killed writer is
removed by the next write of the same target once it is older than ``STALE_SECONDS``: a live
writer keeps touching its temporary file, and framecast writes each file from one process only
(under DDP, rank 0 writes checkpoints, configs and reports), so no live writer's file is ever
that old. Temporary files of other targets are never touched.

A run folder (``framecast fit``'s ``out_dir``, ``framecast compare``'s report folder) belongs to
one process at a time: ``run_folder_lock`` holds an operating-system lock on ``<folder>/.lock``
while the run writes there, and a second process on the same folder refuses in one line naming
the first.
"""

import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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


# --------------------------------------------------------------------------- one process per run folder

LOCK_NAME = ".lock"  # the locked file in a run folder (its content is nothing)
HOLDER_NAME = ".lock.holder.json"  # beside it: pid, host and command line of the process holding it
# a process that a launcher started as another rank of a multi-process run (DDP) has one of
# these set to a rank other than 0; rank 0 holds the lock for all of them
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


class RunFolderInUse(FramecastError):
    """Another process holds the run folder's lock."""


_held: dict[Path, list] = {}  # folder (resolved) -> [FileLock, depth]: this process's locks
_held_guard = threading.Lock()


def _other_rank() -> bool:
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value and value != "0":
            return True
    return False


def _command_line() -> str:
    """This process's command line, ``framecast fit ...`` for the CLI however it was started."""
    argv = list(sys.argv) or ["python"]
    first = Path(argv[0])
    if first.parent.name == "framecast" and first.name in ("cli.py", "__main__.py"):  # python -m framecast
        argv[0] = "framecast"
    else:
        argv[0] = first.name or "python"
    return shlex.join(argv)


def _holder(folder: Path) -> str:
    """Who holds ``folder``'s lock, as its holder file says: ``pid 1234 on host, "framecast fit ..."``."""
    try:
        info = json.loads((folder / HOLDER_NAME).read_text())
        command = " ".join(str(info["command"]).split())
        if len(command) > 160:
            command = command[:157] + "..."
        return f'pid {int(info["pid"])} on {info["host"]}, "{command}"'
    except (OSError, ValueError, KeyError, TypeError):  # not written yet, or being replaced
        return "its pid not recorded yet"


def _write_holder(folder: Path) -> None:
    """Record this process in ``folder``'s holder file, whole or not at all (renamed into place;
    not fsynced: it describes a live process, nothing to keep across a power cut). A failed
    write leaves the lock held, and a refusal without a pid."""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line()}
    tmp = folder / f".{HOLDER_NAME}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(info))
        os.replace(tmp, folder / HOLDER_NAME)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def run_folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` (created if missing) as this process's run folder for the ``with`` block;
    another process holding it raises ``RunFolderInUse``, in one line naming that process.

    The lock is the operating system's (``filelock`` on ``<folder>/.lock``): the kernel drops it
    when its process exits or is killed, so a lock file left behind never blocks. The holder's pid,
    host and command line go to ``<folder>/.lock.holder.json`` for the refusal to name; it is
    removed on release. Within one process the lock is reentrant (a nested block on the same
    folder holds it once, released by the outermost). Under DDP only rank 0 locks (``RANK`` and
    the other launchers' rank variables say which process is which); the other ranks write into
    the folder rank 0 holds.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    if _other_rank():
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            lock = FileLock(str(key / LOCK_NAME), timeout=0)
            try:
                lock.acquire()
            except Timeout:
                raise RunFolderInUse(
                    f"{folder} is in use by another framecast process ({_holder(folder)}); "
                    f"wait for it or pick another --out_dir"
                ) from None
            except (OSError, NotImplementedError) as e:  # filelock 3.x: NotImplementedError without flock
                raise FramecastError(
                    f"cannot lock {folder / LOCK_NAME} ({getattr(e, 'strerror', None) or e}); pick an --out_dir on a "
                    f"file system that takes locks and that you can write to"
                ) from None
            _held[key] = entry = [lock, 1]
            _write_holder(key)
    try:
        yield
    finally:
        with _held_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                with contextlib.suppress(OSError):
                    (key / HOLDER_NAME).unlink(missing_ok=True)
                entry[0].release()
