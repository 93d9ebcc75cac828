"""A checkpoint knows its data: `framecast test --checkpoint` scores on what the model was
trained on, notes a change, refuses data the model cannot take, and names the data it scored."""

import json

import pytest
import yaml

from framecast import create_model
from framecast.checkpoint import read_checkpoint, save_model_checkpoint
from framecast.cli import main
from framecast.config import DataConfig, build_run_config, merge
from framecast.errors import FramecastError
from framecast.training.checks import check_model_fits
from framecast.training.runner import fit

DATA = {"image_size": 32, "test_size": 5}  # on top of tiny_overrides: 4 -> 3 frames


@pytest.fixture
def trained(tiny_overrides):
    """A tiny ConvLSTM trained on 32x32 Moving MNIST, 4 -> 3 frames (not the 64x64 10 -> 10 defaults)."""
    values = merge(tiny_overrides, {"data": DATA, "train": {"image_every_n_steps": 0}})
    return fit(build_run_config(values))["best_checkpoint"]


def run(args, capsys):
    # LPIPS and FVD off (their missing-weights lines) and no progress bar keep stderr to our notes
    code = main([*args, "--lpips", "off", "--fvd", "off", "--trainer.enable_progress_bar", "false"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_checkpoint_stores_the_resolved_run_config(trained):
    meta = read_checkpoint(trained)["framecast"]
    run = meta["run_config"]
    assert set(run) >= {"model", "data", "train", "trainer"} and meta["processes"] == 1
    assert run["data"]["image_size"] == 32 and run["data"]["n_context"] == 4 and run["data"]["n_future"] == 3
    assert run["model"]["name"] == "convlstm" and run["model"]["num_hidden"] == [8, 8]


def test_test_scores_on_the_checkpoints_data_by_default(trained, tmp_path, capsys):
    code, out, err = run(["test", "--checkpoint", trained], capsys)
    assert code == 0, err
    assert "note" not in err
    # beside the checkpoint: runs/x/checkpoints/best.ckpt -> runs/x/checkpoints/best.test/
    metrics = json.loads((tmp_path / "run" / "checkpoints" / "best.test" / "metrics.json").read_text())
    assert metrics["data"] == {
        "dataset": "moving_mnist",
        "root": None,
        "test_file": None,
        "split": "test",
        "image_size": 32,
        "channels": 1,
        "n_context": 4,
        "n_future": 3,
        "n_clips": 5,
        "seed": 0,
    }
    assert len(metrics["per_horizon"]["mse"]) == 3 and metrics["n_clips"] == 5
    assert metrics["data_config"]["image_size"] == 32 and metrics["checkpoint"] == trained
    assert "convlstm on moving_mnist test split, 5 clips of 32x32x1, 4 -> 3 frames" in out


def test_test_writes_beside_the_export_it_scores_or_where_out_says(trained, tmp_path, capsys):
    from framecast.checkpoint import export_safetensors

    export = export_safetensors(trained, tmp_path / "some" / "dir" / "model.safetensors")
    code, out, err = run(["test", "--checkpoint", str(export)], capsys)
    assert code == 0, err
    results = tmp_path / "some" / "dir" / "model.test"
    assert sorted(p.name for p in results.iterdir()) == ["metrics.json", "per_horizon.csv"]
    assert json.loads((results / "metrics.json").read_text())["checkpoint"] == str(export)
    assert f"wrote {results / 'metrics.json'}" in out
    assert not (tmp_path / "some" / "test").exists()  # not one level up, outside the export's folder

    code, out, err = run(["test", "--checkpoint", str(export), "--out", str(tmp_path / "elsewhere")], capsys)
    assert code == 0, err
    assert (tmp_path / "elsewhere" / "metrics.json").is_file()


def test_a_data_override_is_noted_in_one_line(trained, tmp_path, capsys):
    out_dir = tmp_path / "scores"
    code, _, err = run(["test", "--checkpoint", trained, "--data.image_size", "64", "--out", str(out_dir)], capsys)
    assert code == 0, err
    assert (
        err == "framecast: note: scoring on other data than the checkpoint was trained on (data.image_size: 32 -> 64)\n"
    )
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["data"]["image_size"] == 64 and metrics["data"]["n_future"] == 3
    # loading and batching options are no change of the data scored
    code, _, err = run(["test", "--checkpoint", trained, "--data.batch_size", "2", "--out", str(out_dir)], capsys)
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data.channels", "3"], "the model reads 1-channel frames but data.channels is 3; set --data.channels 1"),
        (["--data.image_size", "30"], "data.image_size 30 is not divisible by the model's patch_size 4"),
    ],
)
def test_data_the_model_cannot_take_is_refused(trained, tmp_path, capsys, args, message):
    code, _, err = run(["test", "--checkpoint", trained, "--out", str(tmp_path / "scores"), *args], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("framecast: error: ") and message in err
    assert not (tmp_path / "scores").exists()


def test_fixed_size_and_context_limits():
    ln = create_model("predrnn", num_hidden=[4], filter_size=3, image_size=32, layer_norm=True)
    check_model_fits(ln, DataConfig(image_size=32))
    with pytest.raises(FramecastError, match=r"takes 32x32 frames only .* set --data.image_size 32"):
        check_model_fits(ln, DataConfig(image_size=64))
    check_model_fits(create_model("predrnn", num_hidden=[4], filter_size=3, image_size=32), DataConfig())  # any size
    pytest.importorskip("timm")
    vit = create_model("maxvit", n_context=4, dim=32, depths=[1], window_size=2, grid_size=2)
    check_model_fits(vit, DataConfig(n_context=4))
    with pytest.raises(FramecastError, match=r"reads 4 context frames but data.n_context is 3"):
        check_model_fits(vit, DataConfig(n_context=3))


def test_a_checkpoint_without_data_uses_the_run_folders_config_or_the_defaults(trained, tmp_path, capsys):
    from framecast import load_checkpoint
    from framecast.config import to_dict

    loaded = load_checkpoint(trained)
    model = create_model("convlstm", **to_dict(loaded.config))  # weights and model config only
    model.load_state_dict(loaded.state_dict())
    converted = tmp_path / "run" / "checkpoints" / "converted.ckpt"  # as `framecast convert` writes it
    save_model_checkpoint(model, converted)
    assert "run_config" not in read_checkpoint(converted)["framecast"]
    code, _, err = run(["test", "--checkpoint", str(converted), "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert f"scoring on the data of {tmp_path / 'run' / 'config.yaml'}" in err and err.count("\n") == 1
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["data"]["image_size"] == 32

    alone = tmp_path / "alone.ckpt"
    save_model_checkpoint(model, alone)
    code, _, err = run(
        ["test", "--checkpoint", str(alone), "--data.test_size", "2", "--out", str(tmp_path / "b")], capsys
    )
    assert code == 0, err
    assert "scoring on the default data (built-in Moving MNIST 64x64, 10 -> 10)" in err and err.count("\n") == 1
    data = json.loads((tmp_path / "b" / "metrics.json").read_text())["data"]
    assert (data["image_size"], data["n_context"], data["n_future"], data["n_clips"]) == (64, 10, 10, 2)


def test_compare_results_name_the_data(tiny_overrides, tmp_path):
    from framecast.evaluation.compare import build_compare_config, compare

    cfg = build_compare_config(
        {
            "models": {"convlstm": {"num_hidden": [8], "filter_size": 3}},
            "data": {**tiny_overrides["data"], **DATA},
            "trainer": tiny_overrides["trainer"],
            "train": {"image_every_n_steps": 0},
            "out_dir": str(tmp_path / "report"),
            "n_examples": 2,
            "speed_batch": 2,
            "lpips": "off",
        }
    )
    compare(cfg, log=lambda *_: None)
    res = json.loads((tmp_path / "report" / "results.json").read_text())
    assert res["data"]["image_size"] == 32 and res["data"]["n_future"] == 3 and res["data"]["n_clips"] == 5
    assert res["results"]["convlstm"]["test"]["data"] == res["data"]
    saved = yaml.safe_load((tmp_path / "report" / "runs" / "convlstm" / "config.yaml").read_text())
    assert read_checkpoint(res["results"]["convlstm"]["checkpoint"])["framecast"]["run_config"] == saved
