"""Typed run configuration: dataclasses, YAML files and dotted command-line overrides.

Every default lives in exactly one place, the dataclass field. YAML files and ``--a.b value``
overrides only say what differs; unknown keys, wrong types and impossible values raise a
``ConfigError`` with one line naming the key and the fix, before any work starts.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from framecast.errors import ConfigError, did_you_mean

# --------------------------------------------------------------------------- value coercion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise ``ConfigError`` naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a valid {' or '.join(_type_name(a) for a in args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build_dataclass(tp, value, prefix=f"{key}.")
    if origin is tuple or tp is tuple:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and args and args[-1] is Ellipsis:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{key}: {value!r} is not one of {', '.join(map(repr, args))}{did_you_mean(str(value), map(str, args))}"
            )
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `--trainer.precision 32` reads as a number
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a plain mapping, checking every key and type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{did_you_mean(prefix + key, [prefix + n for n in names])}; "
                f"valid keys: {', '.join(prefix + n for n in names)}"
            )
        kwargs[key] = coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}" if prefix and not str(e).startswith(prefix) else str(e)) from None


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts, lists and scalars (YAML- and checkpoint-safe)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


# --------------------------------------------------------------------------- run config


@dataclass
class DataConfig:
    """Which frames, how many, and how they are batched."""

    name: str = "moving_mnist"
    n_context: int = 10
    n_future: int = 10
    image_size: int = 64
    channels: int = 1
    batch_size: int = 16
    num_workers: int = 0
    seed: int = 0
    # Moving MNIST
    num_digits: int = 2
    step_length: float = 0.1
    train_size: int = 10_000  # fresh sequences per epoch; every epoch draws new ones
    val_size: int = 256  # validation clips (video datasets: at most this many, evenly spaced)
    test_size: int | None = None  # test clips: Moving MNIST 1,000; video datasets all (a number caps them; 0: all)
    mnist_path: str | None = None  # folder with the MNIST idx files (plain or .gz)
    test_file: str | None = None  # the standard mnist_test_seq.npy
    # Real video (kth | ucf101 | video_folder; src/framecast/data/real.py)
    root: str | None = None  # the dataset folder
    cache_dir: str | None = None  # decoded-frame cache (default ~/.cache/framecast/frames, $FRAMECAST_CACHE)
    crop: str = "center"  # center: crop to a square, then resize | none: stretch
    stride: int | None = None  # frames between clip starts (default: KTH per action, else the clip length)
    classes: list[str] | None = None  # a subset of KTH actions / UCF101 classes
    protocol: str = "official"  # ucf101: official (split lists) | study (the comparison seed's 5 classes)
    split: int = 1  # ucf101 official split list 1, 2 or 3
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # video_folder without train/val/test
    test_n_future: int | None = None  # a longer test horizon (KTH protocol: train 10 -> 10, test 10 -> 20)

    def __post_init__(self) -> None:
        for key in ("n_context", "n_future", "image_size", "channels", "batch_size", "num_digits"):
            require(getattr(self, key) >= 1, f"data.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("train_size", "val_size", "num_workers"):
            require(getattr(self, key) >= 0, f"data.{key} must not be negative, got {getattr(self, key)}")
        require(
            self.test_size is None or self.test_size >= 0, f"data.test_size must not be negative, got {self.test_size}"
        )
        for key in ("stride", "test_n_future"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"data.{key} must be at least 1, got {value}")
        require(self.channels in (1, 3), f"data.channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        require(self.crop in ("center", "none"), f"data.crop must be center or none, got {self.crop!r}")
        require(
            self.protocol in ("official", "study"), f"data.protocol must be official or study, got {self.protocol!r}"
        )
        require(self.split in (1, 2, 3), f"data.split must be 1, 2 or 3 (UCF101 split lists), got {self.split}")
        require(
            len(self.split_fractions) == 3 and min(self.split_fractions) >= 0 and self.split_fractions[0] > 0,
            f"data.split_fractions must be three non-negative fractions with train > 0, got {self.split_fractions}",
        )
        require(
            self.name == "moving_mnist" or self.root is not None,
            f"data.root is missing: the folder that holds the {self.name} videos",
        )

    @property
    def test_length(self) -> int:
        return self.n_context + (self.test_n_future or self.n_future)

    @property
    def total_length(self) -> int:
        return self.n_context + self.n_future


@dataclass
class TrainConfig:
    """Training policy: loss weights, optimiser, schedule and scheduled sampling."""

    lr: float = 1e-3
    # loss = MSE + l1_weight * L1 over every predicted frame (E3D-LSTM trains with L1 + L2);
    # the PredRNN family's official code uses MSE alone (0.0).
    l1_weight: float = 0.0
    # + bce_weight * binary cross-entropy, the loss Srivastava et al. (2015) trained Moving MNIST
    # with. Meant for models whose output ends in a sigmoid (maxvit): MSE's gradient through a
    # sigmoid vanishes near 0, so an MSE-only model keeps a faint haze on the empty background.
    bce_weight: float = 0.0
    # Score the loss on predictions clipped to [0, 1], the range the metrics score, so values
    # below 0 on empty background cost nothing (the fed-back frames stay unclipped).
    clip_loss: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_schedule: str = "none"  # none | onecycle
    onecycle_pct_start: float = 0.1
    grad_clip: float | None = None
    # How the frame-feedback models see future frames during training (schedules.py):
    # none: always their own predictions; scheduled: PredRNN's decaying teacher forcing;
    # reverse: PredRNN-V2's reverse scheduled sampling.
    sampling: str = "none"
    sampling_start: float = 1.0
    sampling_changing_rate: float = 2e-5
    sampling_stop_iter: int = 50_000
    r_sampling_step_1: int = 25_000
    r_sampling_step_2: int = 50_000
    r_exp_alpha: float = 2_500.0
    reverse_input: bool = False  # official PredRNN: second step on the time-reversed clip
    image_every_n_steps: int = 250
    # A NaN or Inf loss: stop (name the step; the last good checkpoint stays) or skip the step.
    on_nonfinite: str = "stop"
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        require(self.l1_weight >= 0, f"train.l1_weight must not be negative, got {self.l1_weight}")
        require(self.bce_weight >= 0, f"train.bce_weight must not be negative, got {self.bce_weight}")
        require(
            self.lr_schedule in ("none", "onecycle"),
            f"train.lr_schedule must be none or onecycle, got {self.lr_schedule!r}",
        )
        require(
            self.sampling in ("none", "scheduled", "reverse"),
            f"train.sampling must be none, scheduled or reverse, got {self.sampling!r}",
        )
        require(
            self.on_nonfinite in ("stop", "skip"),
            f"train.on_nonfinite must be stop or skip, got {self.on_nonfinite!r}",
        )
        require(self.grad_clip is None or self.grad_clip > 0, f"train.grad_clip must be positive, got {self.grad_clip}")
        require(
            self.r_sampling_step_2 > self.r_sampling_step_1,
            "train.r_sampling_step_2 must be after train.r_sampling_step_1",
        )


@dataclass
class TrainerConfig:
    """What Lightning's Trainer gets: budget, hardware and logging."""

    max_epochs: int = 10
    max_steps: int = -1
    max_time_minutes: float | None = None
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    val_check_interval: int | float = 1.0
    log_every_n_steps: int = 20
    # last.ckpt is rewritten every this many optimiser steps (default: 5 x log_every_n_steps)
    checkpoint_every_n_steps: int | None = None
    enable_progress_bar: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        allowed = ("32", "32-true", "bf16-mixed", "bf16-true", "16-mixed", "64")
        self.precision = str(self.precision)
        require(
            self.precision in allowed, f"trainer.precision must be one of {', '.join(allowed)}, got {self.precision!r}"
        )
        require(
            self.max_epochs >= 1 or self.max_epochs == -1,
            f"trainer.max_epochs must be at least 1, got {self.max_epochs}",
        )
        require(self.max_time_minutes is None or self.max_time_minutes > 0, "trainer.max_time_minutes must be positive")
        require(
            self.log_every_n_steps >= 1, f"trainer.log_every_n_steps must be at least 1, got {self.log_every_n_steps}"
        )
        require(
            self.checkpoint_every_n_steps is None or self.checkpoint_every_n_steps >= 1,
            f"trainer.checkpoint_every_n_steps must be at least 1, got {self.checkpoint_every_n_steps}",
        )
        require(self.num_nodes >= 1, f"trainer.num_nodes must be at least 1, got {self.num_nodes}")


@dataclass
class RunConfig:
    """Everything one training run needs; saved beside each checkpoint as ``config.yaml``."""

    model: dict[str, Any] = field(default_factory=lambda: {"name": "convlstm"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        require("name" in self.model, "model.name is missing: pick one from `framecast models`")

    @property
    def model_name(self) -> str:
        return self.model["name"]

    @property
    def model_overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}


# --------------------------------------------------------------------------- files and overrides


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; ``model.name`` replaces the whole model."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if key == "model" and "name" in value and value["name"] != out[key].get("name"):
                out[key] = dict(value)
            else:
                out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """Turn ``["--data.batch_size", "8", "--model.name=predrnn"]`` into a nested mapping.

    Values are read as YAML scalars (``8`` -> int, ``[1,2]`` -> list, ``null`` -> None).
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ConfigError(f"unexpected argument '{tok}': overrides look like --section.key value")
        key, eq, value = tok[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"--{key} needs a value")
            value = tokens[i + 1]
            i += 1
        i += 1
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--{key}: '{part}' is set both as a value and as a section")
        node[parts[-1]] = parsed
    return out


def build_run_config(values: dict[str, Any]) -> RunConfig:
    return build_dataclass(RunConfig, values)


def resolve_model_config(cfg: RunConfig) -> dict[str, Any]:
    """The model's full config (registry defaults + run overrides), with data-derived sizes.

    ``channels``, ``image_size``, ``n_context`` and ``n_future`` follow the data unless the model
    sets them, in which case they must agree.
    """
    from framecast.registry import model_config

    overrides = cfg.model_overrides
    probe = model_config(cfg.model_name, **overrides)
    derived = {
        "channels": cfg.data.channels,
        "image_size": cfg.data.image_size,
        "n_context": cfg.data.n_context,
        "n_future": cfg.data.n_future,
    }
    fields = {f.name for f in dataclasses.fields(probe)}
    for key, value in derived.items():
        if key not in fields:
            continue
        if key in overrides and overrides[key] != value:
            raise ConfigError(f"model.{key}={overrides[key]} disagrees with data.{key}={value}; set only one of them")
        overrides[key] = value
    return to_dict(model_config(cfg.model_name, **overrides))


def save_yaml(obj: dict[str, Any], path: str | Path) -> None:
    from framecast.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(obj, sort_keys=False))


# --------------------------------------------------------------------------- resuming and scoring

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


def show_value(value: Any) -> str:
    """A config value as it is written in YAML and on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(show_value, value)) + "]"
    return str(value)


def config_changes(old: dict[str, Any], new: dict[str, Any], processes: tuple[int, int] = (1, 1)) -> list[str]:
    """What differs between resolved run configs ``old`` (stored in a checkpoint) and ``new``,
    as ``"key: old -> new"``, leaving out ``RESUME_SAFE_KEYS``.

    A key ``old`` lacks (added to framecast after it was written) counts as its default; a key
    ``new`` lacks is ignored. ``data.batch_size`` is per process, so it is compared as the
    global batch, times ``processes`` (old, new). A model key that follows the data (image_size,
    channels, ...) is named once, as the data key.
    """
    from framecast.registry import model_config

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
