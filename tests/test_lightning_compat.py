"""What framecast relies on in Lightning beyond its public API (framecast/lightning_compat.py),
and the public pieces whose meaning the time budget depends on. A Lightning release that moves
any of it fails here, by name, rather than silently breaking exact resume or the schedule."""

import logging

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback, Timer

from framecast import lightning_compat as compat
from framecast.config import build_run_config, merge
from framecast.training.runner import fit


class Probe(Callback):
    """Records the batch counters at every training batch and, with a time budget of
    ``budget`` seconds, the schedule's progress; stops the run after ``stop_after`` batches."""

    def __init__(self, stop_after: int | None = None, budget: float | None = None) -> None:
        self.stop_after, self.budget = stop_after, budget
        self.seen: list[tuple[int, int, int, int]] = []  # (epoch, batch_idx, done in epoch, done in all)
        self.progress: list[tuple[float, float]] = []  # (budget_progress, elapsed / budget)
        self.total_at_end: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = (compat.batches_done_in_epoch(trainer), compat.batches_done(trainer))
        self.seen.append((trainer.current_epoch, batch_idx, *done))
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        if timer is not None and self.budget:
            self.progress.append((pl_module.budget_progress(), timer.time_elapsed("train") / self.budget))
        if self.stop_after is not None and len(self.seen) >= self.stop_after:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.total_at_end = compat.batches_done(trainer)


def test_batch_counters_exist_and_mean_what_resume_and_stats_read(tiny_overrides):
    probe = Probe()
    cfg = build_run_config(merge(tiny_overrides, {"trainer": {"max_epochs": 2}, "train": {"image_every_n_steps": 0}}))
    stats = fit(cfg, callbacks=[probe])
    per_epoch = 2  # 8 clips in batches of 4
    assert [(e, i) for e, i, _, _ in probe.seen] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for epoch, batch_idx, in_epoch, total in probe.seen:
        # in on_train_batch_end (where step-triggered checkpoints are saved) the batch counts as
        # done in its epoch (datamodule.state_dict), not yet as completed overall
        assert in_epoch == batch_idx + 1, probe.seen
        assert total == epoch * per_epoch + batch_idx, probe.seen
    assert probe.total_at_end == 2 * per_epoch and stats["epochs"] == 2  # runner.fit's fractional epochs


def test_a_missing_counter_fails_loudly_naming_it():
    class NoLoops:
        fit_loop = None

    with pytest.raises(RuntimeError, match=r"fit_loop\.epoch_loop\.batch_progress"):
        compat.batches_done_in_epoch(NoLoops())


def test_the_time_budget_reads_the_public_timer(tiny_overrides):
    """A run with trainer.max_time_minutes: Lightning's Timer is in the callbacks, its public
    time_elapsed + time_remaining is the budget, and task.budget_progress follows the clock."""
    timer = Timer(duration={"minutes": 2})
    assert timer.time_remaining("train") == 120 and timer.time_elapsed("train") == 0
    assert Timer().time_remaining("train") is None  # no budget: no clock in the schedule

    probe = Probe(stop_after=3, budget=0.5 * 60)
    values = merge(tiny_overrides, {"trainer": {"max_epochs": -1, "max_time_minutes": 0.5}})
    fit(build_run_config(merge(values, {"train": {"image_every_n_steps": 0}})), callbacks=[probe])
    assert len(probe.progress) == 3
    got = [p for p, _ in probe.progress]
    assert all(0 < p < 1 for p in got) and got == sorted(got)  # no step budget: the clock alone
    for p, clock in probe.progress:
        assert abs(p - clock) < 0.02, probe.progress


def test_lightning_info_chatter_goes_through_the_loggers_we_quiet():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in compat.INFO_LOGGERS]

    def trainer_messages() -> list[str]:
        records.clear()
        L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=1,
        )
        return [r.getMessage() for r in records]

    for log in loggers:
        log.addHandler(handler)
    try:
        compat.quiet_lightning(False)
        loud = trainer_messages()
        assert any(m.startswith("GPU available") for m in loud), loud
        assert any("limit_val_batches=1" in m for m in loud), loud
        compat.quiet_lightning()
        assert trainer_messages() == []
        logging.getLogger(compat.INFO_LOGGERS[0]).info("Restoring states from the checkpoint path at x.ckpt")
        logging.getLogger(compat.INFO_LOGGERS[0]).warning("a real warning")
        assert [r.getMessage() for r in records] == [
            "Restoring states from the checkpoint path at x.ckpt",
            "a real warning",
        ]
    finally:
        compat.quiet_lightning()
        for log in loggers:
            log.removeHandler(handler)
