"""Typed run configuration: dataclasses, YAML files and dotted command-line overrides.

Every default lives in exactly one place, the dataclass field, and its meaning in the ``#``
comment beside it (``framecast fit --help`` shows both). YAML files and ``--a.b value`` overrides
only say what differs, later ones winning; pydantic (``framecast.validation``) checks their types
and unknown keys, ``__post_init__`` the values. Any mistake raises a ``ConfigError`` with one line
naming the key, the value and the fix, before any work starts.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from framecast.errors import ConfigError, did_you_mean
from framecast.validation import build_dataclass  # pydantic: types, unknown keys; re-exported

# --------------------------------------------------------------------------- helpers


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


def require_choice(key: str, value: Any, choices: tuple[Any, ...]) -> None:
    """``value`` must be one of ``choices``; else one line that names them and the closest."""
    if value not in choices:
        names = [show_value(c) for c in choices]
        listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise ConfigError(f"{key} must be {listed}, got {value!r}{did_you_mean(str(value), names)}")


# --------------------------------------------------------------------------- run config


@dataclass
class DataConfig:
    """Which frames, how many, and how they are batched."""

    name: str = "moving_mnist"  # moving_mnist | kth | ucf101 | video_folder | array | taxibj | weatherbench
    n_context: int = 10  # context frames the model reads
    n_future: int = 10  # frames it predicts in training and validation (and testing, unless test_n_future)
    image_size: int | tuple[int, int] = 64  # one number (square) or [H, W]; arrays: read from the array
    channels: int = 1  # 1 (grey) or 3 (RGB) for images; arrays: the array's channels, filled in
    batch_size: int = 16  # clips per batch, per process (the global batch is this x processes)
    num_workers: int = 0  # DataLoader worker processes (0: load in the main process)
    seed: int = 0  # seed of the clips: generated digits, video splits, the order of training clips
    # Moving MNIST
    num_digits: int = 2  # Moving MNIST: digits per clip
    step_length: float = 0.1  # Moving MNIST: digit speed, a fraction of the free range per frame
    train_size: int = 10_000  # fresh sequences per epoch; every epoch draws new ones
    val_size: int = 256  # validation clips (video datasets: at most this many, evenly spaced)
    test_size: int | None = None  # test clips: Moving MNIST 1,000; video datasets all (a number caps them; 0: all)
    mnist_path: str | None = None  # folder with the MNIST idx files (plain or .gz)
    test_file: str | None = None  # the standard mnist_test_seq.npy
    # Real video (kth | ucf101 | video_folder; src/framecast/data/real.py)
    root: str | None = None  # the dataset folder
    cache_dir: str | None = None  # decoded-frame cache (default ~/.cache/framecast/frames, $FRAMECAST_CACHE)
    crop: str = "center"  # center: crop to a square, then resize | none: stretch
    stride: int | None = None  # frames between clip starts (default: KTH per action, arrays 1, else the clip length)
    classes: list[str] | None = None  # a subset of KTH actions / UCF101 classes
    protocol: str = "official"  # ucf101: official (split lists) | study (the comparison seed's 5 classes)
    split: int = 1  # ucf101 official split list 1, 2 or 3
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # video_folder without train/val/test
    test_n_future: int | None = None  # a longer test horizon (KTH protocol: train 10 -> 10, test 10 -> 20)
    # Gridded arrays (array | taxibj | weatherbench; src/framecast/data/array.py, gridded.py)
    path: str | None = None  # array: a .npy, .npz, HDF5 or NetCDF file or a Zarr folder (a glob joins files along time)
    layout: str = "auto"  # array: series (T, C, H, W), cut into windows | clips (N, T, C, H, W) | auto: by its shape
    variables: list[str] | None = None  # arrays: the .npz keys, HDF5 datasets or xarray variables read (default: all)
    time_dim: str = "time"  # xarray: the time dimension
    y_dim: str | None = None  # xarray: the grid's row dimension (default: lat, latitude or y)
    x_dim: str | None = None  # xarray: the grid's column dimension (default: lon, longitude or x)
    normalize: str = "standard"  # arrays, per channel from the training split: standard | minmax ([0, 1]) | none
    nan: str = "refuse"  # arrays with NaNs: refuse (name the first) | mask (left out of the loss and the metrics)
    resize: tuple[int, int] | None = None  # arrays: resample frames to [H, W] (bilinear); default: the array's own size
    thresholds: list[float] | None = None  # arrays, test: CSI, POD, FAR (and FSS) of value >= each, physical units
    fss_scales: list[int] | None = None  # arrays, test: fractions skill score neighbourhoods in grid cells, e.g. [1, 5]

    ARRAYS = ("array", "taxibj", "weatherbench")  # the gridded-array datasets (not a config key)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, (tuple, list)):
            self.image_size = tuple(int(v) for v in self.image_size)
            require(
                len(self.image_size) == 2 and min(self.image_size) >= 1,
                f"data.image_size must be one number or [H, W] of positive numbers, got {list(self.image_size)}",
            )
            require(
                self.name in self.ARRAYS,
                f"data.image_size must be one number for {self.name} (square frames); [H, W] is for arrays",
            )
            if self.image_size[0] == self.image_size[1]:
                self.image_size = self.image_size[0]  # a square is one number, as everywhere else
        for key in ("n_context", "n_future", "image_size", "channels", "batch_size", "num_digits"):
            value = getattr(self, key)
            require(isinstance(value, tuple) or value >= 1, f"data.{key} must be at least 1, got {value}")
        for key in ("train_size", "val_size", "num_workers"):
            require(getattr(self, key) >= 0, f"data.{key} must not be negative, got {getattr(self, key)}")
        require(
            self.test_size is None or self.test_size >= 0, f"data.test_size must not be negative, got {self.test_size}"
        )
        for key in ("stride", "test_n_future"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"data.{key} must be at least 1, got {value}")
        require(
            self.channels in (1, 3) or self.name in self.ARRAYS,
            f"data.channels must be 1 (grey) or 3 (RGB), got {self.channels}",
        )
        require_choice("data.layout", self.layout, ("auto", "series", "clips"))
        require_choice("data.normalize", self.normalize, ("standard", "minmax", "none"))
        require_choice("data.nan", self.nan, ("refuse", "mask"))
        require(
            self.resize is None or (len(self.resize) == 2 and min(self.resize) >= 1),
            f"data.resize must be [H, W] of positive numbers, got {self.resize}",
        )
        require(self.name != "array" or self.path is not None, "data.path is missing: the array file or Zarr folder")
        require(
            not (self.thresholds or self.fss_scales) or self.name in self.ARRAYS,
            "data.thresholds and data.fss_scales score gridded arrays (data.name: array, taxibj or weatherbench)",
        )
        require(
            not self.fss_scales or bool(self.thresholds), "data.fss_scales needs data.thresholds: FSS is of an event"
        )
        require(
            all(s >= 1 for s in self.fss_scales or []),
            f"data.fss_scales are grid cells, at least 1, got {self.fss_scales}",
        )
        require_choice("data.crop", self.crop, ("center", "none"))
        require_choice("data.protocol", self.protocol, ("official", "study"))
        require(self.split in (1, 2, 3), f"data.split must be 1, 2 or 3 (UCF101 split lists), got {self.split}")
        require(
            len(self.split_fractions) == 3 and min(self.split_fractions) >= 0 and self.split_fractions[0] > 0,
            f"data.split_fractions must be three non-negative fractions with train > 0, got {self.split_fractions}",
        )
        require(
            self.name in ("moving_mnist", "array") or self.root is not None,
            f"data.root is missing: the folder that holds the {self.name} "
            + ("files" if self.name in self.ARRAYS else "videos"),
        )

    @property
    def test_length(self) -> int:
        return self.n_context + (self.test_n_future or self.n_future)

    @property
    def total_length(self) -> int:
        return self.n_context + self.n_future

    @property
    def frame_size(self) -> tuple[int, int]:
        """``image_size`` as (H, W)."""
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)

    @property
    def is_array(self) -> bool:
        """Gridded arrays in physical units (not images in [0, 1])."""
        return self.name in self.ARRAYS


@dataclass
class TrainConfig:
    """Training policy: loss weights, optimiser, schedule and scheduled sampling."""

    lr: float = 1e-3  # Adam learning rate (the peak with lr_schedule onecycle)
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
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's betas
    weight_decay: float = 0.0  # Adam's weight decay (L2)
    lr_schedule: str = "none"  # none | onecycle
    onecycle_pct_start: float = 0.1  # onecycle: the fraction of the budget spent raising the learning rate
    grad_clip: float | None = None  # clip the gradient norm to this (null: no clipping)
    # How the frame-feedback models see future frames during training (schedules.py):
    # none: always their own predictions; scheduled: PredRNN's decaying teacher forcing;
    # reverse: PredRNN-V2's reverse scheduled sampling; teacher_forcing: PhyDNet's (per batch,
    # all future steps read the true frames with probability 1 - teacher_forcing_decay * epoch).
    sampling: str = "none"
    sampling_start: float = 1.0  # scheduled: the first probability of feeding the true frame
    sampling_changing_rate: float = 2e-5  # scheduled: how much that probability falls per iteration
    sampling_stop_iter: int = 50_000  # scheduled: the iteration from which it is 0
    r_sampling_step_1: int = 25_000  # reverse: the iteration at which both probabilities leave 0.5
    r_sampling_step_2: int = 50_000  # reverse: the iteration at which the encoder's reaches 1, the decoder's 0
    r_exp_alpha: float = 2_500.0  # reverse: time constant (iterations) of the encoder's rise
    teacher_forcing_decay: float = 0.003  # teacher_forcing: how much the probability falls per epoch
    reverse_input: bool = False  # official PredRNN: second step on the time-reversed clip
    image_every_n_steps: int = 250  # TensorBoard example images every this many steps
    # A NaN or Inf loss: stop (name the step; the last good checkpoint stays) or skip the step.
    on_nonfinite: str = "stop"
    seed: int = 0  # seed of the weights' initialisation and of the sampling masks

    def __post_init__(self) -> None:
        require(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        require(self.l1_weight >= 0, f"train.l1_weight must not be negative, got {self.l1_weight}")
        require(self.bce_weight >= 0, f"train.bce_weight must not be negative, got {self.bce_weight}")
        require_choice("train.lr_schedule", self.lr_schedule, ("none", "onecycle"))
        require_choice("train.sampling", self.sampling, ("none", "scheduled", "reverse", "teacher_forcing"))
        require(
            self.teacher_forcing_decay >= 0,
            f"train.teacher_forcing_decay must not be negative, got {self.teacher_forcing_decay}",
        )
        require_choice("train.on_nonfinite", self.on_nonfinite, ("stop", "skip"))
        require(self.grad_clip is None or self.grad_clip > 0, f"train.grad_clip must be positive, got {self.grad_clip}")
        require(
            self.r_sampling_step_2 > self.r_sampling_step_1,
            "train.r_sampling_step_2 must be after train.r_sampling_step_1",
        )


@dataclass
class TrainerConfig:
    """What Lightning's Trainer gets: budget, hardware and logging."""

    max_epochs: int = 10  # epochs to train (-1: no limit)
    max_steps: int = -1  # optimiser steps to train (-1: no limit)
    max_time_minutes: float | None = None  # wall-clock training budget in minutes (null: none)
    # auto: the fastest of fp32 / bf16-mixed measured on this machine (framecast.speed);
    # 32 | bf16-mixed | 16-mixed | ...: always obeyed
    precision: str = "auto"
    accelerator: str = "auto"  # Lightning's accelerator: auto | cpu | gpu | ...
    devices: str | int = "auto"  # Lightning's devices per node: auto, a count or a list such as "0,1"
    num_nodes: int = 1  # machines (multi-node DDP)
    strategy: str = "auto"  # auto | ddp (framecast's: tolerates unused parameters) | Lightning's others
    limit_train_batches: int | float = 1.0  # training batches per epoch: a fraction (1.0: all) or a count
    limit_val_batches: int | float = 1.0  # validation batches: a fraction (1.0: all) or a count
    val_check_interval: int | float = 1.0  # validate every this fraction of an epoch, or every this many batches
    log_every_n_steps: int = 20  # log the training loss every this many steps
    # last.ckpt is rewritten every this many optimiser steps (default: 5 x log_every_n_steps)
    checkpoint_every_n_steps: int | None = None
    enable_progress_bar: bool = True  # progress: a bar on a terminal, plain lines in a log; false: none
    channels_last: bool | str = "auto"  # true | false | auto (measured with the precision)
    # CPU training: the activations kept for the backward pass are copied into 64 MiB blocks,
    # given back as the backward pass frees them (framecast.speed.arena): the same results bit for
    # bit, a lower memory peak; it engages where a pass copies at least 1 GiB (the official sizes)
    activation_arena: bool = True
    # CPU training: fixed (glibc only) fixes glibc's mmap threshold at 1 MiB: a lower peak without
    # the arena, 12-26% slower official steps (framecast.speed.malloc); default: glibc as it is
    malloc: str = "default"

    def __post_init__(self) -> None:
        allowed = ("auto", "32", "32-true", "bf16-mixed", "bf16-true", "16-mixed", "64")
        self.precision = str(self.precision)
        if isinstance(self.channels_last, str) and self.channels_last.lower() in ("true", "false"):
            self.channels_last = self.channels_last.lower() == "true"
        require(
            self.channels_last in (True, False, "auto"),
            f"trainer.channels_last must be true, false or auto, got {self.channels_last!r}",
        )
        require_choice("trainer.precision", self.precision, allowed)
        require_choice("trainer.malloc", self.malloc, ("default", "fixed"))
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
class EvaluationConfig:
    """How test scores get their uncertainty: the bootstrap behind every 95% interval and paired test."""

    bootstrap_resamples: int = 1000  # resamples of the test clips (Efron & Tibshirani: 1,000 or more for intervals)
    bootstrap_seed: int = 0  # their seed: the same seed gives the same intervals and verdicts
    # clips resampled together: auto: as many as share a frame (test windows that overlap, as
    # arrays' 1-step windows do: a circular block bootstrap); 1: every clip on its own; at most
    # a quarter of the test clips
    bootstrap_block: int | str = "auto"

    def __post_init__(self) -> None:
        require(
            self.bootstrap_resamples >= 100,
            f"evaluation.bootstrap_resamples must be at least 100, got {self.bootstrap_resamples}",
        )
        require(self.bootstrap_seed >= 0, f"evaluation.bootstrap_seed must not be negative, got {self.bootstrap_seed}")
        if isinstance(self.bootstrap_block, str) and self.bootstrap_block.isdigit():
            self.bootstrap_block = int(self.bootstrap_block)
        require(
            self.bootstrap_block == "auto" or (isinstance(self.bootstrap_block, int) and self.bootstrap_block >= 1),
            f"evaluation.bootstrap_block must be auto or a whole number of clips (1: each clip alone), got {self.bootstrap_block!r}",
        )


@dataclass
class RunConfig:
    """Everything one training run needs; saved beside each checkpoint as ``config.yaml``."""

    # name: a registered model (`framecast models`); the other keys are the model's own
    model: dict[str, Any] = field(default_factory=lambda: {"name": "convlstm"})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)  # test scores' intervals
    out_dir: str = "runs/default"  # the run folder: config.yaml, checkpoints/, tb/

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


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """Repeated ``--set KEY=VALUE`` arguments (model keys for ``convert`` and the benchmarks) as a
    mapping, values read as YAML scalars like every other override."""
    bad = next((item for item in items or [] if "=" not in item), None)
    if bad is not None:
        raise ConfigError(f"--set takes key=value, got '{bad}'")
    return parse_overrides([f"--{item}" for item in items or []])


def build_run_config(values: dict[str, Any]) -> RunConfig:
    return build_dataclass(RunConfig, values)


def save_yaml(obj: dict[str, Any], path: str | Path) -> None:
    from framecast.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(obj, sort_keys=False))


def show_value(value: Any) -> str:
    """A config value as it is written in YAML and on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(show_value, value)) + "]"
    return str(value)
