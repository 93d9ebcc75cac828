"""framecast's own modules import each other without a circle, at module level, inside
functions and under ``TYPE_CHECKING`` alike (a lazy import only hides a circle; it does not
remove it), and each stays small enough to hold in one's head."""

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Run in a fresh interpreter, as `python -c`, so that nothing this test session imported counts.
SCRIPT = r"""
import ast, sys
from pathlib import Path

src = Path(sys.argv[1])
modules = {}
for path in sorted((src / "framecast").rglob("*.py")):
    parts = list(path.relative_to(src).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    modules[".".join(parts)] = (path, is_package)


def target(name):
    # the module a dotted name refers to: itself, else its closest enclosing module
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(tree):
    # every import statement: at module level, inside functions and under `if TYPE_CHECKING:`
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


graph = {}
for name, (path, is_package) in modules.items():
    package = name if is_package else name.rpartition(".")[0]
    edges = set()
    for node in imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges |= {target(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:  # `from framecast import models` imports the module framecast.models
                edges.add(target(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else target(base))
    graph[name] = sorted(e for e in edges if e and e != name)

cycles, state = [], {}


def visit(node, stack):
    state[node] = "open"
    stack.append(node)
    for nxt in graph[node]:
        if state.get(nxt) == "open":
            cycles.append(stack[stack.index(nxt):] + [nxt])
        elif nxt not in state:
            visit(nxt, stack)
    stack.pop()
    state[node] = "done"


for name in sorted(graph):
    if name not in state:
        visit(name, [])
edges = sum(map(len, graph.values()))
print(f"{len(graph)} modules, {edges} imports")
for cycle in cycles:
    print("import circle: " + " -> ".join(cycle))
sys.exit(1 if cycles else 0)
"""


def test_framecast_imports_have_no_circle():
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(SRC)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    modules, imports = (int(w) for w in res.stdout.split()[::2][:2])
    assert modules > 30 and imports > 60, res.stdout  # the walk really saw the package


def test_the_walk_finds_a_circle_hidden_in_a_function(tmp_path):
    """The checker itself: a lazy (function-level) import that closes a circle is caught."""
    pkg = tmp_path / "framecast"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from framecast.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from framecast import a\n")
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1 and "import circle: framecast.a -> framecast.b -> framecast.a" in res.stdout
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from framecast import a\n")
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1, res.stdout  # an import for annotations only is a circle too
    (pkg / "b.py").write_text("def g():\n    return 1\n")
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


MAX_LINES = 500


def test_no_module_is_over_500_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in sorted((SRC / "framecast").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"
