"""End to end on tiny data: fit, resume, test, compare, export."""

import json

import torch

import framecast
from framecast.checkpoint import export_safetensors, load_safetensors
from framecast.cli import main
from framecast.compare import build_compare_config, compare
from framecast.config import build_run_config, merge
from framecast.runner import fit


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
    assert (out / "per_horizon.csv").read_text().splitlines()[0].startswith("horizon,")


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
    assert set(results) == {"copy_last", "blank", "convlstm", "convlstm_seq2seq"}
    report = (out / "report.md").read_text()
    for label in results:
        assert f"| {label} |" in report
    assert results["convlstm"]["flops_per_sample"] > 0 and results["convlstm"]["steps"] == 2
    # a second run reuses every finished model instead of training it again
    lines = []
    compare(cfg, log=lines.append)
    assert sum("reusing" in line for line in lines) == 4 and not any("training" in line for line in lines)


def test_export_safetensors_roundtrip(tiny_overrides, tmp_path, capsys):
    stats = fit(build_run_config(tiny_overrides))
    out = tmp_path / "model.safetensors"
    assert main(["export", stats["best_checkpoint"], "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "model.json").is_file()
    a = framecast.load_checkpoint(stats["best_checkpoint"])
    b = load_safetensors(out)
    x = torch.rand(1, 4, 1, 64, 64)
    torch.testing.assert_close(framecast.forecast(a, x, 2), framecast.forecast(b, x, 2))
    assert export_safetensors  # the Python API is public too


def test_a_fresh_run_in_the_same_folder_overwrites_best_and_last(tiny_overrides, tmp_path):
    cfg = build_run_config(tiny_overrides)
    fit(cfg)
    stats = fit(cfg, resume=False)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt", "last.prev.ckpt"] and stats["steps"] == 2
