import os

import pytest
import torch

os.environ.setdefault("FRAMECAST_TEST", "1")
# `precision: auto` resolves to fp32 without a probe in the suite (tests/test_precision.py unsets
# it to test the probe): a run's arithmetic never depends on how busy the machine was.
os.environ.setdefault("FRAMECAST_PRECISION", "32")
torch.set_num_threads(2)


@pytest.fixture
def tiny_overrides(tmp_path):
    """A run config small enough to train in seconds on a CPU."""
    return {
        "model": {"name": "convlstm", "num_hidden": [8, 8], "filter_size": 3},
        "data": {"n_context": 4, "n_future": 3, "batch_size": 4, "train_size": 8, "val_size": 4, "test_size": 6},
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "log_every_n_steps": 1},
        "train": {"image_every_n_steps": 1},
        "out_dir": str(tmp_path / "run"),
    }
