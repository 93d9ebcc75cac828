"""Who may import whom, read from the source (its AST, not a run): models and layers are pure
``nn.Module`` s, and the CPU speed machinery is reached only by training and forecasting."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "framecast"

# what models/ and layers/ may import of framecast: each other, and what the registry needs
PURE_ALLOWED = (
    "framecast.models",
    "framecast.layers",
    "framecast.registry",
    "framecast.errors",
    "framecast.validation",
)
# the packages whose modules may import framecast.speed (besides speed/ itself)
SPEED_CALLERS = ("training", "forecasting")


def _is_module(name: str, src: Path) -> bool:
    path = src.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or path.joinpath("__init__.py").is_file()


def framecast_imports(path: Path, src: Path = SRC) -> list[str]:
    """Every framecast module ``path`` imports, at any depth of its code (lazy imports included);
    relative imports resolved against its package; ``from package import module`` names the
    module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(src.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append(module)
            found += [f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}", src)]
    return [m for m in found if m == "framecast" or m.startswith("framecast.")]


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_models_and_layers_import_nothing_of_training_speed_or_forecasting():
    files = sorted([*SRC.joinpath("models").rglob("*.py"), *SRC.joinpath("layers").rglob("*.py")])
    assert len(files) > 10
    bad = {str(f.relative_to(SRC)): [m for m in framecast_imports(f) if not _within(m, PURE_ALLOWED)] for f in files}
    assert {f: ms for f, ms in bad.items() if ms} == {}


def test_only_training_and_forecasting_call_the_speed_package():
    bad = {}
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC)
        if rel.parts[0] in ("speed", *SPEED_CALLERS):
            continue
        speed = [m for m in framecast_imports(f) if _within(m, ("framecast.speed",))]
        if speed:
            bad[str(rel)] = speed
    assert bad == {}


def test_training_and_forecasting_use_only_the_speed_interface():
    """They call ``framecast.speed`` itself, never one of its modules (the interface is small)."""
    bad = {}
    for package in SPEED_CALLERS:
        for f in sorted(SRC.joinpath(package).rglob("*.py")):
            inner = [m for m in framecast_imports(f) if m.startswith("framecast.speed.")]
            if inner:
                bad[str(f.relative_to(SRC))] = inner
    assert bad == {}


def test_the_walk_sees_imports_of_every_form(tmp_path):
    pkg = tmp_path / "framecast" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "framecast" / "speed").mkdir()
    (tmp_path / "framecast" / "speed" / "__init__.py").write_text("")
    (tmp_path / "framecast" / "speed" / "arena.py").write_text("")
    f = pkg / "x.py"
    f.write_text(
        "import framecast.training\nfrom framecast import speed\nfrom ..speed import arena\n"
        "def lazy():\n    from framecast.forecasting import Forecaster\n"
    )
    assert set(framecast_imports(f, tmp_path / "framecast")) == {
        "framecast.training",
        "framecast",
        "framecast.speed",
        "framecast.speed.arena",
        "framecast.forecasting",
    }
