"""Print the lowest versions pyproject.toml allows, as pip pins (``name==floor``, one a line).

Every requirement of ``[project] dependencies`` and of the optional extras must have a ``>=``
floor; this turns each into an ``==`` pin, so ``make test-min`` installs exactly the floors the
package declares and the two cannot drift. A requirement without a floor is an error.

    python scripts/min_versions.py [--extras dev,maxvit,lpips] [--pyproject pyproject.toml]
"""

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)")
FLOOR = re.compile(r">=\s*([0-9][^,;\s]*)")


def floors(pyproject: Path, extras: list[str] | None = None) -> dict[str, str]:
    """{normalised name: floor} of the dependencies and the chosen extras (all when None)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras or []) - set(optional))
    if unknown:
        raise SystemExit(f"min_versions: no extra {', '.join(unknown)} in {pyproject}")
    reqs = list(project.get("dependencies", []))
    for extra in optional if extras is None else extras:
        reqs += optional[extra]
    out: dict[str, str] = {}
    for req in reqs:
        m = NAME.fullmatch(req)
        spec = m.group(3).split(";")[0] if m else ""
        floor = FLOOR.search(spec)
        if not m or not floor:
            raise SystemExit(f"min_versions: {req!r} in {pyproject} has no '>=' floor")
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        if out.get(name, floor.group(1)) != floor.group(1):
            raise SystemExit(f"min_versions: {name} has two floors ({out[name]}, {floor.group(1)}) in {pyproject}")
        out[name] = floor.group(1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    ap.add_argument("--extras", default=None, help="comma-separated extras (default: all)")
    args = ap.parse_args(argv)
    extras = None if args.extras is None else [e for e in args.extras.split(",") if e]
    for name, floor in floors(args.pyproject, extras).items():
        print(f"{name}=={floor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
