"""The training policy: masks from the schedules, reverse_input, loss terms, NaN stop."""

import pytest
import torch

from framecast.config import TrainConfig, to_dict
from framecast.errors import FramecastError
from framecast.training.task import FrameTask


def task(**train) -> FrameTask:
    cfg = {"num_hidden": (4,), "filter_size": 3, "image_size": 16}
    return FrameTask("predrnn_v2", cfg, 3, 3, to_dict(TrainConfig(**train)))


def test_masks_follow_the_schedules():
    t = task(sampling="reverse")
    m = t.teacher_mask(2000, 30_000)  # MNIST settings: encoder 0.932, decoder 0.40
    assert m.shape == (2000, 4)
    assert abs(m[:, :2].mean().item() - 0.932) < 0.02
    assert abs(m[:, 2:].mean().item() - 0.40) < 0.03
    torch.testing.assert_close(m, t.teacher_mask(2000, 30_000))  # seeded by the step: resumable
    s = task(sampling="scheduled").teacher_mask(2000, 25_000)
    assert (s[:, :2] == 1).all() and abs(s[:, 2:].mean().item() - 0.5) < 0.03
    assert task(sampling="none").teacher_mask(4, 1) is None
    tf = task(sampling="teacher_forcing", teacher_forcing_decay=0.5)  # no trainer: epoch 0, ratio 1
    assert (tf.teacher_mask(8, 7) == 1).all()


def test_loss_includes_the_decoupling_term():
    t = task()
    t.model.train()
    clip = torch.rand(2, 6, 1, 16, 16)
    loss, terms = t.loss(clip, torch.ones(2, 4))
    assert set(terms) == {"mse", "decouple"}
    torch.testing.assert_close(loss, terms["mse"] + terms["decouple"])
    _, terms = task(l1_weight=0.5).loss(clip, None)
    assert "l1" in terms


def _fit_steps(tmp_path, reverse_input: bool, lr: float = 1e-3):
    from framecast.config import build_run_config
    from framecast.training.runner import fit

    cfg = build_run_config(
        {
            "model": {"name": "predrnn", "num_hidden": [4], "filter_size": 3},
            "data": {"n_context": 3, "n_future": 2, "batch_size": 2, "train_size": 4, "val_size": 2, "test_size": 2},
            "train": {"reverse_input": reverse_input, "lr": lr, "image_every_n_steps": 0},
            "trainer": {"max_epochs": 1, "enable_progress_bar": False},
            "out_dir": str(tmp_path / f"r{int(reverse_input)}"),
        }
    )
    return fit(cfg)


def test_reverse_input_takes_a_second_optimiser_step(tmp_path):
    for reverse, per_iter in ((False, 1), (True, 2)):
        stats = _fit_steps(tmp_path, reverse)
        ckpt = torch.load(stats["last_checkpoint"], weights_only=True)
        adam_steps = {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
        # Lightning counts optimiser steps; the schedules count iterations (batches)
        assert stats["steps"] == 2 * per_iter and adam_steps == {2 * per_iter}


def test_a_nan_loss_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(FramecastError, match=r"loss is nan at step 1;"):
        _fit_steps(tmp_path, False, lr=float("inf"))


def test_clips_outside_0_1_are_caught_at_the_boundary():
    t = task()
    with pytest.raises(FramecastError, match=r"clip values must lie in \[0, 1\], got \[0, 255\]; divide uint8"):
        t._check_batch(torch.randint(0, 256, (2, 6, 1, 16, 16)).float())
    with pytest.raises(FramecastError, match=r"T >= 6, got \(2, 5, 1, 16, 16\)"):
        t._check_batch(torch.rand(2, 5, 1, 16, 16))


def test_clip_loss_warns_once_when_every_prediction_is_clipped_out():
    t = task(clip_loss=True)
    clip = torch.rand(2, 6, 1, 16, 16)
    t.loss(clip, None)
    assert 0 <= float(t.clipped_share) < 1  # a fresh model: some values inside [0, 1]
    # every output below 0, as SimVP's went under the clipped loss
    t.model.register_forward_hook(lambda m, i, out: type(out)(out.frames - 5.0, out.losses))
    _, terms = t.loss(clip, None)
    assert float(t.clipped_share) == 1.0
    terms["mse"].backward()  # the frame loss gives no gradient at all
    assert all(p.grad is None or not p.grad.any() for p in t.model.parameters())
    msg = t._warn_if_clipped_out()
    assert "100.0% of the predicted values lie outside [0, 1]" in msg and "train.clip_loss: false" in msg
    assert t._warn_if_clipped_out() is None  # once
