"""README.md is the front door: short, every model named, its table rendered from the results
files, every link to a file of the project pointing at one that exists."""

import re
import subprocess
import sys
from pathlib import Path

import framecast

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_is_at_most_250_lines():
    n = len(README.read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines; move details into docs/"


def test_readme_names_every_registered_model():
    text = README.read_text()
    missing = [m for m in framecast.list_models() if f"`{m}`" not in text]
    assert not missing, f"README.md's model table lacks {missing}"


def test_readme_table_is_rendered_from_the_results_files():
    res = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "results_tables.py"), "check", str(README)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_readme_links_to_files_that_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local, "the walk found no local link"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
