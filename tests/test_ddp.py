"""Lightning's DDP on the CPU (gloo): two processes with batch B each train to the weights of one
process with batch 2B, and test metrics are gathered from both ranks (every clip scored once,
an uneven split included), per-clip scores in the test split's order."""

import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from framecast.checkpoint import read_checkpoint

CONFIG = {
    "model": {"name": "predrnn_v2", "num_hidden": [8], "filter_size": 3, "patch_size": 4},
    "data": {"n_context": 3, "n_future": 3, "train_size": 32, "val_size": 3, "test_size": 5},
    "train": {"lr": 1e-2, "image_every_n_steps": 0, "sampling": "reverse", "reverse_input": True},
    # float64: in float32 another CPU's kernels sum in another order, and Adam turns gradient
    # differences of ~1e-7 on near-zero gradients into lr-sized steps (seen: 1.8e-5 on one of
    # 8,064 weights after 8 steps at lr 1e-2). float64 rounding (~1e-16) stays far below Adam's
    # eps (1e-8), so "same global batch, same weights" holds to 1e-10 on any CPU.
    "trainer": {
        "max_epochs": -1,
        "max_steps": 8,
        "val_check_interval": 2,
        "enable_progress_bar": False,
        "log_every_n_steps": 1,
        "accelerator": "cpu",
        "precision": "64",
    },
}


def _cli(args: list[str], log: Path) -> None:
    cmd = [sys.executable, "-m", "framecast.cli", *args]
    proc = subprocess.run(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    runs = {
        "one": ["--data.batch_size", "4", "--trainer.devices", "1"],
        "ddp": ["--data.batch_size", "2", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
    }
    for name, extra in runs.items():
        _cli(["fit", "--config", str(cfg), "--out_dir", str(tmp_path / name), *extra], tmp_path / f"{name}.log")
    assert "GLOBAL_RANK: 1" in (tmp_path / "ddp.log").read_text() or "Rank 1" in (tmp_path / "ddp.log").read_text()

    one, ddp = (read_checkpoint(tmp_path / n / "checkpoints" / "last.ckpt") for n in runs)
    assert one["global_step"] == ddp["global_step"] == 8  # reverse_input: two optimiser steps per batch
    # float64 (see CONFIG): the two runs differ only in summation order, ~1e-16 per step (6e-16
    # after 8 steps measured here); any real difference (a clip dropped, a gradient not averaged,
    # another mask) is orders of magnitude larger than this tolerance
    for key, value in one["state_dict"].items():
        assert value.dtype == ddp["state_dict"][key].dtype == torch.float64, key
        torch.testing.assert_close(ddp["state_dict"][key], value, rtol=1e-8, atol=1e-10, msg=key)

    scores = {}
    for name, extra in runs.items():
        out = tmp_path / f"test_{name}"
        ckpt = tmp_path / "one" / "checkpoints" / "last.ckpt"
        _cli(
            ["test", "--checkpoint", str(ckpt), "--config", str(cfg), "--out", str(out), *extra],
            out.with_suffix(".log"),
        )
        scores[name] = json.loads((out / "metrics.json").read_text())
    assert scores["ddp"]["n_clips"] == scores["one"]["n_clips"] == 5
    for metric, value in scores["one"]["mean"].items():
        assert abs(scores["ddp"]["mean"][metric] - value) <= 1e-4 * max(1.0, abs(value)), metric
    # per-clip scores (what intervals and paired tests resample) come back in the test split's
    # order from two processes as from one, so models tested either way pair clip by clip
    for metric, clips in scores["one"]["per_clip"].items():
        assert len(scores["ddp"]["per_clip"][metric]) == len(clips) == 5, metric
        for a, b in zip(scores["ddp"]["per_clip"][metric], clips):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), metric
