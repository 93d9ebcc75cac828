"""The command line's config options: YAML files and ``--section.key VALUE`` overrides merged
into plain values, and ``--help`` built from the config dataclasses (each field's type, default
and the comment beside it), so the help cannot drift from the config."""

import argparse
from pathlib import Path
from typing import Any

from framecast.errors import FramecastError


def _split_configs(rest: list[str]) -> tuple[list[str], list[str]]:
    """Pull ``--config FILE`` pairs out of ``rest``; returns (files, other tokens)."""
    files, other, i = [], [], 0
    while i < len(rest):
        tok = rest[i]
        if tok == "--config":
            if i + 1 >= len(rest):
                raise FramecastError("--config needs a file")
            files.append(rest[i + 1])
            i += 2
            continue
        if tok.startswith("--config="):
            files.append(tok.split("=", 1)[1])
        else:
            other.append(tok)
        i += 1
    return files, other


def _values(rest: list[str]) -> dict[str, Any]:
    from framecast.config import load_yaml, merge, parse_overrides

    files, tokens = _split_configs(rest)
    values: dict[str, Any] = {}
    for f in files:
        values = merge(values, load_yaml(f))
    return merge(values, parse_overrides(tokens))


# Model keys that follow the data section unless the model section sets them (resolve_model_config)
_FROM_DATA = ("channels", "image_size", "n_context", "n_future")


def _field_defaults(cls: type) -> dict[str, Any]:
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def option_rows(cls: type, prefix: str = "", defaults: dict | None = None, skip=()) -> list[tuple[str, str, str]]:
    """``(flag, type, help)`` for every config key of dataclass ``cls``, as ``--help`` lists them:
    ``--prefix.field``, its type (framecast.validation.type_label) and its meaning (the comment
    beside it, framecast.validation.field_help) with its default (``defaults``, else the
    field's). Sections that are dataclasses themselves are left out. The docs' configuration
    reference is made from these rows."""
    import dataclasses
    import typing

    from framecast.config import show_value
    from framecast.validation import field_help, type_label

    defaults = _field_defaults(cls) if defaults is None else defaults
    hints, helps = typing.get_type_hints(cls), field_help(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.init and f.name not in skip and not dataclasses.is_dataclass(hints[f.name]):
            text = f"{helps[f.name]} (default: {show_value(defaults.get(f.name, ''))})".lstrip()
            rows.append((f"--{prefix}{f.name}", type_label(hints[f.name]), text))
    return rows


def _add_options(parser: argparse.ArgumentParser, title: str, cls: type, prefix: str, defaults: dict, skip=()) -> None:
    """One help group: the ``option_rows`` of dataclass ``cls``."""
    group = parser.add_argument_group(title)
    for flag, metavar, text in option_rows(cls, prefix, defaults, skip):
        group.add_argument(flag, metavar=metavar, help=text.replace("%", "%%"))


def _model_options(parser: argparse.ArgumentParser, name: str | None, command: str) -> None:
    """The model group: the chosen model's own fields, or how to see them."""
    from framecast.config import RunConfig
    from framecast.registry import get_entry, list_models

    group = parser.add_argument_group("model: the model and its own keys (models/<family>.py)")
    default = RunConfig().model_name if command == "fit" else "the checkpoint's; or a baseline"
    group.add_argument(
        "--model.name", metavar="str", help=f"a registered model: {', '.join(list_models())} (default: {default})"
    )
    entry = get_entry(name) if name else None
    sizes = ", ".join(entry.sizes) if entry and entry.sizes else "published, cpu, test"
    group.add_argument("--model.size", metavar="str", help=f"a registered size, {sizes}; explicit keys win over it")
    if entry is None:
        group.description = (
            f"The model's own keys depend on --model.name: `framecast {command} --model.name predrnn --help` "
            "lists predrnn's."
        )
        return
    _add_options(
        parser,
        f"model: {name}'s own keys ({entry.config_cls.__name__})",
        entry.config_cls,
        "model.",
        model_defaults(name),
    )


def model_defaults(name: str) -> dict[str, Any]:
    """The defaults ``--help`` shows for the keys of registered model ``name``: its resolved
    config, with ``data.<key>`` for the keys that follow the data section."""
    from framecast.config import to_dict
    from framecast.registry import get_entry, model_config

    entry = get_entry(name)
    try:
        defaults = to_dict(model_config(name))
    except FramecastError:  # defaults that do not stand alone (they need the data's sizes)
        defaults = {**_field_defaults(entry.config_cls), **entry.defaults}
    return {k: f"data.{k}" if k in _FROM_DATA else v for k, v in defaults.items()}


def _config_help(parser: argparse.ArgumentParser, command: str, rest: list[str]) -> str:
    """``framecast COMMAND --help``: the command's flags, then every config key of every section
    with its type, default and meaning, taken from the dataclasses."""
    from framecast.config import DataConfig, EvaluationConfig, RunConfig, TrainConfig, TrainerConfig

    try:
        values = _values(rest)
    except FramecastError:  # a missing --config file: its error comes when the command runs
        values = {}
    if command == "compare":
        from framecast.evaluation.compare import CompareConfig

        _add_options(parser, "comparison", CompareConfig, "", _field_defaults(CompareConfig), skip=("models",))
        parser.add_argument_group(
            "models.<label>: a model's keys",
            "Each model's section takes its registry name (name, default: the label), its own keys "
            "(`framecast fit --model.name LABEL --help` lists them) and a train section of its own.",
        )
    else:
        model = values.get("model")
        _model_options(parser, model.get("name") if isinstance(model, dict) else None, command)
        _add_options(parser, "run", RunConfig, "", _field_defaults(RunConfig), skip=("model",))
    for section, cls in (
        ("data", DataConfig),
        ("train", TrainConfig),
        ("trainer", TrainerConfig),
        ("evaluation", EvaluationConfig),
    ):
        _add_options(
            parser, f"{section}: {(cls.__doc__ or '').strip().rstrip('.')}", cls, f"{section}.", _field_defaults(cls)
        )
    return parser.format_help()


def _print_yaml(values: dict[str, Any]) -> None:
    import yaml

    print(yaml.safe_dump(values, sort_keys=False), end="")


def _config_usage(command: str) -> dict[str, Any]:
    extra = {"fit": " [--resume | --no-resume] [--print-config]", "compare": " [--models a,b] [--print-config]"}
    checkpoint = " [--checkpoint CKPT]" if command == "test" else ""
    return {
        "add_help": False,  # its own --help, after the config keys are known
        "usage": f"framecast {command}{checkpoint} [--config FILE]... [--section.key VALUE]...{extra.get(command, '')}",
        "description": "Config: YAML files (--config FILE) and --section.key VALUE overrides; later ones win.",
    }


def _trained_data(checkpoint: str, model: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The data config ``checkpoint`` was trained on (None: unknown), and a note when it was not
    stored in the checkpoint: from the run folder's config.yaml beside checkpoints/, else none
    (the defaults). Checkpoints of ``framecast convert`` and older ones store no data."""
    import dataclasses

    from framecast.config import DataConfig, load_yaml

    known = {f.name for f in dataclasses.fields(DataConfig)}
    run = (getattr(model, "checkpoint_meta", None) or {}).get("run_config")
    if isinstance(run, dict) and isinstance(run.get("data"), dict):
        return {k: v for k, v in run["data"].items() if k in known}, None
    path = Path(checkpoint)
    config = path.parent.parent / "config.yaml"
    if path.parent.name == "checkpoints" and config.is_file():
        data = load_yaml(config).get("data")
        if isinstance(data, dict):
            return (
                {k: v for k, v in data.items() if k in known},
                f"{path} does not store the data it was trained on; scoring on the data of {config}",
            )
    return None, (
        f"{path} does not store the data it was trained on, and no run folder's config.yaml is beside it; "
        f"scoring on the default data (built-in Moving MNIST 64x64, 10 -> 10) unless told otherwise"
    )


def results_folder(checkpoint: str | None) -> Path:
    """Where ``framecast test`` writes without ``--out``: beside the checkpoint or export it scores,
    ``<name>.test/`` (``runs/x/checkpoints/best.ckpt`` -> ``runs/x/checkpoints/best.test/``); a
    baseline (no checkpoint): ``runs/test/``."""
    if not checkpoint:
        return Path("runs/test")
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.test")
