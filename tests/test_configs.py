"""Every config the project ships is valid: it builds, and its models build from it."""

from pathlib import Path

import pytest

import framecast
from framecast.compare import build_compare_config, run_config
from framecast.config import build_run_config, load_yaml, resolve_model_config

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
        assert model.config.image_size == run.data.image_size


def test_reference_configs_run_the_reference_way():
    """The time-to-quality baselines: contiguous tensors, unfused gates, no LR schedule."""
    for path in (ROOT / "reference").glob("*.yaml"):
        run = build_run_config(load_yaml(path))
        assert not run.trainer.channels_last and run.train.lr_schedule == "none"
        assert resolve_model_config(run)["fused_gates"] is False
