"""A seeded training run killed with SIGKILL at random moments, ten times, then resumed, ends
with exactly the weights of the uninterrupted run (CPU, fp32), and no checkpoint it left was
ever unreadable. The run crosses epoch boundaries, uses PredRNN's scheduled sampling (masks
drawn per iteration) and a one-cycle learning rate, so data order, sampling and schedule all
have to resume exactly."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from framecast.checkpoint import read_checkpoint

CONFIG = {
    "model": {"name": "predrnn", "num_hidden": [8], "filter_size": 3, "patch_size": 4},
    "data": {"n_context": 3, "n_future": 3, "batch_size": 2, "train_size": 40, "val_size": 2, "test_size": 2},
    "train": {
        "lr": 3e-3,
        "lr_schedule": "onecycle",
        "sampling": "scheduled",
        "sampling_changing_rate": 0.004,
        "sampling_stop_iter": 200,
        "image_every_n_steps": 0,
    },
    "trainer": {
        "max_epochs": -1,
        "max_steps": 120,
        "val_check_interval": 15,
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
        "checkpoint_every_n_steps": 1,
    },
}
KILLS = 10


def _fit(cfg: Path, out: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "framecast.cli", "fit", "--config", str(cfg), "--out_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _step(path: Path) -> int:
    try:
        return read_checkpoint(path)["global_step"]
    except Exception:  # not written yet
        return -1


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


def test_killed_ten_times_ends_with_the_uninterrupted_weights(tmp_path):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    log = tmp_path / "fit.log"

    assert _fit(cfg, tmp_path / "ref", log).wait(timeout=300) == 0, log.read_text()[-3000:]

    # Ten kills, each a random moment after the run passes a random step (checkpoints are written
    # every step, so some kills land inside a checkpoint write).
    run, rng = tmp_path / "killed", random.Random(0)
    last = run / "checkpoints" / "last.ckpt"
    for target in sorted(rng.sample(range(5, 100), KILLS)):
        proc = _fit(cfg, run, log)
        while proc.poll() is None and _step(last) < target:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.1))
        assert proc.poll() is None, "the run ended before it was killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for path in (last, last.with_name("last.prev.ckpt")):  # never half-written
            assert "loops" in read_checkpoint(path)
    assert _fit(cfg, run, log).wait(timeout=300) == 0, log.read_text()[-3000:]
    assert log.read_text().count("Restoring states from the checkpoint") >= KILLS // 2  # some kills hit start-up

    ref, got = _weights(tmp_path / "ref"), _weights(run)
    assert ref.keys() == got.keys()
    # Bit-exact on purpose: both runs are one process each on this machine, with the same batch
    # shapes and OMP_NUM_THREADS=1, so every step runs the same kernels in the same order; any
    # difference means some state (data order, masks, schedule, optimiser) was not resumed. Unlike
    # the DDP test this compares no two summation orders, so it holds on any CPU.
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert read_checkpoint(last)["global_step"] == 120
