"""The model registry: ``register_model``, ``create_model``, ``list_models`` and ``model_size``.

Every model family declares a typed config dataclass and registers one or more named variants
of it. ``create_model(name, **overrides)`` builds ``ModelClass(Config(**defaults, **overrides))``
and refuses unknown keys with the list of valid ones.

A trainable model also registers named sizes, each a set of overrides: ``published`` (the
paper's or official code's Moving MNIST size), ``cpu`` (the recommended CPU size, the model
section of ``configs/cpu/<name>.yaml``) and ``test`` (seconds on a CPU at 64x64). The key
``size`` picks one: ``create_model("convlstm", size="cpu")``, ``--model.size cpu`` or
``size: cpu`` in YAML; explicit keys win over the size's. ``size`` is never part of the
resolved config, so checkpoints store the sizes themselves.
"""

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from framecast.errors import ConfigError, did_you_mean, unknown_choice
from framecast.validation import build_dataclass


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[nn.Module]
    config_cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    trainable: bool = True
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)  # size name -> overrides
    paper: str = ""  # link to the paper (the module docstring cites it in full)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    config_cls: type,
    *,
    defaults: dict[str, Any] | None = None,
    sizes: dict[str, dict[str, Any]] | None = None,
    description: str = "",
    trainable: bool = True,
    paper: str = "",
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that registers a model variant under ``name``.

    Args:
        name: registry name, e.g. ``"predrnn"``.
        config_cls: the family's config dataclass.
        defaults: values that differ from the dataclass defaults for this variant.
        sizes: named overrides on top of ``defaults``; trainable models register
            ``published``, ``cpu`` and ``test`` (tests/test_models.py checks it).
        description: one line for ``framecast models``.
        trainable: False for parameter-free baselines (they are evaluated, never fitted).
        paper: link to the paper the model follows (trainable models have one; the docs'
            models page and tests/test_docs.py read it).
    """

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        fields = {f.name for f in dataclasses.fields(config_cls)}
        if "size" in fields:
            raise ValueError(f"model '{name}': 'size' is reserved (it picks a registered size); rename the field")
        for what, values in [("defaults", defaults or {})] + [(f"size '{k}'", v) for k, v in (sizes or {}).items()]:
            bad = set(values) - fields
            if bad:
                raise ValueError(f"model '{name}': {what} {sorted(bad)} are not fields of {config_cls.__name__}")
        _REGISTRY[name] = ModelEntry(
            name,
            cls,
            config_cls,
            dict(defaults or {}),
            description,
            trainable,
            {k: dict(v) for k, v in (sizes or {}).items()},
            paper,
        )
        return cls

    return wrap


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(unknown_choice("model", name, _REGISTRY))
    return _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models that match a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_size(name: str, size: str) -> dict[str, Any]:
    """The overrides of the registered size ``size`` of model ``name`` (a copy)."""
    entry = get_entry(name)
    if not isinstance(size, str) or size not in entry.sizes:
        if not entry.sizes:
            raise ConfigError(f"model.size: model '{name}' has no registered sizes; leave model.size out")
        choices = sorted(entry.sizes)
        raise ConfigError(
            f"model.size: model '{name}' has no size '{size}'{did_you_mean(str(size), choices)}; "
            f"choose from: {', '.join(choices)}"
        )
    return dict(entry.sizes[size])


def model_config(name: str, **overrides: Any) -> Any:
    """The resolved, validated config of model ``name`` with ``overrides`` applied.

    ``size=<name>`` starts from that registered size; the other overrides win over it.
    """
    entry = get_entry(name)
    size = overrides.pop("size", None)
    values = {**entry.defaults, **(model_size(name, size) if size is not None else {}), **overrides}
    return build_dataclass(entry.config_cls, values, prefix="model.")


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; keyword overrides replace config defaults.

    Example:
        >>> model = create_model("convlstm", num_hidden=(32, 32), patch_size=4)
        >>> model = create_model("convlstm", size="cpu")  # the recommended CPU size
    """
    entry = get_entry(name)
    model = entry.cls(model_config(name, **overrides))
    model.model_name = name
    return model


def parameter_count(name: str, size: str | None = None) -> int:
    """Parameters of model ``name`` at registered ``size`` (or its defaults), built on the meta
    device: shapes only, so published sizes count in a moment."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name, **({} if size is None else {"size": size})).parameters())
