"""The one-cycle learning rate runs on one clock, batches, whether the budget is epochs or
max_steps and whether reverse_input takes two optimiser steps per batch."""

import pytest
from lightning.pytorch.callbacks import Callback

from framecast.config import build_run_config
from framecast.training.runner import fit
from framecast.training.schedules import onecycle_lr

BATCHES = 8
LR = 1e-2


class LearningRates(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lrs.append(pl_module.optimizers().param_groups[0]["lr"])


@pytest.mark.parametrize(
    "reverse_input, budget",
    [
        (True, {"max_epochs": 1}),  # epochs: Lightning's estimate counts batches, global_step counts 2 a batch
        (True, {"max_epochs": -1, "max_steps": 2 * BATCHES}),  # max_steps counts optimiser steps, as global_step
        (False, {"max_epochs": 1}),
    ],
)
def test_onecycle_spans_the_whole_budget(tmp_path, reverse_input, budget):
    cfg = build_run_config(
        {
            "model": {"name": "convlstm", "num_hidden": [4], "filter_size": 3, "patch_size": 8},
            "data": {"n_context": 2, "n_future": 2, "batch_size": 1, "train_size": BATCHES, "val_size": 1},
            "train": {"lr": LR, "lr_schedule": "onecycle", "reverse_input": reverse_input, "image_every_n_steps": 0},
            "trainer": {"enable_progress_bar": False, "max_steps": -1, **budget},
            "out_dir": str(tmp_path / "run"),
        }
    )
    rec = LearningRates()
    fit(cfg, callbacks=[rec])
    assert rec.lrs == pytest.approx([onecycle_lr(b / BATCHES, LR, 0.1) for b in range(BATCHES)])
    # halfway is the middle of the cosine, not its end; the last batch is close to the end
    assert rec.lrs[BATCHES // 2] > 0.5 * LR and rec.lrs[-1] < 0.05 * LR
