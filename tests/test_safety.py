"""Writes that cannot be half-done: a truncated last.ckpt falls back to the previous good one, a
full disk stops the run with one clear line and leaves the last good checkpoint intact, and a
non-finite loss can skip its step instead of stopping."""

import errno
import os

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from framecast.checkpoint import read_checkpoint
from framecast.config import build_run_config, merge
from framecast.errors import FramecastError
from framecast.training.runner import fit


class StartStep(Callback):
    """Records the global step each fit starts from: which checkpoint was resumed."""

    def __init__(self):
        self.steps = []

    def on_train_start(self, trainer, pl_module):
        self.steps.append(trainer.global_step)


# 2 batches an epoch, last.ckpt every 3 steps: after 2 epochs last.prev.ckpt is step 3 (the periodic
# save) and last.ckpt step 4 (the final save), so which of them a resume used shows in its step
EVERY_3 = {"trainer": {"checkpoint_every_n_steps": 3, "max_epochs": 2}}


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(tiny_overrides, tmp_path, capsys):
    cfg = merge(tiny_overrides, EVERY_3)
    fit(build_run_config(cfg))
    ckpts = tmp_path / "run" / "checkpoints"
    assert read_checkpoint(ckpts / "last.prev.ckpt")["global_step"] == 3
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 4
    data = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(data[: len(data) // 2])  # truncated by hand

    start = StartStep()
    stats = fit(build_run_config(merge(cfg, {"trainer": {"max_epochs": 3}})), callbacks=[start])
    err = capsys.readouterr().err
    assert "last.ckpt: not a readable PyTorch checkpoint" in err and "trying the previous checkpoint" in err
    assert start.steps == [3] and stats["steps"] == 6  # resumed from last.prev.ckpt's step 3, not step 4
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 6
    # the truncated file was moved aside (and named), never kept as the previous checkpoint
    assert f"moved to {ckpts / 'last.corrupt.ckpt'}" in err
    assert (ckpts / "last.corrupt.ckpt").read_bytes() == data[: len(data) // 2]
    assert "loops" in read_checkpoint(ckpts / "last.prev.ckpt")


def test_a_corrupt_last_checkpoint_twice_in_a_row_still_resumes(tiny_overrides, tmp_path, capsys):
    """A resume from last.prev.ckpt followed by a single save, then a second corruption: the save
    must not have turned the corrupt last.ckpt into last.prev.ckpt."""
    cfg = build_run_config(merge(tiny_overrides, EVERY_3))
    fit(cfg)
    ckpts = tmp_path / "run" / "checkpoints"
    start = StartStep()
    for round in range(2):
        (ckpts / "last.ckpt").write_bytes(b"\x00garbage" * 100)
        stats = fit(cfg, callbacks=[start])  # step 3 -> 4: only the final save writes last.ckpt
        assert stats["steps"] == 4, round
        assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 4
        assert read_checkpoint(ckpts / "last.prev.ckpt")["global_step"] == 3
    assert start.steps == [3, 3]  # both times from the good step-3 checkpoint
    err = capsys.readouterr().err
    assert err.count("last.ckpt: not a framecast checkpoint (found: bytes of no known format") == 2
    assert err.count("unreadable last.ckpt was moved to") == 2
    assert (ckpts / "last.corrupt.ckpt").read_bytes() == b"\x00garbage" * 100


def test_no_readable_checkpoint_is_one_clear_error(tiny_overrides, tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "last.ckpt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(FramecastError, match="no readable checkpoint to resume from .* --no-resume"):
        fit(build_run_config(tiny_overrides))
    assert (ckpts / "last.ckpt").read_bytes() == b"PK\x03\x04 not really"  # nothing overwritten


def test_a_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_overrides, tmp_path, monkeypatch):
    fit(build_run_config(tiny_overrides))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    good = {p.name: p.read_bytes() for p in last.parent.iterdir()}

    real_fsync, calls = os.fsync, {"n": 0}

    def full(fd):  # config.yaml still fits; every write after it fails as on a full disk
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(
        # the resumed run's first write: its metric log cut to the checkpoint, or a checkpoint
        FramecastError,
        match=r"disk full while writing .*(checkpoints/(best|last)\.ckpt|csv/metrics\.csv) .* previous file was kept",
    ):
        fit(build_run_config(merge(tiny_overrides, {"trainer": {"max_epochs": 2}})))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in last.parent.iterdir()} == good  # nothing lost, nothing half-written


def test_a_nonfinite_loss_can_skip_the_step(tiny_overrides, monkeypatch, capsys):
    from framecast.training import task as task_module
    calls = {"n": 0}
    real = task_module.FrameTask.loss

    def sometimes_nan(self, clip, mask, valid=None):
        loss, terms = real(self, clip, mask, valid)
        calls["n"] += 1
        return (loss * float("nan"), terms) if calls["n"] == 1 else (loss, terms)

    monkeypatch.setattr(task_module.FrameTask, "loss", sometimes_nan)
    cfg = merge(tiny_overrides, {"train": {"on_nonfinite": "skip"}, "trainer": {"max_epochs": 2}})
    stats = fit(build_run_config(cfg))
    assert "non-finite loss at step 0; step skipped" in capsys.readouterr().out
    assert stats["steps"] == 3  # 4 batches, the first skipped
    weights = read_checkpoint(stats["last_checkpoint"])["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_a_checkpoint_write_that_fails_mid_file_says_disk_full_and_keeps_the_last_one(tmp_path, monkeypatch):
    """The checkpoint is serialised straight into its temporary file: a write torch's zip writer
    makes that fails (full disk) still ends in the one-line error, the previous file intact."""
    from framecast.checkpoint import SafeCheckpointIO

    path = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"w": torch.zeros(3)}, path)
    good = path.read_bytes()
    real = os.fdopen

    class FillsUp:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, data):
            self.n += 1
            if self.n > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FillsUp(real(fd, mode)))
    with pytest.raises(FramecastError, match=r"disk full while writing .*last\.ckpt .* previous file was kept"):
        SafeCheckpointIO().save_checkpoint({"w": torch.randn(256, 256)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left behind


def _file_kinds(tmp_path):
    """Files people hand over as checkpoints that are none, and what the refusal names."""
    import zipfile

    import numpy as np
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    (tmp_path / "random.ckpt").write_bytes(rng.integers(1, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "notes.ckpt").write_text("epoch 3: val/mse 41.2\n")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "archive.ckpt", "w") as z:
        z.writestr("weights/readme.txt", "x")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    torch.save([torch.zeros(2)], tmp_path / "list.ckpt")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    np.save(tmp_path / "array.npy", np.zeros(3))
    return {
        "random.ckpt": "bytes of no known format, neither PyTorch nor safetensors",
        "notes.ckpt": "a text file",
        "empty.ckpt": "an empty file",
        "archive.ckpt": "a zip archive that is no PyTorch checkpoint, holding weights/readme.txt",
        "plain.ckpt": "a PyTorch file without framecast metadata, keys: state_dict",
        "legacy.ckpt": "a PyTorch file without framecast metadata, keys: w",
        "list.ckpt": "a PyTorch file holding a list, not a dict",
        "foreign.safetensors": "a safetensors file without framecast metadata, 1 tensor",
        "array.npy": "a NumPy .npy array",
    }


def test_a_file_that_is_no_checkpoint_says_so_in_one_line_naming_what_it_holds(tmp_path, capsys):
    from framecast import load_checkpoint
    from framecast.cli import main

    for name, found in _file_kinds(tmp_path).items():
        path = tmp_path / name
        with pytest.raises(FramecastError) as e:
            load_checkpoint(path)
        assert str(e.value).startswith(f"{path}: not a framecast checkpoint (found: {found}); "), str(e.value)
        assert "other than tensors" not in str(e.value)
        assert main(["test", "--checkpoint", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"not a framecast checkpoint (found: {found})" in err, err
    assert not (tmp_path / "random.test").exists()  # nothing written
