"""The config front end: YAML files and dotted overrides, validated by pydantic over the config
dataclasses; every key documented in ``--help``; ``--print-config``; shipped configs unchanged."""

import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import framecast
from framecast.cli import _values, main
from framecast.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    TrainerConfig,
    build_run_config,
    load_yaml,
    parse_set,
    to_dict,
)
from framecast.errors import ConfigError
from framecast.evaluation.compare import CompareConfig, build_compare_config, run_config
from framecast.registry import get_entry
from framecast.resolve import resolve_model_config, resolve_run
from framecast.validation import build_dataclass, field_help, type_label

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SNAPSHOT = ROOT / "tests" / "data" / "shipped_configs_resolved.json"
SECTIONS = {"data": DataConfig, "train": TrainConfig, "trainer": TrainerConfig}


def resolve_shipped(path: Path) -> dict:
    """A shipped config fully resolved: every section's values and every model's registry keys."""
    values = load_yaml(path)
    if "models" in values:
        cmp = build_compare_config(values)
        runs = {label: run_config(cmp, label) for label in cmp.models}
        out = {
            "compare": to_dict(cmp),
            "runs": {k: {"run": to_dict(r), "model": resolve_model_config(r)} for k, r in runs.items()},
        }
    else:
        run = build_run_config(values)
        out = {"run": to_dict(run), "model": resolve_model_config(run)}
    return json.loads(json.dumps(out))  # tuples -> lists, as the snapshot holds them


def differences(old, new, key=""):
    """Where ``new`` differs from ``old`` in value or type (1 vs 1.0, "32" vs 32). Keys that
    ``new`` has and ``old`` lacks are fields added since the snapshot, at their defaults."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d for k in old for d in (differences(old[k], new[k], f"{key}.{k}") if k in new else [f"{key}.{k}: gone"])
        ]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{key}[{i}]")]
    return [] if type(old) is type(new) and old == new else [f"{key}: {old!r} -> {new!r}"]


def test_shipped_configs_resolve_exactly_as_before():
    """tests/data/shipped_configs_resolved.json holds every shipped config as it resolved when the
    snapshot was written: a default or a coercion that changes under a shipped config fails here.
    A new config needs nothing (it resolves, and is compared once it is in the snapshot); a change
    meant on purpose (a new default, an edited config) rewrites it: `make snapshot`."""
    now = {str(p.relative_to(CONFIGS)): resolve_shipped(p) for p in sorted(CONFIGS.rglob("*.yaml"))}
    if os.environ.get("FRAMECAST_WRITE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    before = json.loads(SNAPSHOT.read_text())
    gone = sorted(set(before) - set(now))
    assert not gone, f"shipped configs removed: {gone}; rewrite the snapshot with `make snapshot`"
    changed = [f"{name}{d}" for name in before for d in differences(before[name], now[name])]
    assert not changed, "\n".join(changed)


def test_the_snapshot_comparison_sees_a_changed_type():
    assert differences({"a": {"b": 1}}, {"a": {"b": 1.0}}) == [".a.b: 1 -> 1.0"]
    assert differences({"a": [1, 2]}, {"a": [1, 3], "new": 0}) == [".a[1]: 2 -> 3"]


def config_classes() -> dict[str, type]:
    """Every config dataclass a user sets keys of: the run's sections, the comparison's and each
    registered model's (framecast's own models; an example registered by a test is not)."""
    classes = {"run": RunConfig, "compare": CompareConfig, **SECTIONS}
    for name in framecast.list_models():
        cls = get_entry(name).config_cls
        if cls.__module__.startswith("framecast."):
            classes[f"model {name}"] = cls
    return classes


def test_every_config_key_has_a_help_text():
    """A new field needs its `#` comment (beside it, or on the lines directly above): it is the
    field's meaning in `framecast fit --help`."""
    missing = []
    for where, cls in config_classes().items():
        hints, helps = typing.get_type_hints(cls), field_help(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]) and not helps[f.name]:
                missing.append(f"{where}: {cls.__name__}.{f.name}")
    assert not missing, "fields without a help comment: " + ", ".join(missing)


@dataclass
class Documented:
    plain: int = 1
    beside: int = 2  # said beside it
    # said above it,
    # on two lines
    above: int = 3
    # not this one
    both: int = 4  # beside wins over the line above
    # a heading, cut off by a blank line

    after_blank: str = "x"

    def __post_init__(self) -> None:
        if self.plain < 0:
            raise ValueError("a check that is not a ConfigError: a bug")


def test_field_help_reads_the_comment_beside_else_the_lines_above():
    assert field_help(Documented) == {
        "plain": "",
        "beside": "said beside it",
        "above": "said above it, on two lines",
        "both": "beside wins over the line above",
        "after_blank": "",
    }


def test_field_help_reads_a_field_that_ruff_format_wrapped(tmp_path, monkeypatch):
    (tmp_path / "wrapped_config.py").write_text(
        "from dataclasses import dataclass\n\n\n@dataclass\nclass Wrapped:\n"
        "    layout: str = (\n        'auto'  # said inside the parentheses\n    )\n    after: int = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from wrapped_config import Wrapped

    assert field_help(Wrapped) == {"layout": "said inside the parentheses", "after": ""}


def test_a_check_that_is_not_a_config_error_keeps_its_type():
    with pytest.raises(ValueError, match="a bug") as info:
        build_dataclass(Documented, {"plain": -1})
    assert not isinstance(info.value, ConfigError)  # a bug in a check is not one line for the user


def test_values_are_converted_as_yaml_and_the_command_line_need():
    cfg = build_run_config(
        _values(
            ["--train.lr", "1e-3", "--trainer.precision", "32", "--data.batch_size", "8.0", "--model.name", "predrnn"]
            + ["--trainer.limit_train_batches", "1.0", "--trainer.limit_val_batches", "3", "--trainer.devices", "2"]
        )
    )
    assert cfg.train.lr == 1e-3 and type(cfg.train.lr) is float  # YAML 1.1 reads "1e-3" as a string
    assert cfg.trainer.precision == "32"  # a number to YAML
    assert cfg.data.batch_size == 8 and type(cfg.data.batch_size) is int
    # 1.0 is every batch and 3 is three batches (the old coercion made 1.0 the integer 1: one batch)
    assert type(cfg.trainer.limit_train_batches) is float and type(cfg.trainer.limit_val_batches) is int
    assert cfg.trainer.devices == 2 and cfg.train.betas == (0.9, 0.999)
    assert resolve_model_config(cfg)["num_hidden"] == [128, 128, 128, 128]
    for bad in (["--data.batch_size", "true"], ["--train.lr", "false"], ["--trainer.devices", "true"]):
        with pytest.raises(ConfigError, match="expected .*, got (true|false)$"):
            build_run_config(_values(bad))


def test_later_files_and_overrides_win(tmp_path):
    (tmp_path / "a.yaml").write_text("model: {name: predrnn, num_hidden: [8, 8]}\ndata: {batch_size: 4, seed: 3}\n")
    (tmp_path / "b.yaml").write_text("data: {batch_size: 6}\ntrain: {lr: 2.0e-4}\n")
    files = ["--config", str(tmp_path / "a.yaml"), f"--config={tmp_path / 'b.yaml'}"]
    cfg = build_run_config(_values([*files, "--data.seed", "5", "--model.filter_size", "3"]))
    assert (cfg.data.batch_size, cfg.data.seed, cfg.train.lr) == (6, 5, 2e-4)
    assert cfg.model == {"name": "predrnn", "num_hidden": [8, 8], "filter_size": 3}
    cfg = build_run_config(_values([*files, "--model.name", "convlstm"]))  # another model: its own keys only
    assert cfg.model == {"name": "convlstm"}


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def flat(text: str) -> str:
    return " ".join(text.split())


def expected_options(cls: type, prefix: str, defaults: dict) -> list[str]:
    """``--key TYPE help (default: X)`` of every field, as the help shows it (whitespace folded)."""
    from framecast.config import show_value

    hints, helps = typing.get_type_hints(cls), field_help(cls)
    return [
        flat(
            f"--{prefix}{f.name} {type_label(hints[f.name])} {helps[f.name]} (default: {show_value(defaults[f.name])})"
        )
        for f in dataclasses.fields(cls)
        if not dataclasses.is_dataclass(hints[f.name]) and f.name not in ("model", "models")
    ]


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one option per line: no wrapping inside a long word


def test_fit_help_lists_every_key_with_type_default_and_meaning(capsys, wide):
    code, out, _ = run(["fit", "--help"], capsys)
    assert code == 0
    text = flat(out)
    for section, cls in SECTIONS.items():
        for option in expected_options(cls, f"{section}.", to_dict(cls())):
            assert option in text, option
    assert "--out_dir str the run folder" in text
    assert "`framecast fit --model.name predrnn --help` lists predrnn's" in text  # the model's own keys
    assert "--model.num_hidden" not in text


@pytest.mark.parametrize("command", ["fit", "test"])
def test_help_with_a_model_lists_its_own_keys_and_registry_defaults(command, capsys, wide):
    code, out, _ = run([command, "--model.name", "predrnn_v2", "--help"], capsys)
    assert code == 0
    text = flat(out)
    defaults = {**to_dict(framecast.create_model("predrnn_v2").config), "channels": "data.channels"}
    defaults["image_size"] = "data.image_size"
    for option in expected_options(get_entry("predrnn_v2").config_cls, "model.", defaults):
        assert option in text, option
    assert "(default: 0.1)" in text  # decouple_beta: predrnn_v2's registered default, not the dataclass's 0.0


def test_help_reads_the_model_from_a_config_file_and_compare_lists_its_keys(capsys, wide):
    code, out, _ = run(["fit", "--config", str(CONFIGS / "cpu" / "maxvit.yaml"), "--help"], capsys)
    assert code == 0 and "--model.window_size int block attention" in flat(out)
    code, out, _ = run(["compare", "--help"], capsys)
    text = flat(out)
    assert code == 0
    for option in expected_options(CompareConfig, "", to_dict(CompareConfig())):
        assert option in text, option
    for option in expected_options(TrainerConfig, "trainer.", to_dict(TrainerConfig())):
        assert option in text, option
    with pytest.raises(SystemExit) as exit_:  # forecast takes no config: argparse's own help, with types
        main(["forecast", "--help"])
    assert exit_.value.code == 0 and "--start int" in capsys.readouterr().out


def test_print_config_prints_what_loads_back_to_the_same_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = CONFIGS / "predrnn_v2_mnist.yaml"
    code, out, err = run(["fit", "--config", str(path), "--trainer.max_epochs", "3", "--print-config"], capsys)
    assert code == 0 and not err and not list(tmp_path.iterdir())  # nothing trained, nothing written
    printed = yaml.safe_load(out)
    cfg = build_run_config(_values(["--config", str(path), "--trainer.max_epochs", "3"]))
    assert printed == resolve_run(cfg).as_dict()
    assert printed["model"]["decouple_beta"] == 0.1 and printed["trainer"]["max_epochs"] == 3  # resolved keys
    (tmp_path / "printed.yaml").write_text(out)
    assert resolve_run(build_run_config(load_yaml(tmp_path / "printed.yaml"))).as_dict() == printed


def test_compare_print_config_resolves_every_model_and_loads_back(capsys, tmp_path):
    path = CONFIGS / "compare_all_quick.yaml"
    code, out, _ = run(["compare", "--config", str(path), "--print_config"], capsys)
    assert code == 0
    printed = yaml.safe_load(out)
    cmp = build_compare_config(load_yaml(path))
    for label in cmp.models:
        assert {k: v for k, v in printed["models"][label].items() if k != "train"} == {
            "name": run_config(cmp, label).model_name,
            **resolve_model_config(run_config(cmp, label)),
        }
    (tmp_path / "printed.yaml").write_text(out)
    again = build_compare_config(load_yaml(tmp_path / "printed.yaml"))
    for label in cmp.models:
        a, b = run_config(cmp, label), run_config(again, label)
        assert (to_dict(a.train), resolve_model_config(a)) == (to_dict(b.train), resolve_model_config(b)), label


def test_set_arguments_are_typed_and_a_missing_value_is_named():
    """--set KEY=VALUE (convert, benchmarks/batch_size.py, benchmarks/memory.py): one parser."""
    assert parse_set(["checkpoint_cells=true", "num_hidden=[8, 8]", "lr=0.001"]) == {
        "checkpoint_cells": True,
        "num_hidden": [8, 8],
        "lr": 0.001,
    }
    assert parse_set(None) == {}
    with pytest.raises(ConfigError, match="--set takes key=value, got 'channels'"):
        parse_set(["channels"])
