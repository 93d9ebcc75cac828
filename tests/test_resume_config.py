"""Resuming checks the config: a run refuses to continue from a checkpoint trained with another
config (naming the keys, before config.yaml is touched), and resumes when only harmless keys
(the budget, logging, hardware) changed, or when the checkpoint predates stored configs."""

import json

import pytest
import torch
import yaml

from framecast.changes import RESUME_SAFE_KEYS, config_changes, flatten
from framecast.checkpoint import read_checkpoint
from framecast.cli import main
from framecast.config import RunConfig, to_dict


@pytest.fixture
def run_dir(tiny_overrides, tmp_path):
    """A finished 2-step run, and the config file it was trained with."""
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(yaml.safe_dump({**tiny_overrides, "train": {"image_every_n_steps": 0}}))
    assert main(["fit", "--config", str(cfg)]) == 0
    return tmp_path / "run", cfg


def _fit(cfg, capsys, *extra):
    code = main(["fit", "--config", str(cfg), *extra])
    return code, capsys.readouterr().err


def test_a_changed_lr_is_refused_before_config_yaml_is_rewritten(run_dir, capsys):
    run, cfg = run_dir
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in (run / "config.yaml", run / "checkpoints" / "last.ckpt")}
    code, err = _fit(cfg, capsys, "--train.lr", "0.002", "--trainer.max_epochs", "2")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("framecast: error: ")
    assert "was trained with another config (train.lr: 0.001 -> 0.002)" in err  # max_epochs is harmless
    assert str(run / "config.yaml") in err and "--out_dir" in err and "--no-resume" in err
    assert {p.name: p.read_bytes() for p in (run / "config.yaml", run / "checkpoints" / "last.ckpt")} == before


def test_several_changed_keys_are_all_named(run_dir, capsys):
    _, cfg = run_dir
    code, err = _fit(cfg, capsys, "--model.num_hidden", "[4]", "--train.lr_schedule", "onecycle", "--data.seed", "3")
    assert code == 2
    for change in ("data.seed: 0 -> 3", "train.lr_schedule: none -> onecycle", "model.num_hidden: [8, 8] -> [4]"):
        assert change in err


def test_a_harmless_change_resumes(run_dir, capsys):
    run, cfg = run_dir
    extra = ["--trainer.max_epochs", "-1", "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "2"]
    code, err = _fit(cfg, capsys, *extra)
    assert code == 0, err
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3  # continued from step 2
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_steps"] == 3


def test_no_resume_starts_over_with_the_new_config(run_dir, capsys):
    run, cfg = run_dir
    code, err = _fit(cfg, capsys, "--train.lr", "0.002", "--no-resume")
    assert code == 0, err
    assert json.loads((run / "train_stats.json").read_text())["steps"] == 2
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["framecast"]["run_config"]["train"]["lr"] == 0.002


def test_a_checkpoint_without_a_stored_config_resumes_with_a_warning(run_dir, capsys):
    run, cfg = run_dir
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["framecast"]["run_config"]  # as written before checkpoints stored their config
    torch.save(ckpt, last)
    code, err = _fit(cfg, capsys, "--train.lr", "0.002", "--trainer.max_epochs", "2")
    assert code == 0, err
    assert "does not store the config it was trained with (an older checkpoint); resuming unchecked" in err
    assert read_checkpoint(last)["global_step"] == 4


def test_compare_refuses_a_half_trained_model_with_another_config(tiny_overrides, tmp_path):
    from framecast.errors import FramecastError
    from framecast.evaluation.compare import build_compare_config, compare, run_config
    from framecast.training.runner import fit

    values = {
        "models": {"convlstm": {"num_hidden": [8], "filter_size": 3}},
        "data": tiny_overrides["data"],
        "trainer": tiny_overrides["trainer"],
        "train": {"image_every_n_steps": 0},
        "out_dir": str(tmp_path / "report"),
        "n_examples": 2,
        "speed_batch": 2,
        "lpips": "off",
    }
    fit(run_config(build_compare_config(values), "convlstm"))  # trained, but no result.json: half done
    values["models"]["convlstm"]["train"] = {"lr": 0.002}
    with pytest.raises(FramecastError, match=r"half-trained 'convlstm' trained with another config \(train.lr: 0.001"):
        compare(build_compare_config(values), log=lambda *_: None)


def test_the_global_batch_is_compared_not_the_batch_per_process():
    old = to_dict(RunConfig())
    new = to_dict(RunConfig())
    new["data"]["batch_size"] = 8
    new["trainer"]["devices"] = 2
    assert config_changes(old, new, (1, 2)) == []  # 16 x 1 process = 8 x 2 processes
    assert config_changes(old, new, (1, 1)) == ["data.batch_size: 16 -> 8"]
    assert config_changes(old, old, (1, 2)) == ["global batch (data.batch_size x processes): 16 x 1 -> 16 x 2"]


def test_keys_added_after_a_checkpoint_count_as_their_defaults():
    new = to_dict(RunConfig())
    old = to_dict(RunConfig())
    del old["train"]["bce_weight"], old["model"]
    old["model"] = {"name": "convlstm"}
    assert config_changes(old, new) == []
    new["train"]["bce_weight"] = 0.5
    assert config_changes(old, new) == ["train.bce_weight: 0.0 -> 0.5"]


def test_every_harmless_key_is_a_config_key():
    from framecast.registry import model_config

    keys = set(flatten(to_dict(RunConfig()))) | {f"model.{k}" for k in to_dict(model_config("predrnn"))}
    assert set(RESUME_SAFE_KEYS) <= keys, set(RESUME_SAFE_KEYS) - keys
