"""The documentation site: its generated pages say what the code does, and it builds strictly.

docs/gen_pages.py makes the models page from the registry and the configuration reference from
the config dataclasses with the functions ``--help`` uses; these tests hold both to the registry
and to the parsers ``framecast fit --help`` and ``framecast compare --help`` build.
"""

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from docs import gen_pages
from framecast import cli
from framecast.cli import options
from framecast.registry import get_entry, list_models

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `([^`]+)` \| `([^`]*)` \| (.*) \|$")


@pytest.fixture(scope="module")
def models_page() -> str:
    return gen_pages.models_page()


@pytest.fixture(scope="module")
def configuration_page() -> str:
    return gen_pages.configuration_page()


def _rows(page: str) -> dict[str, list[tuple[str, str]]]:
    """key -> [(type, help)] of every option row on a page (a key may appear in two sections)."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in page.splitlines():
        m = ROW.match(line)
        if m:
            rows.setdefault(m.group(1), []).append((m.group(2), gen_pages.uncell(m.group(3))))
    return rows


def _help_rows(command: str, argv: list[str]) -> dict[str, tuple[str, str]]:
    """key -> (type, help) of every config option that ``framecast COMMAND [argv] --help`` shows."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command_parser = sub.choices[command]
    own = {a.dest for a in command_parser._actions}
    options._config_help(command_parser, command, argv)
    return {
        a.option_strings[0][2:]: (a.metavar, a.help.replace("%%", "%"))
        for a in command_parser._actions
        if a.dest not in own and a.option_strings and a.option_strings[0] not in ("--model.name", "--model.size")
    }


def test_models_register_the_paper_their_docstring_cites():
    for name in list_models():
        entry = get_entry(name)
        links = [link.rstrip(").,") for link in re.findall(r"https?://\S+", sys.modules[entry.cls.__module__].__doc__)]
        if entry.trainable and links:
            assert entry.paper in links, f"{name}: register_model(paper=...) names none of {links}"


def test_models_page_lists_every_model_with_its_paper_and_sizes(models_page):
    for name in list_models():
        entry = get_entry(name)
        section = models_page.split(f"### `{name}` {{ #{name} }}", 1)
        assert len(section) == 2, f"{name} has no section"
        body = section[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        assert f"[`{name}`](#{name})" in models_page  # its row in the table
        if entry.paper:
            assert f"[paper]({entry.paper})" in models_page and entry.paper in body
        for size in entry.sizes:
            assert f"| {size} |" in body, (name, size)


def test_models_page_shows_each_models_keys_as_help_does(models_page):
    rows = _rows(models_page)
    for name in ("predrnn", "simvp", "copy_last"):
        shown = {k: v for k, v in _help_rows("fit", ["--model.name", name]).items() if k.startswith("model.")}
        assert shown, name
        for key, (metavar, text) in shown.items():
            assert (metavar, text) in rows[key], (name, key)


def test_configuration_page_lists_every_field_with_the_help_text_help_shows(configuration_page):
    rows = _rows(configuration_page)
    for command in ("fit", "compare"):
        shown = _help_rows(command, [])
        for key, (metavar, text) in shown.items():
            assert (metavar, text) in rows.get(key, []), (command, key)
    for _, _, cls, prefix, skip in gen_pages.config_sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and f.name not in skip and not dataclasses.is_dataclass(hints[f.name]):
                assert f"{prefix}{f.name}" in rows, f"{cls.__name__}.{f.name} is not on the page"


def test_docstring_markdown_keeps_products_and_code():
    text = gen_pages.docstring_markdown("Shapes (B, p*p*C) and ``a*b`` <x>.\n\n* a list item\n\n    code * kept <y>\n")
    assert "p\\*p\\*C" in text and "``a*b``" in text and "&lt;x>" in text
    assert "* a list item" in text and "    code * kept <y>" in text


def test_reference_pages_name_modules_that_exist():
    for uri, page in gen_pages.reference_pages().items():
        for module in re.findall(r"^::: (\S+)", page, flags=re.M):
            path = ROOT / "src" / Path(*module.split("."))
            assert path.with_suffix(".py").exists() or (path / "__init__.py").exists(), (uri, module)


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for page in ("models", "configuration", "benchmarks", "changelog", "architecture", "how-to/forecasting"):
        assert (site / page / "index.html").exists(), page
    for png in (ROOT / "benchmarks" / "results").rglob("*.png"):
        rel = png.relative_to(ROOT / "benchmarks" / "results").as_posix()
        assert (site / gen_pages.RESULTS_PREFIX / rel).exists(), rel
    shutil.rmtree(site)
