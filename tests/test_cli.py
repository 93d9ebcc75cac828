"""Bad input through the CLI: one line, non-zero exit, nothing written."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from framecast.cli import main


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
        (["fit", "--trainer.precision", "15"], "trainer.precision must be one of"),
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
    assert code == 2 and "not a readable PyTorch checkpoint" in err

    class Payload:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w').write('x')",))

    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": Payload()}))
    code, _, err = run(["test", "--checkpoint", str(tmp_path / "evil.ckpt")], capsys)
    assert code == 2 and "refused to load" in err
    assert not (tmp_path / "PWNED").exists()


def test_models_lists_the_registry(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0
    for name in ("convlstm", "convlstm_seq2seq", "copy_last", "blank"):
        assert name in out


def test_console_script_is_installed():
    res = subprocess.run([sys.executable, "-m", "framecast.cli", "models", "conv*"], capture_output=True, text=True)
    assert res.returncode == 0 and "convlstm_seq2seq" in res.stdout and "blank" not in res.stdout
