"""Every config the project ships is valid: it builds, and its models build from it; the
recommended CPU configs and the quick comparisons use the models' registered cpu sizes."""

from dataclasses import replace
from pathlib import Path

import pytest

import framecast
from framecast.config import build_run_config, load_yaml, to_dict
from framecast.errors import ConfigError
from framecast.evaluation.compare import build_compare_config, run_config
from framecast.registry import get_entry, model_size
from framecast.resolve import resolve_model_config
from framecast.training.runner import make_task

ROOT = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_config_builds(path):
    values = load_yaml(ROOT / path)
    if "models" in values:
        cmp = build_compare_config(values)
        runs = [run_config(cmp, label) for label in cmp.models]
    else:
        runs = [build_run_config(values)]
    assert runs
    for run in runs:
        model = framecast.create_model(run.model_name, **resolve_model_config(run))
        # a fully convolutional model (SimVP, TAU) has no frame size of its own
        assert getattr(model.config, "image_size", run.data.image_size) == run.data.image_size


def test_reference_configs_run_the_reference_way():
    """The time-to-quality baselines: contiguous tensors, unfused gates, no LR schedule."""
    for path in (ROOT / "reference").glob("*.yaml"):
        run = build_run_config(load_yaml(path))
        assert not run.trainer.channels_last and run.train.lr_schedule == "none"
        assert resolve_model_config(run)["fused_gates"] is False


@pytest.mark.parametrize("name", [n for n in framecast.list_models() if get_entry(n).trainable])
def test_cpu_config_is_the_registered_cpu_size(name):
    """The recommended CPU size lives in the model's file (registered ``cpu`` size, required by
    tests/test_models.py); a measured configs/cpu/<name>.yaml, where there is one, runs exactly
    that size, so the two cannot drift apart."""
    path = ROOT / "cpu" / f"{name}.yaml"
    if not path.is_file():
        assert "cpu" in get_entry(name).sizes
        return
    section = dict(load_yaml(path)["model"])
    assert section.pop("name") == name
    assert section == to_dict(model_size(name, "cpu")), f"{path.name}: model section != registered cpu size"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("compare*quick.yaml")))
def test_quick_compares_run_the_registered_cpu_sizes(path):
    """Every trainable model of a quick comparison is at its registered cpu size (``size: cpu``)."""
    cmp = build_compare_config(load_yaml(ROOT / path))
    for label in cmp.models:
        run = run_config(cmp, label)
        if get_entry(run.model_name).trainable:
            at_cpu = replace(run, model={"name": run.model_name, "size": "cpu"})
            assert resolve_model_config(run) == resolve_model_config(at_cpu), f"{path}: {label}"


def test_model_size_in_run_and_compare_configs_is_resolved_and_not_saved():
    run = build_run_config({"model": {"name": "convlstm", "size": "test", "patch_size": 8}})
    resolved = resolve_model_config(run)
    assert "size" not in resolved  # checkpoints store the resolved sizes, never the size's name
    assert (resolved["num_hidden"], resolved["filter_size"], resolved["patch_size"]) == ([8, 8], 3, 8)
    task = make_task(run)
    assert "size" not in task.hparams.model_config and task.model.config.num_hidden == (8, 8)

    cmp = build_compare_config({"models": {"predrnn": {"size": "cpu"}, "maxvit": {"size": "test"}}})
    assert resolve_model_config(run_config(cmp, "predrnn"))["num_hidden"] == [48, 48]
    maxvit = resolve_model_config(run_config(cmp, "maxvit"))
    assert maxvit["dim"] == 32 and maxvit["n_context"] == 10  # the data's n_context wins over the size's 4
    with pytest.raises(ConfigError, match="model 'predrnn' has no size 'cpus'.*did you mean 'cpu'"):
        build_compare_config({"models": {"predrnn": {"size": "cpus"}}})
