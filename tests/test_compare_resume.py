"""A comparison killed with SIGKILL mid-training and started again: no model is trained twice,
the half-trained one continues from its last checkpoint, and the report is whole."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

CONFIG = {
    "models": {
        "convlstm": {"num_hidden": [4], "filter_size": 3, "patch_size": 8},
        "predrnn": {"num_hidden": [4], "filter_size": 3, "patch_size": 8},
    },
    "data": {"n_context": 3, "n_future": 2, "batch_size": 2, "train_size": 400, "val_size": 2, "test_size": 4},
    "train": {"image_every_n_steps": 0},
    "trainer": {"max_epochs": 1, "enable_progress_bar": False, "log_every_n_steps": 2},
    "n_examples": 2,
    "speed_batch": 2,
    "lpips": "off",
}


def _run(cfg_path: Path, out: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "framecast.cli", "compare", "--config", str(cfg_path), "--out", str(out)]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_killed_compare_resumes_without_retraining(tmp_path):
    cfg_path = tmp_path / "cmp.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "report"
    second_last = out / "runs" / "predrnn" / "checkpoints" / "last.ckpt"
    proc = _run(cfg_path, out, tmp_path / "first.log")
    deadline = time.time() + 240
    while not second_last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert second_last.exists(), (tmp_path / "first.log").read_text()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # mid-training of the second model
    proc.wait()
    assert not (out / "report.md").exists()
    assert (out / "runs" / "convlstm" / "result.json").is_file()

    proc = _run(cfg_path, out, tmp_path / "second.log")
    assert proc.wait(timeout=300) == 0
    log = (tmp_path / "second.log").read_text()
    assert "[convlstm] finished earlier, reusing" in log and "[convlstm] training" not in log
    assert "[predrnn] training (resuming)" in log
    report = (out / "report.md").read_text()
    assert "| convlstm |" in report and "| predrnn |" in report
    assert "Each of convlstm, predrnn was trained once" in report  # clip-level verdicts: not across training runs
    res = json.loads((out / "results.json").read_text())["results"]
    assert res["predrnn"]["steps"] == 200  # one epoch of 400 clips in batches of 2, across the kill
