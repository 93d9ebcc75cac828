"""Atomic writes behave like ordinary ones where it matters: the file mode follows the umask (or
the replaced file), the rename is fsynced in its directory, and temporary files left by a killed
writer are cleaned up by the next write of the same target."""

import os
import stat
import time

import pytest

from framecast import io as fio
from framecast.io import atomic_write, atomic_write_bytes, atomic_write_text, previous_path


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_new_file_gets_the_mode_of_an_ordinary_write(tmp_path, umask):
    umask(0o022)
    atomic_write_text(tmp_path / "report.md", "# report\n")
    with open(tmp_path / "plain.md", "w") as f:
        f.write("# report\n")
    assert _mode(tmp_path / "report.md") == 0o644 == _mode(tmp_path / "plain.md")

    umask(0o077)
    atomic_write_bytes(tmp_path / "model.ckpt", b"weights")
    assert _mode(tmp_path / "model.ckpt") == 0o600
    umask(0o002)
    atomic_write_text(tmp_path / "sub" / "config.yaml", "a: 1\n")
    assert _mode(tmp_path / "sub" / "config.yaml") == 0o664


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "metrics.json"
    target.write_text("{}")
    os.chmod(target, 0o640)
    atomic_write_text(target, '{"mse": 1}')
    assert target.read_text() == '{"mse": 1}' and _mode(target) == 0o640

    last = tmp_path / "last.ckpt"
    atomic_write_bytes(last, b"one")
    os.chmod(last, 0o660)
    atomic_write(last, lambda f: f.write(b"two"), keep_previous=True)
    assert _mode(last) == 0o660 and _mode(previous_path(last)) == 0o660
    assert previous_path(last).read_bytes() == b"one"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux /proc")
def test_the_umask_is_read_with_and_without_proc(umask, monkeypatch):
    umask(0o027)
    assert fio._umask() == 0o027
    real_open = open

    def no_proc(file, *args, **kwargs):
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_proc)
    assert fio._umask() == 0o027
    monkeypatch.undo()
    assert fio._umask() == 0o027  # the fallback put it back


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        synced.append((stat.S_ISDIR(os.fstat(fd).st_mode), os.path.exists(tmp_path / "report.md")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(tmp_path / "report.md", "x")
    # the file's data first (before it is in place), then its directory (after the rename)
    assert synced == [(False, False), (True, True)]


def test_a_directory_fsync_that_fails_does_not_fail_the_write(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")  # as on file systems that can't sync a directory
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(tmp_path / "report.md", "x")
    assert (tmp_path / "report.md").read_text() == "x"


def test_stale_temporary_files_of_the_target_are_removed(tmp_path):
    old = time.time() - 3600
    stale = tmp_path / ".last.ckpt.k3j_9x2a.tmp"  # left by a writer killed an hour ago
    fresh = tmp_path / ".last.ckpt.ab12cd34.tmp"  # a writer still at work
    other = tmp_path / ".best.ckpt.q1w2e3r4.tmp"  # another target's
    longer = tmp_path / ".last.ckpt.x.q1w2e3r4.tmp"  # the target "last.ckpt.x"
    mine = tmp_path / ".last.ckpt.notes"  # not a temporary file at all
    for p in (stale, fresh, other, longer, mine):
        p.write_bytes(b"partial")
    for p in (stale, other, longer, mine):
        os.utime(p, (old, old))

    atomic_write_bytes(tmp_path / "last.ckpt", b"complete")
    assert (tmp_path / "last.ckpt").read_bytes() == b"complete"
    assert not stale.exists()
    assert fresh.exists() and other.exists() and longer.exists() and mine.exists()
    leftovers = sorted(p.name for p in tmp_path.glob(".last.ckpt.*.tmp"))
    assert leftovers == [fresh.name, longer.name]  # the write left no temporary file of its own


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    def boom(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "report.md", boom)
    assert list(tmp_path.iterdir()) == []
