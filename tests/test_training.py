"""End to end on tiny data: fit, resume, test, compare, export."""

import json

import numpy as np
import torch

import framecast
from framecast.checkpoint import export_safetensors, load_safetensors
from framecast.cli import main
from framecast.config import build_run_config, merge
from framecast.evaluation.compare import build_compare_config, compare
from framecast.training.runner import fit


def test_fit_writes_checkpoints_that_load_and_forecast(tiny_overrides, tmp_path):
    cfg = build_run_config(tiny_overrides)
    stats = fit(cfg)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert stats["steps"] == 2 and stats["epochs"] == 1
    assert list((run / "tb").glob("events.out.tfevents.*"))
    model = framecast.load_checkpoint(stats["best_checkpoint"])
    assert model.model_name == "convlstm" and model.config.num_hidden == (8, 8)
    out = framecast.forecast(model, torch.rand(1, 4, 1, 64, 64), 5)
    assert out.shape == (1, 5, 1, 64, 64)
    # the resolved config is saved beside the checkpoint and trains the same model again
    saved = (run / "config.yaml").read_text()
    assert "num_hidden" in saved and "batch_size: 4" in saved


def test_resume_continues_from_last_checkpoint(tiny_overrides):
    first = fit(build_run_config(tiny_overrides))
    more = build_run_config(merge(tiny_overrides, {"trainer": {"max_epochs": 2}}))
    second = fit(more, resume=True)
    assert first["steps"] == 2 and second["steps"] == 4 and second["epochs"] == 2


def test_a_resumed_run_keeps_its_metric_log_up_to_the_checkpoint(tiny_overrides, tmp_path):
    """Lightning's CSV logger deleted metrics.csv when a run resumed; rows a killed run logged
    after its last checkpoint are dropped (the resumed run logs those steps again)."""
    import csv

    fit(build_run_config(tiny_overrides))
    log = tmp_path / "run" / "csv" / "metrics.csv"
    before = list(csv.DictReader(log.open(newline="")))
    assert before and all(float(r["step"]) <= 2 for r in before)
    keys = list(before[0])
    with log.open("a", newline="") as f:  # what a run killed after its checkpoint had logged
        csv.DictWriter(f, fieldnames=keys).writerow({k: ("99" if k == "step" else "") for k in keys})
    fit(build_run_config(merge(tiny_overrides, {"trainer": {"max_epochs": 2}})), resume=True)
    after = list(csv.DictReader(log.open(newline="")))
    assert [{k: r[k] for k in keys} for r in after[: len(before)]] == before  # the first run's rows first
    steps = [float(r["step"]) for r in after]
    assert 99 not in steps and max(steps) > max(float(r["step"]) for r in before)
    fit(build_run_config(tiny_overrides), resume=False)  # --no-resume starts the log over
    fresh = list(csv.DictReader(log.open(newline="")))
    assert len(fresh) == len(before)


def test_cli_test_writes_metrics_and_per_horizon(tiny_overrides, tmp_path, capsys):
    stats = fit(build_run_config(tiny_overrides))
    out = tmp_path / "scores"
    code = main(
        [
            "test",
            "--checkpoint",
            stats["best_checkpoint"],
            "--data.n_context",
            "4",
            "--data.n_future",
            "3",
            "--data.test_size",
            "4",
            "--trainer.enable_progress_bar",
            "false",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["mean"]) >= {"mse", "mae", "mse_pixel", "mae_pixel", "ssim", "psnr"}
    assert len(metrics["per_horizon"]["mse"]) == 3 and metrics["n_clips"] == 4
    assert (out / "per_horizon.csv").read_text().splitlines()[0].startswith("horizon,mse,mse_lo,mse_hi,")
    lo, hi = metrics["ci95"]["ssim"]  # 95% bootstrap interval over the test clips, its seed recorded
    assert lo <= metrics["mean"]["ssim"] <= hi and metrics["bootstrap"]["seed"] == 0
    assert len(metrics["per_clip"]["mse"]) == 4 and "95% intervals" in capsys.readouterr().out


def test_compare_writes_report_and_skips_finished_models(tiny_overrides, tmp_path):
    values = {
        "models": {
            "convlstm": {"num_hidden": [8], "filter_size": 3},
            "convlstm_seq2seq": {"hidden": 8, "patch_size": 4},
        },
        "data": tiny_overrides["data"],
        "trainer": tiny_overrides["trainer"],
        "out_dir": str(tmp_path / "report"),
        "n_examples": 2,
        "speed_batch": 2,
    }
    cfg = build_compare_config(values)
    results = compare(cfg, log=lambda *_: None)
    out = tmp_path / "report"
    for name in (
        "report.md",
        "results.json",
        "results.csv",
        "mse_per_horizon.png",
        "ssim_per_horizon.png",
        "loss_vs_time.png",
        "examples.gif",
        "examples.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert set(results) == {"copy_last", "blank", "linear", "flow", "convlstm", "convlstm_seq2seq"}
    report = (out / "report.md").read_text()
    for label in results:
        assert f"| {label} |" in report
    assert results["convlstm"]["flops_per_sample"] > 0 and results["convlstm"]["steps"] == 2
    # every score carries a 95% bootstrap interval over the test clips, its seed recorded, and
    # every pair of models a paired test on the same clips
    saved = json.loads((out / "results.json").read_text())
    assert saved["uncertainty"]["seed"] == 0 and saved["uncertainty"]["n_boot"] == 1000
    for res in saved["results"].values():
        test = res["test"]
        lo, hi = test["ci95"]["mse"]
        assert lo <= test["mean"]["mse"] <= hi and len(test["per_clip"]["mse"]) == test["n_clips"] == 6
        assert len(test["per_horizon_ci95"]["ssim"]) == 3
    assert len(saved["uncertainty"]["pairwise"]["mse"]) == 15  # 6 models: every pair once
    assert set(saved["uncertainty"]["summary"]) >= {"mse", "ssim"}
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[header.index("mse") + 1 : header.index("mse") + 3] == ["mse_lo", "mse_hi"]
    assert "MSE [95% interval]" in report and "## Which MSE differences hold" in report
    assert "seed 0" in report and "- mse: " in report
    # a second run reuses every finished model instead of training it again
    lines = []
    compare(cfg, log=lines.append)
    assert sum("reusing" in line for line in lines) == 6 and not any("training" in line for line in lines)


def test_an_export_comes_back_wherever_a_checkpoint_goes(tiny_overrides, tmp_path, capsys):
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import save_file

    stats = fit(build_run_config(tiny_overrides))
    out = tmp_path / "model.safetensors"
    assert main(["export", stats["best_checkpoint"], "--out", str(out)]) == 0
    a = framecast.load_checkpoint(stats["best_checkpoint"])
    assert a.checkpoint_meta["n_context"] == 4 and a.checkpoint_meta["n_future"] == 3
    # the checkpoint's whole framecast metadata is in the safetensors header, and in the side JSON
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["framecast"]) == a.checkpoint_meta
    assert json.loads((tmp_path / "model.json").read_text()) == a.checkpoint_meta
    # load_checkpoint takes the export, recognised by its content under any name
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(out.read_bytes())
    x = torch.rand(1, 4, 1, 64, 64)
    for path in (out, renamed):
        b = framecast.load_checkpoint(path)
        assert b.model_name == "convlstm" and b.config == a.config and not b.training
        assert b.checkpoint_meta == a.checkpoint_meta
        torch.testing.assert_close(framecast.forecast(b, x, 2), framecast.forecast(a, x, 2), rtol=0, atol=0)
    torch.testing.assert_close(framecast.forecast(load_safetensors(out), x, 2), framecast.forecast(a, x, 2))
    # exporting the export gives the same header and tensors: nothing is lost on the way
    again = export_safetensors(renamed, tmp_path / "again.safetensors")
    with safe_open(str(out), framework="pt") as f, safe_open(str(again), framework="pt") as g:
        assert f.metadata() == g.metadata() and f.keys() == g.keys()
        assert all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())
    # every command that takes a checkpoint takes the export
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(7):
        img = np.zeros((64, 64), np.uint8)
        img[20:30, 5 + 6 * t : 15 + 6 * t] = 255
        Image.fromarray(img).save(frames / f"{t}.png")
    capsys.readouterr()
    assert main(["forecast", str(frames), "--checkpoint", str(out), "--out", str(tmp_path / "f.gif")]) == 0
    printed = capsys.readouterr().out
    assert "frames 0..3" in printed and "3 predicted, 3 with truth" in printed  # the horizons came along
    scores = tmp_path / "scores"
    small = ["--data.n_context", "4", "--data.n_future", "3", "--data.test_size", "2", "--out", str(scores)]
    assert main(["test", "--checkpoint", str(renamed), *small, "--trainer.enable_progress_bar", "false"]) == 0
    assert json.loads((scores / "metrics.json").read_text())["model"] == "convlstm"
    # a safetensors file that framecast did not write is one clear line
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"not weights")
    capsys.readouterr()
    for name, message in (
        ("foreign", "without framecast metadata"),
        ("broken", "not a framecast checkpoint (found: a text file)"),
    ):
        assert main(["forecast", str(frames), "--checkpoint", str(tmp_path / f"{name}.safetensors")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_a_fresh_run_in_the_same_folder_overwrites_best_and_last(tiny_overrides, tmp_path):
    cfg = build_run_config(tiny_overrides)
    fit(cfg)
    stats = fit(cfg, resume=False)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt", "last.prev.ckpt"] and stats["steps"] == 2
