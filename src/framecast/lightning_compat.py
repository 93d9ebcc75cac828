"""The few things framecast needs from Lightning that Lightning has no public API for, in one place.

* How many training batches are done, in this epoch and in all: exact resume (the data
  module's checkpointed stream position) and the fractional ``epochs`` of a run's stats. The
  Trainer only counts optimiser steps (``global_step``), which differ from batches (two per
  batch with ``train.reverse_input``, none for a skipped non-finite loss). Lightning keeps the
  count in its loop state, ``trainer.fit_loop.epoch_loop.batch_progress``.
* Which loggers Lightning writes its info chatter to ("GPU available: False", "`Trainer(limit_val_batches=1)`
  was configured ...", tips to install litmodels / litlogger): ``rank_zero_info`` of
  ``lightning.pytorch`` and ``lightning.fabric``.

Nothing else in framecast reads Lightning's private state. tests/test_lightning_compat.py runs a
tiny fit and fails loudly, naming what changed, when a Lightning release moves any of it.
"""

import logging
from typing import Any

import lightning

# The loggers behind Lightning's ``rank_zero_info`` (and the CUDA device line).
INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)
# Info lines that stay: a resumed run says where it resumed from.
KEEP_INFO = ("Restoring states from the checkpoint",)


class _LightningInfoFilter(logging.Filter):
    """Drops Lightning's INFO records except ``KEEP_INFO``; warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        return record.getMessage().startswith(KEEP_INFO)


_FILTER = _LightningInfoFilter()


def quiet_lightning(quiet: bool = True) -> None:
    """Silence (or, ``quiet=False``, restore) Lightning's info chatter: device availability, the
    ``limit_*`` / ``val_check_interval`` notes, "`Trainer.fit` stopped", the install tips. A
    tool's output is the tool's; Lightning's warnings still show."""
    for name in INFO_LOGGERS:
        log = logging.getLogger(name)
        if quiet:
            if _FILTER not in log.filters:
                log.addFilter(_FILTER)
        else:
            log.removeFilter(_FILTER)


def _batch_progress(trainer: Any) -> Any:
    try:
        return trainer.fit_loop.epoch_loop.batch_progress
    except AttributeError as e:
        raise RuntimeError(
            f"Lightning {lightning.__version__} has no trainer.fit_loop.epoch_loop.batch_progress, which "
            f"framecast reads to resume the data stream exactly (framecast/lightning_compat.py); install the "
            f"Lightning version pyproject.toml names"
        ) from e


def batches_done_in_epoch(trainer: Any) -> int:
    """Training batches of the current epoch whose step has run, counting the batch in progress
    from ``on_train_batch_end`` on (where a step-triggered checkpoint is saved, before Lightning
    counts the batch as completed). Restored from a checkpoint on resume."""
    return int(_batch_progress(trainer).current.processed)


def batches_done(trainer: Any) -> int:
    """Training batches completed since the run began, over all epochs and resumes."""
    return int(_batch_progress(trainer).total.completed)
