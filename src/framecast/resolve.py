"""A run config resolved once, at the entry, into one object that flows down.

``framecast fit``, ``compare`` and the Python API build a ``RunConfig`` (typed, validated, no
file opened) and resolve it here exactly once: the data's shape is read from its files (gridded
arrays: channels and frame size follow the array), and the model's full config is resolved from
the registry's defaults, the run's overrides and the data. The runner then adds the measured
precision and memory layout (``with_choice``). Everything below the entry reads this object;
nothing resolves the config again.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

from framecast.config import DataConfig, RunConfig, to_dict
from framecast.errors import ConfigError
from framecast.registry import model_config


@dataclass(frozen=True)
class ResolvedRun:
    """A ``RunConfig`` with everything derived from it: what ``config.yaml`` holds.

    Attributes:
        config: the run config, its data shape read from the data's files and, once
            ``with_choice`` ran, the trainer's precision and layout concrete.
        model: the model's full config (registry defaults, run overrides, data-derived sizes).
        choice: the precision and layout choice with its evidence (``framecast.speed``), or None
            before it is made.
    """

    config: RunConfig
    model: dict[str, Any]
    choice: Any = None

    @property
    def model_name(self) -> str:
        return self.config.model_name

    def as_dict(self) -> dict[str, Any]:
        """Plain values with the model's fields resolved: what ``config.yaml`` holds and
        ``--print-config`` prints."""
        return {**to_dict(self.config), "model": {"name": self.model_name, **self.model}}

    def with_choice(self, choice: Any) -> "ResolvedRun":
        """This run with the trainer's precision and layout set to ``choice``'s."""
        trainer = dataclasses.replace(
            self.config.trainer, precision=choice.precision, channels_last=choice.channels_last
        )
        return dataclasses.replace(self, config=dataclasses.replace(self.config, trainer=trainer), choice=choice)


def resolve_data(data: DataConfig) -> DataConfig:
    """``data`` with its shape read from its files: for gridded arrays ``channels`` and
    ``image_size`` follow the array (``data.resize``: that size instead). Data that is not on
    this machine is left as it is (reading it fails later, naming it)."""
    if not data.is_array:
        return data
    from framecast.data.array import array_shape

    shape = array_shape(data)
    if shape is None:
        return data
    channels, (h, w) = shape
    return dataclasses.replace(data, channels=channels, image_size=h if h == w else (h, w))


def resolve_model_config(cfg: RunConfig) -> dict[str, Any]:
    """The model's full config (registry defaults + run overrides), with data-derived sizes.

    ``channels``, ``image_size``, ``n_context`` and ``n_future`` follow the data unless the model
    sets them, in which case they must agree.
    """
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


def resolve_run(cfg: "RunConfig | ResolvedRun") -> ResolvedRun:
    """Resolve ``cfg`` (a ``ResolvedRun`` is returned as it is: resolving happens once)."""
    if isinstance(cfg, ResolvedRun):
        return cfg
    cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))
    return ResolvedRun(cfg, resolve_model_config(cfg))
