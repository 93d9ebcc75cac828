"""FVD in the test pass, `framecast test` and the comparison report: a random-init I3D saved as
a weights file stands in for the Kinetics-400 weights, which are not on this machine."""

import csv
import json

import pytest
import torch

from framecast.cli import main
from framecast.evaluation.compare import build_compare_config, compare
from framecast.evaluation.i3d import I3D

DATA = {"n_context": 4, "n_future": 9, "batch_size": 4, "train_size": 8, "val_size": 4, "test_size": 6}


@pytest.fixture
def i3d_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = I3D()
    path = tmp_path / "i3d.pt"
    torch.save(net.state_dict(), path)
    monkeypatch.setenv("FRAMECAST_I3D", str(path))
    return path


def test_compare_scores_fvd_with_an_interval_and_a_paired_verdict(i3d_weights, tmp_path):
    values = {
        "models": {"convlstm": {"num_hidden": [8], "filter_size": 3}},
        "baselines": ["copy_last", "blank"],
        "data": DATA,
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "log_every_n_steps": 1},
        "train": {"image_every_n_steps": 0},
        "out_dir": str(tmp_path / "report"),
        "n_examples": 2,
        "speed_batch": 2,
        "lpips": "off",
        "fvd": "on",
    }
    compare(build_compare_config(values), log=lambda *_: None)
    out = tmp_path / "report"
    saved = json.loads((out / "results.json").read_text())
    fvds = {}
    for label, res in saved["results"].items():
        test = res["test"]
        lo, hi = test["ci95"]["fvd"]
        assert lo <= test["mean"]["fvd"] <= hi, label
        assert test["fvd"]["clips"] == 6 and (out / "runs" / label / "fvd_features.npz").is_file()
        fvds[label] = test["mean"]["fvd"]
    assert fvds["blank"] != fvds["copy_last"] and all(v >= 0 for v in fvds.values())
    assert saved["uncertainty"]["summary"]["fvd"].startswith("fvd: ")
    assert {p["a"] for p in saved["uncertainty"]["pairwise"]["fvd"]} == {min(fvds, key=fvds.get)}
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert all(float(r["fvd_lo"]) <= float(r["fvd"]) <= float(r["fvd_hi"]) for r in rows)
    report = (out / "report.md").read_text()
    assert "FVD [95% interval]" in report and "Fréchet distance between I3D features" in report

    # off on the finished comparison: not shown, though scored before
    compare(build_compare_config({**values, "fvd": "off"}), log=lambda *_: None)
    off = json.loads((out / "results.json").read_text())
    assert (
        all("fvd" not in r["test"]["mean"] for r in off["results"].values())
        and "fvd" not in off["uncertainty"]["summary"]
    )
    assert "FVD" not in (out / "report.md").read_text()

    # switched off, then on again: the finished runs are tested again for FVD, not retrained
    lines = []
    compare(build_compare_config({**values, "fvd": "off", "out_dir": str(tmp_path / "other")}), log=lines.append)
    assert (
        "fvd" not in json.loads((tmp_path / "other" / "results.json").read_text())["results"]["blank"]["test"]["mean"]
    )
    lines = []
    compare(build_compare_config({**values, "out_dir": str(tmp_path / "other")}), log=lines.append)
    assert sum("testing again (FVD is now scored)" in line for line in lines) == 3, lines
    assert not any("training" in line for line in lines)


def test_framecast_test_fvd_on_without_weights_or_frames_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRAMECAST_I3D", str(tmp_path / "missing.pt"))
    args = ["test", "--model.name", "copy_last", "--data.test_size", "4", "--data.n_context", "4"]
    assert main([*args, "--data.n_future", "9", "--out", str(tmp_path / "a"), "--fvd", "on"]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "FRAMECAST_I3D" in err and "Traceback" not in err
    assert main([*args, "--data.n_future", "3", "--out", str(tmp_path / "b"), "--fvd", "on"]) == 2
    assert "FVD needs at least 9 predicted frames" in capsys.readouterr().err
    # auto: one line says why, every other metric is scored
    assert main([*args, "--data.n_future", "9", "--out", str(tmp_path / "c")]) == 0
    assert "FVD skipped" in capsys.readouterr().err
    assert "fvd" not in json.loads((tmp_path / "c" / "metrics.json").read_text())["mean"]


def test_framecast_test_scores_fvd_with_weights(i3d_weights, tmp_path, capsys):
    args = ["test", "--model.name", "copy_last", "--data.test_size", "4", "--data.n_context", "4"]
    assert main([*args, "--data.n_future", "9", "--out", str(tmp_path), "--fvd", "on"]) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    lo, hi = saved["ci95"]["fvd"]
    assert lo <= saved["mean"]["fvd"] <= hi and saved["fvd"]["clips"] == 4
    assert "centred on the value)" in capsys.readouterr().out  # its own line: 200 resamples, not 1,000


def test_fvd_refuses_what_it_cannot_score_in_one_line(i3d_weights):
    from framecast.errors import FramecastError
    from framecast.evaluation.fvd import make_fvd
    from framecast.training.testing import fvd_scores

    with pytest.raises(FramecastError, match="not gridded arrays; set fvd off"):
        make_fvd("on", 10, arrays=True)
    assert make_fvd("auto", 10, arrays=True) is None  # arrays: silently not scored
    res = {"mean": {}, "ci95": {}}
    one = torch.zeros(1, 400, dtype=torch.float64)
    assert fvd_scores(one, one, {}, res, None) == {"fvd": {"skipped": "FVD needs at least 2 test clips, got 1"}}
    assert res == {"mean": {}, "ci95": {}}
