"""scripts/min_versions.py: the pins `make test-min` installs are exactly pyproject.toml's floors."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("min_versions", ROOT / "scripts" / "min_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_requirement_of_the_package_is_pinned_at_its_floor(capsys):
    mv = _script()
    assert mv.main([]) == 0
    pins = capsys.readouterr().out.split()
    if sys.version_info >= (3, 11):
        import tomllib

        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        names = {r.split(">=")[0].split("[")[0].strip().lower() for r in project["dependencies"]}
        names |= {r.split(">=")[0].strip().lower() for x in project["optional-dependencies"].values() for r in x}
        assert {p.split("==")[0] for p in pins} == names
    assert len(pins) == len(set(pins))  # timm and lpips are in two extras, pinned once
    assert "lightning==2.6" in pins  # Trainer.fit(..., weights_only=True) is new in Lightning 2.6


def test_floors_parse_markers_extras_and_refuse_a_missing_floor(tmp_path):
    mv = _script()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[project]\n"
        'dependencies = ["Foo_Bar[x]>=1.2,<2", "baz >= 0.3 ; python_version >= \'3.10\'"]\n'
        '[project.optional-dependencies]\ndev = ["qux>=4.0.1"]\nother = ["baz>=0.3"]\n'
    )
    assert mv.floors(pyproject) == {"foo-bar": "1.2", "baz": "0.3", "qux": "4.0.1"}
    assert mv.floors(pyproject, []) == {"foo-bar": "1.2", "baz": "0.3"}
    with pytest.raises(SystemExit, match="no extra nope"):
        mv.floors(pyproject, ["nope"])

    pyproject.write_text('[project]\ndependencies = ["foo<2"]\n')
    with pytest.raises(SystemExit, match="'foo<2' .* has no '>=' floor"):
        mv.floors(pyproject)
    pyproject.write_text('[project]\ndependencies = ["foo>=1"]\n[project.optional-dependencies]\nx = ["foo>=2"]\n')
    with pytest.raises(SystemExit, match="foo has two floors"):
        mv.floors(pyproject)
