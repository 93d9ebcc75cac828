"""A run folder belongs to one process: a second fit or compare on it refuses in one line naming
the first, a killed holder's lock file never blocks, and one process may nest its own locks."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from framecast import io as fio
from framecast.cli import main
from framecast.io import HOLDER_NAME, LOCK_NAME, RunFolderInUse, run_folder_lock

SRC = Path(__file__).resolve().parents[1] / "src"

HOLD = """
import sys
from framecast.io import run_folder_lock

with run_folder_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin, or kills this process
"""

TINY_FIT = [
    "--model.name", "convlstm", "--model.size", "test", "--trainer.max_steps", "1",
    "--data.train_size", "4", "--data.val_size", "2", "--data.test_size", "2", "--data.batch_size", "2",
    "--trainer.precision", "32", "--trainer.channels_last", "false", "--trainer.enable_progress_bar", "false",
]  # fmt: skip


@pytest.fixture
def holder(tmp_path):
    """Start another process holding a run folder's lock; yields (process, folder)."""
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    for name in fio.RANK_VARIABLES:
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc, folder
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_second_process_is_refused_in_one_line_naming_the_first(holder, capsys, monkeypatch):
    proc, folder = holder
    with pytest.raises(RunFolderInUse) as e:
        with run_folder_lock(folder):
            pass
    msg = str(e.value)
    assert msg == (
        f"{folder} is in use by another framecast process (pid {proc.pid} on {socket.gethostname()}, "
        f'"hold.py {folder}"); wait for it or pick another --out_dir'
    )

    # the commands refuse at their entry, in one line, and write nothing into the folder
    assert main(["fit", *TINY_FIT, "--out_dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is in use by another framecast process (pid {proc.pid} " in err, err
    assert main(["compare", "--models", "convlstm", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"(pid {proc.pid} " in err, err
    assert sorted(p.name for p in folder.iterdir()) == sorted([LOCK_NAME, HOLDER_NAME])

    # a DDP rank other than 0 takes no lock: rank 0 holds the folder for it
    monkeypatch.setenv("LOCAL_RANK", "1")
    with run_folder_lock(folder):
        pass
    monkeypatch.delenv("LOCAL_RANK")

    # released when the holder ends
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert not (folder / HOLDER_NAME).exists()
    with run_folder_lock(folder):
        assert json.loads((folder / HOLDER_NAME).read_text())["pid"] == os.getpid()


def test_a_killed_holder_leaves_a_lock_file_that_does_not_block(holder):
    proc, folder = holder
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    stale = json.loads((folder / HOLDER_NAME).read_text())  # the killed process could not clean up
    assert stale["pid"] == proc.pid
    with run_folder_lock(folder):
        assert json.loads((folder / HOLDER_NAME).read_text())["pid"] == os.getpid()
    assert not (folder / HOLDER_NAME).exists()


def test_one_process_nests_its_own_locks(tmp_path):
    run = tmp_path / "report"
    with run_folder_lock(run):
        with run_folder_lock(run):  # reentrant: the same folder again
            with run_folder_lock(run / "runs" / "convlstm"):  # compare's folder, then a model's fit
                assert (run / "runs" / "convlstm" / HOLDER_NAME).is_file()
            assert not (run / "runs" / "convlstm" / HOLDER_NAME).exists()
        assert (run / HOLDER_NAME).is_file()  # the inner block left the outer one's lock held
        assert fio._held[run.resolve()][1] == 1
    assert not (run / HOLDER_NAME).exists() and run.resolve() not in fio._held
