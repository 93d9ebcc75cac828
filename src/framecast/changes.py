"""What may differ between a run config and the one a checkpoint was trained with: the keys a
resumed run may change (``RESUME_SAFE_KEYS``), those a test may (``TEST_SAFE_DATA_KEYS``), and
the changes named as ``key: old -> new`` (``config_changes``)."""

from typing import Any

from framecast.config import RunConfig, merge, show_value, to_dict
from framecast.errors import ConfigError
from framecast.registry import model_config

# The keys of a resolved run config that may change when a run resumes from its last.ckpt, each
# with the reason it is harmless: none changes what the stored weights, optimiser state, schedule
# position and data-stream position mean. Every other key must equal the value stored in the
# checkpoint; `framecast fit` (and `compare`) refuse to resume otherwise, naming the keys.
RESUME_SAFE_KEYS: dict[str, str] = {
    "out_dir": "the run folder itself: a copied or moved run folder resumes",
    "data.num_workers": "loader processes only: the same clips in the same order",
    "data.cache_dir": "where decoded frames are cached: the same frames",
    "data.test_size": "the test split only, which training never reads",
    "data.test_file": "the test split only, which training never reads",
    "data.test_n_future": "the test horizon only; training predicts data.n_future frames",
    "train.image_every_n_steps": "TensorBoard images only",
    "train.on_nonfinite": "acts only on a NaN/Inf loss, where the run would otherwise stop",
    # A budget change continues training from where it stopped; a one-cycle learning rate then
    # follows the new budget from the point reached (the time spent is kept in the checkpoint).
    "trainer.malloc": "the allocator only: the same results bit for bit",
    "trainer.max_epochs": "the budget",
    "trainer.max_steps": "the budget",
    "trainer.max_time_minutes": "the budget",
    # data.batch_size is per process: the global batch, data.batch_size x processes, is compared
    # instead (config_changes), so changing the hardware at the same global batch resumes.
    "trainer.accelerator": "the hardware: the same maths",
    "trainer.devices": "the hardware (the global batch is checked on its own)",
    "trainer.num_nodes": "the hardware (the global batch is checked on its own)",
    "trainer.strategy": "how processes share gradients: the same maths",
    "trainer.val_check_interval": "when validation runs; validation never changes the weights",
    "trainer.log_every_n_steps": "logging only",
    "trainer.checkpoint_every_n_steps": "how often last.ckpt is rewritten",
    "trainer.enable_progress_bar": "display only",
    "trainer.channels_last": "memory layout only: the same maths",
    "model.checkpoint_cells": "recomputes activations in the backward pass: the same results",
    "evaluation.bootstrap_resamples": "the test scores' intervals only, which training never reads",
    "evaluation.bootstrap_seed": "the test scores' intervals only, which training never reads",
    "evaluation.bootstrap_block": "the test scores' intervals only, which training never reads",
}

# Data keys that may differ from a checkpoint's training data without changing which test clips
# are scored (`framecast test` notes every other difference): they batch, load or cache the
# clips, or size the train and validation splits.
TEST_SAFE_DATA_KEYS = ("batch_size", "num_workers", "cache_dir", "train_size", "val_size")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any], processes: tuple[int, int] = (1, 1)) -> list[str]:
    """What differs between resolved run configs ``old`` (stored in a checkpoint) and ``new``,
    as ``"key: old -> new"``, leaving out ``RESUME_SAFE_KEYS``.

    A key ``old`` lacks (added to framecast after it was written) counts as its default; a key
    ``new`` lacks is ignored. ``data.batch_size`` is per process, so it is compared as the
    global batch, times ``processes`` (old, new). A model key that follows the data (image_size,
    channels, ...) is named once, as the data key.
    """
    name = (new.get("model") or {}).get("name")
    defaults = to_dict(RunConfig(model={"name": name}))
    if (old.get("model") or {}).get("name") == name:
        try:
            defaults["model"] = {"name": name, **to_dict(model_config(name))}
        except (ConfigError, ValueError):  # a model whose defaults do not stand alone
            pass
    before, after = flatten(merge(defaults, old)), flatten(new)
    changes: dict[str, tuple[Any, Any]] = {}
    for key, value in after.items():
        if key in RESUME_SAFE_KEYS or key not in before:
            continue
        if key.startswith("model.") and key != "model.name" and before.get("model.name") != after.get("model.name"):
            continue  # another model: its name says it all
        if key == "data.batch_size" and processes[0] != processes[1]:
            if before[key] * processes[0] != value * processes[1]:
                changes["global batch (data.batch_size x processes)"] = (
                    f"{before[key]} x {processes[0]}",
                    f"{value} x {processes[1]}",
                )
            continue
        if before[key] != value:
            changes[key] = (before[key], value)
    for key in [k for k in changes if k.startswith("model.")]:
        if changes.get("data." + key[len("model.") :]) == changes[key]:
            del changes[key]
    return [f"{key}: {show_value(a)} -> {show_value(b)}" for key, (a, b) in changes.items()]
