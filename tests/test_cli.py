"""Bad input through the CLI: one line, non-zero exit, nothing written."""

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framecast import create_model, forecast
from framecast.cli import main
from framecast.errors import ConfigError, FramecastError, InputError


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "--model.name", "convlsmt"], "unknown model 'convlsmt' (did you mean 'convlstm'?)"),
        (["fit", "--data.batchsize", "8"], "unknown config key 'data.batchsize' (did you mean 'data.batch_size'?)"),
        (["fit", "--data.batch_size", "eight"], "data.batch_size: expected an integer"),
        (["fit", "--data.batch_size", "0"], "data.batch_size must be at least 1"),
        (["fit", "--config", "no/such/file.yaml"], "config file not found: no/such/file.yaml"),
        (["fit", "--data.mnist_path", "no/such/dir"], "data.mnist_path: folder not found"),
        (["fit", "--model.name", "convlstm", "--model.patch_size", "5"], "patch_size 5 does not divide image_size 64"),
        (["compare", "--models", "convlstm,nope"], "unknown model 'nope'"),
        (["test", "--checkpoint", "no/such.ckpt"], "checkpoint not found"),
        (["fit", "--train.lr", "-1"], "train.lr must be positive, got -1"),
        (
            ["fit", "--resume", "--out_dir", "runs/none"],
            "--resume: no checkpoint to resume from in runs/none/checkpoints",
        ),
        (["fit", "--data.n_context", "0"], "data.n_context must be at least 1"),
        (["fit", "--trainer.precision", "15"], "trainer.precision must be auto, 32, 32-true, bf16-mixed, bf16-true,"),
        (
            ["fit", "--train.lr_schedule", "onecyle"],
            "train.lr_schedule must be none or onecycle, got 'onecyle' (did you mean 'onecycle'?)",
        ),
        (["fit", "--data.batch_size", "true"], "data.batch_size: expected an integer, got true"),
        (["fit", "--train.lr", "fast"], "train.lr: expected a number, got 'fast'"),
        (
            ["fit", "--data.split_fractions", "[0.9, 0.1]"],
            "data.split_fractions: expected a list of 3 numbers, got [0.9, 0.1]",
        ),
        (
            ["fit", "--traner.max_epochs", "1"],
            "unknown config key 'traner' (did you mean 'trainer'?); valid keys: model,",
        ),
        (
            ["fit", "--model.name", "predrnn", "--model.num_hidden", "[8, x]"],
            "model.num_hidden[1]: expected an integer, got 'x'",
        ),
        (
            ["fit", "--model.name", "predrnn", "--model.filtersize", "3"],
            "unknown config key 'model.filtersize' (did you mean 'model.filter_size'?)",
        ),
        (["fit", "--trainer.checkpoint_every_n_steps", "0"], "trainer.checkpoint_every_n_steps must be at least 1"),
        (["fit", "--train.on_nonfinite", "ignore"], "train.on_nonfinite must be stop or skip"),
        (["fit", "--model.name", "convlstm", "--model.num_hidden", "[8, 0]"], "num_hidden"),
        (["fit", "--model.name", "maxvit", "--model.window_size", "3"], "sizes that fit: [1, 2, 4, 8, 16]"),
        (
            ["fit", "--data.n_context", "15", "--data.test_file", "seq.npy"],
            "clips are 20 frames of 64x64, but the config asks for 25",
        ),
    ],
)
def test_bad_input_is_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "seq.npy" in args:  # a test file shaped like mnist_test_seq.npy: 20 frames
        np.save(tmp_path / "seq.npy", np.zeros((20, 2, 64, 64), np.uint8))
    before = sorted(tmp_path.iterdir())
    code, out, err = run(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("framecast: error: ")
    assert message in err
    assert sorted(tmp_path.iterdir()) == before  # nothing written


def test_not_a_checkpoint_and_pickle_payload(capsys, tmp_path):
    (tmp_path / "notes.ckpt").write_text("hello")
    code, _, err = run(["test", "--checkpoint", str(tmp_path / "notes.ckpt")], capsys)
    assert code == 2 and "notes.ckpt: not a framecast checkpoint (found: a text file)" in err

    class Payload:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    # a PyTorch checkpoint carrying code: torch's weights-only unpickler refuses it
    torch.save({"state_dict": Payload()}, tmp_path / "evil.ckpt")
    code, _, err = run(["test", "--checkpoint", str(tmp_path / "evil.ckpt")], capsys)
    assert code == 2 and "refused to load" in err and "(unsupported global exec)" in err
    # a bare pickle is no PyTorch file: never unpickled at all
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"state_dict": Payload()}))
    code, _, err = run(["test", "--checkpoint", str(tmp_path / "evil.pkl")], capsys)
    assert code == 2 and "not a framecast checkpoint (found: a Python pickle that is no PyTorch checkpoint" in err
    assert not (tmp_path / "PWNED").exists()


def test_models_lists_the_registry(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0
    for name in ("convlstm", "convlstm_seq2seq", "copy_last", "blank"):
        assert name in out
    # every registered size's parameter count: published, cpu, test (convlstm: 4 x 128 | 2 x 64 | 2 x 8)
    row = next(line for line in out.splitlines() if line.startswith("convlstm "))
    assert row.split()[1:7] == ["11.68", "M", "0.59", "M", "0.01", "M"]


def test_models_lists_a_model_whose_extra_is_missing_with_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm.models.maxxvit", None)  # as if timm were not installed
    code, out, err = run(["models", "maxvit*"], capsys)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("maxvit")]
    assert len(rows) == 2 and all(
        r.endswith("(the maxvit model needs timm: pip install 'framecast[maxvit]')") for r in rows
    )
    code, _, err = run(["fit", "--model.name", "maxvit"], capsys)
    assert code == 2 and err == "framecast: error: the maxvit model needs timm: pip install 'framecast[maxvit]'\n"


def test_console_script_is_installed_and_python_m_framecast_runs():
    script = Path(sys.executable).parent / "framecast"  # `pip install -e .` (make setup) installs it
    assert script.is_file(), f"no console script at {script}: run `make setup` (pip install -e .)"
    for cmd in ([str(script)], [sys.executable, "-m", "framecast"]):
        res = subprocess.run([*cmd, "models", "conv*"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "convlstm_seq2seq" in res.stdout and "blank" not in res.stdout
    res = subprocess.run([sys.executable, "-m", "framecast", "models", "nope*"], capture_output=True, text=True)
    assert (
        res.returncode == 2
        and res.stderr == "framecast: error: no model matches 'nope*'; `framecast models` lists them all\n"
    )


def _boom(exc):
    def raise_it(*args, **kwargs):
        raise exc

    return raise_it


@pytest.mark.parametrize(
    "exc", [ValueError("a bug in framecast"), FileNotFoundError("a bug in framecast"), KeyError(1)]
)
def test_an_internal_error_keeps_its_traceback(exc, monkeypatch):
    # Only framecast's own errors become one line; a ValueError from framecast's code is a bug.
    monkeypatch.setattr("framecast.registry.model_config", _boom(exc))
    with pytest.raises(type(exc)):
        main(["models"])


def test_debug_shows_the_traceback_of_a_user_error(capsys, monkeypatch):
    bad = ["fit", "--model.name", "convlsmt"]
    monkeypatch.delenv("FRAMECAST_DEBUG", raising=False)
    assert run(bad, capsys)[0] == 2  # one line without --debug
    for args in (["--debug", *bad], [*bad, "--debug"], ["fit", "--debug", "--model.name", "convlsmt"]):
        with pytest.raises(ConfigError, match="unknown model 'convlsmt'"):
            main(args)
    monkeypatch.setenv("FRAMECAST_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(bad)
    monkeypatch.setenv("FRAMECAST_DEBUG", "0")
    assert run(bad, capsys)[0] == 2


def test_model_config_and_input_mistakes_are_framecast_errors():
    # raised on purpose for users: one line through the CLI, and still ValueErrors for the API
    with pytest.raises(ConfigError, match="filter_size must be odd"):
        create_model("convlstm", filter_size=4)
    with pytest.raises(ConfigError, match="stride must be 1"):
        create_model("predrnn", stride=2)
    model = create_model("convlstm", num_hidden=[4], filter_size=3)
    with pytest.raises(InputError, match="3 channels but the model expects 1"):
        model(torch.rand(1, 2, 3, 64, 64), 1)
    with pytest.raises(InputError, match="n_future must be at least 1"):
        forecast(model, torch.rand(1, 2, 1, 64, 64), 0)
    assert issubclass(InputError, ValueError) and issubclass(InputError, FramecastError)


def test_a_dead_dataloader_worker_is_one_line_an_error_inside_one_is_not(capsys, monkeypatch):
    died = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")
    monkeypatch.setattr("framecast.cli.cmd_models", _boom(died))
    code, _, err = run(["models"], capsys)
    assert code == 2 and err.count("\n") == 1 and "killed by signal" in err and "data.num_workers: 0" in err
    inside = RuntimeError(
        "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nRuntimeError: shape mismatch\n'
    )
    monkeypatch.setattr("framecast.cli.cmd_models", _boom(inside))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["models"])


def test_ctrl_c_is_one_line_also_when_lightning_turns_it_into_an_exit(capsys, monkeypatch):
    def lightning_style(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning's trainer does on Ctrl+C

    for interrupt in (_boom(KeyboardInterrupt()), lightning_style):
        monkeypatch.setattr("framecast.cli.cmd_models", interrupt)
        code, _, err = run(["models"], capsys)
        assert code == 130 and err == "framecast: interrupted; run the same command again to resume\n"
    monkeypatch.setattr("framecast.cli.cmd_models", _boom(SystemExit(3)))
    with pytest.raises(SystemExit):
        main(["models"])


def test_fit_output_in_a_log_is_plain_lines_without_lightning_chatter(tmp_path):
    """Output to a pipe (a log file, nohup, CI): no carriage-return bar redraws, none of
    Lightning's device lines, limit_* notes or install tips; plain progress lines on stderr and
    only the final figures (JSON) on stdout."""
    args = [
        "--model.name", "convlstm", "--model.num_hidden", "[4]", "--model.filter_size", "3",
        "--data.n_context", "3", "--data.n_future", "2", "--data.batch_size", "2", "--data.train_size", "6",
        "--data.val_size", "2", "--data.test_size", "2", "--trainer.max_epochs", "2",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "true", "--out_dir", "run",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FRAMECAST_DEBUG", None)
    res = subprocess.run(
        [sys.executable, "-m", "framecast", "fit", *args], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert res.returncode == 0, res.stderr
    everything = res.stdout + res.stderr
    assert "\r" not in everything
    for chatter in (
        "litmodels",
        "litlogger",
        "Tip:",
        "GPU available",
        "TPU available",
        "HPU available",
        "limit_",
        "was configured",
    ):
        assert chatter not in everything, chatter
    lines = res.stderr.splitlines()
    progress = [
        line for line in lines if re.fullmatch(r"epoch \d+ batch \d+/3 train/loss \S+ .*it/s \d+:\d\d:\d\d", line)
    ]
    assert len(progress) >= 2 and progress[-1].startswith("epoch 2 batch 3/3"), res.stderr
    assert any(re.fullmatch(r"epoch 2 validation val/mse \S+ val/ssim \S+", line) for line in lines), res.stderr
    stats = json.loads(res.stdout)  # stdout holds the final figures and nothing else
    assert stats["steps"] == 6 and stats["epochs"] == 2 and stats["val_mse"] > 0


def test_progress_follows_enable_progress_bar_and_the_terminal(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar

    from framecast.config import build_run_config
    from framecast.training import runner
    from framecast.training.progress import PlainProgress

    def bar(enabled: bool, terminal: bool):
        monkeypatch.setattr(runner, "draws_on_a_terminal", lambda: terminal)
        cfg = build_run_config({"trainer": {"enable_progress_bar": enabled}, "out_dir": str(tmp_path)})
        trainer = runner.make_trainer(cfg, logger=False, checkpointing=False)
        bars = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
        return type(bars[0]) if bars else None

    assert bar(True, terminal=False) is PlainProgress
    assert bar(True, terminal=True) not in (None, PlainProgress)  # Lightning's own bar on a terminal
    assert bar(False, terminal=False) is None and bar(False, terminal=True) is None
