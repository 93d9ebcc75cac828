"""The model registry: ``register_model``, ``create_model`` and ``list_models``.

Every model family declares a typed config dataclass and registers one or more named variants
of it. ``create_model(name, **overrides)`` builds ``ModelClass(Config(**defaults, **overrides))``
and refuses unknown keys with the list of valid ones.
"""

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from framecast.config import build_dataclass
from framecast.errors import ConfigError, unknown_choice


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[nn.Module]
    config_cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    trainable: bool = True


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    config_cls: type,
    *,
    defaults: dict[str, Any] | None = None,
    description: str = "",
    trainable: bool = True,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that registers a model variant under ``name``.

    Args:
        name: registry name, e.g. ``"predrnn"``.
        config_cls: the family's config dataclass.
        defaults: values that differ from the dataclass defaults for this variant.
        description: one line for ``framecast models``.
        trainable: False for parameter-free baselines (they are evaluated, never fitted).
    """

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        fields = {f.name for f in dataclasses.fields(config_cls)}
        bad = set(defaults or {}) - fields
        if bad:
            raise ValueError(f"model '{name}': defaults {sorted(bad)} are not fields of {config_cls.__name__}")
        _REGISTRY[name] = ModelEntry(name, cls, config_cls, dict(defaults or {}), description, trainable)
        return cls

    return wrap


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(unknown_choice("model", name, _REGISTRY))
    return _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models that match a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_config(name: str, **overrides: Any) -> Any:
    """The resolved, validated config of model ``name`` with ``overrides`` applied."""
    entry = get_entry(name)
    values = {**entry.defaults, **overrides}
    return build_dataclass(entry.config_cls, values, prefix="model.")


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; keyword overrides replace config defaults.

    Example:
        >>> model = create_model("convlstm", num_hidden=(32, 32), patch_size=4)
    """
    entry = get_entry(name)
    model = entry.cls(model_config(name, **overrides))
    model.model_name = name
    return model
