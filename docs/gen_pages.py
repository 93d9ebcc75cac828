"""The generated pages of the documentation site, made from the code they describe.

``docs/hooks.py`` adds them to the site at build time (``mkdocs build``); none is a file in
``docs/``. Each comes from the same functions as the command line, so the two cannot drift:

- ``models.md``: the registry (``framecast.registry``): paper, parameters per registered size
  (``parameter_count``), FLOPs (``framecast.evaluation.compare.registered_flops``, as
  ``framecast models`` prints them), each model's config keys (``framecast.cli.options.option_rows``,
  as ``framecast fit --model.name NAME --help`` lists them) and its family's module docstring
  (equations, the official code it follows, departures);
- ``configuration.md``: every key of the run and comparison config dataclasses, the rows of
  ``framecast fit --help`` and ``framecast compare --help`` (``framecast.cli.options.option_rows``), and
  the commands' own flags (``framecast.cli.build_parser``);
- ``benchmarks.md``: ``benchmarks/results_tables.py``'s page from ``benchmarks/results/``, whose
  files are copied into the site beside it (``benchmark_files``);
- ``changelog.md``: ``CHANGELOG.md``;
- ``reference/*.md``: one API reference page per package, a mkdocstrings block per module found
  in ``src/framecast`` (so a renamed module needs no edit here).

    python docs/gen_pages.py OUT_DIR   # write them all to OUT_DIR, to read them without mkdocs
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import pkgutil
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "framecast"
RESULTS_PREFIX = "benchmark-results/"  # where benchmarks/results/ lands in the site, seen from benchmarks.md
SIZES = ("published", "cpu", "test")

# API reference: package -> (page title, what it holds); "framecast" is the top-level modules
PACKAGES = {
    "framecast": "the Python API, registry, configs, checkpoints, conversion, command line",
    "framecast.models": "the models: pure nn.Modules, one file per family",
    "framecast.layers": "blocks shared by models",
    "framecast.data": "data sets and the data module",
    "framecast.training": "the LightningModule, fit and test, schedules, run logs",
    "framecast.evaluation": "metrics, LPIPS, comparisons, pictures",
    "framecast.forecasting": "the Forecaster and video, array and plot output",
    "framecast.speed": "precision, memory layout, activation memory, packed weights, machine profile",
}


def cell(text: object) -> str:
    """``text`` as one markdown table cell: pipes escaped, no raw HTML, one line."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def uncell(text: str) -> str:
    """The text a ``cell`` holds (for tests)."""
    return html.unescape(text.replace("\\|", "|"))


def _table(head: list[str], rows: list[list[object]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows),
    ]


def _options_table(rows: list[tuple[str, str, str]]) -> list[str]:
    """``framecast.cli.options.option_rows`` as a table: key (the flag without ``--``), type, meaning."""
    lines = ["| key | type | meaning (default) |", "|---|---|---|"]
    lines += [f"| `{flag[2:]}` | `{metavar}` | {cell(text)} |" for flag, metavar, text in rows]  # code spans keep pipes
    return lines


# ------------------------------------------------------------------------------------- models


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


_CODE_SPAN = re.compile(r"(`+).+?\1")


def _escape_prose(text: str, line_start: bool) -> str:
    """``*`` (products such as ``p*p*C``) and ``<`` as literal characters; a ``* `` that starts
    a list item stays one."""
    lead = re.match(r"\s*\* ", text) if line_start else None
    head, text = (text[: lead.end()], text[lead.end() :]) if lead else ("", text)
    return head + text.replace("\\", "\\\\").replace("*", "\\*").replace("<", "&lt;")


def docstring_markdown(doc: str) -> str:
    """A module docstring (plain text with reST-style ````code````) as markdown that shows it as
    written: code spans and indented blocks kept, other text escaped (``_escape_prose``)."""
    out, in_code, blank = [], False, True
    for line in inspect.cleandoc(doc).splitlines():
        if not line.strip():
            out.append(line)
            blank = True
            continue
        in_code = line.startswith("    ") and (blank or in_code) and not re.match(r"\s*[*-] ", line)
        blank = False
        if in_code:
            out.append(line)
            continue
        parts, last = [], 0
        for m in _CODE_SPAN.finditer(line):
            parts += [_escape_prose(line[last : m.start()], last == 0), m.group(0)]
            last = m.end()
        parts.append(_escape_prose(line[last:], last == 0))
        out.append("".join(parts))
    return "\n".join(out)


def _docstring(module_name: str) -> str:
    return docstring_markdown(sys.modules[module_name].__doc__ or "")


def models_page() -> str:
    import framecast  # noqa: F401  (registers the models)
    from framecast.cli.options import model_defaults, option_rows
    from framecast.evaluation.compare import registered_flops
    from framecast.registry import get_entry, list_models, parameter_count

    names = list_models()
    lines = [
        "# Models",
        "",
        "<!-- generated by docs/gen_pages.py from the registry (framecast.registry) -->",
        "",
        "Every model framecast registers, as `framecast models` lists them. Pick one with "
        "`--model.name NAME` (or `name:` under `model:` in YAML) and a registered size with `--model.size`: "
        "`published` is the paper's or the official code's Moving MNIST size, `cpu` the recommended CPU size "
        "(the model section of `configs/cpu/NAME.yaml`), `test` one that runs in seconds. Keys you set win over "
        "the size's. Parameters are counted per size; FLOPs are the forward pass of one 10 -> 10 clip at the "
        "size's frame size, a multiply-add counted as 2 (`torch.utils.flop_counter`; OpenSTL's tables, from "
        "fvcore, count it as 1, so halve these to compare).",
        "",
    ]
    rows, families = [], {}
    for name in names:
        entry = get_entry(name)
        params = [_millions(parameter_count(name, s)) if s in entry.sizes else "-" for s in SIZES]
        if not entry.trainable:
            params = ["0"] * len(SIZES)
        flops = [registered_flops(name, s) if s in entry.sizes else None for s in ("published", "cpu")]
        paper = f"[paper]({entry.paper})" if entry.paper else "-"
        family = entry.cls.__module__.rsplit(".", 1)[-1]
        rows.append(
            [
                f"[`{name}`](#{name})",
                paper,
                *params,
                *(f"{f / 1e9:.1f}" if f else "-" for f in flops),
                entry.description,
            ]
        )
        families.setdefault(entry.cls.__module__, []).append(name)
    head = ["model", "paper", "params published", "cpu", "test", "GFLOPs published", "cpu", "what it is"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[:2] + [cell(c) for c in r[2:]]) + " |" for r in rows]
    lines += [""]
    for module, members in families.items():
        family = module.rsplit(".", 1)[-1]
        lines += [f"## `{family}`: {', '.join(members)}", ""]
        lines += [
            f"Source: `src/framecast/models/{family}.py`; API: [`{module}`](reference/framecast.models.md#{module}).",
            "",
        ]
        doc = _docstring(module)
        if doc:
            lines += [doc, ""]
        for name in members:
            entry = get_entry(name)
            lines += [f"### `{name}` {{ #{name} }}", "", entry.description + ".", ""]
            if entry.paper:
                lines += [f"Paper: <{entry.paper}>", ""]
            if entry.sizes:
                sizes = [
                    [s, _millions(parameter_count(name, s)), ", ".join(f"{k}: {v}" for k, v in over.items()) or "-"]
                    for s, over in entry.sizes.items()
                ]
                lines += _table(["size", "parameters", "keys it sets"], sizes) + [""]
            lines += [
                f"Config keys (`{entry.config_cls.__name__}`), as `framecast fit --model.name {name} --help` lists "
                "them; `data.KEY` means the key follows the data section:",
                "",
            ]
            lines += _options_table(option_rows(entry.config_cls, "model.", model_defaults(name))) + [""]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------- configuration


def config_sections() -> list[tuple[str, str, type, str, tuple[str, ...]]]:
    """(heading, description, dataclass, key prefix, keys left out) of every config section,
    in the order ``framecast fit --help`` and ``framecast compare --help`` show them."""
    from framecast.config import DataConfig, EvaluationConfig, RunConfig, TrainConfig, TrainerConfig
    from framecast.evaluation.compare import CompareConfig

    out = [("run", "The run's own keys (top level of a `fit` or `test` config).", RunConfig, "", ("model",))]
    for section, cls in (
        ("data", DataConfig),
        ("train", TrainConfig),
        ("trainer", TrainerConfig),
        ("evaluation", EvaluationConfig),
    ):
        out.append((section, (cls.__doc__ or "").strip(), cls, f"{section}.", ()))
    out.append(
        (
            "comparison",
            "The top level of a `framecast compare` config; its `data`, `train`, `trainer` and `evaluation` sections are the ones "
            "above, and `models` maps each label to a model's keys.",
            CompareConfig,
            "",
            ("models",),
        )
    )
    return out


def _commands() -> list[str]:
    """Each command's usage and its own flags, from the parser the command line uses."""
    import argparse

    from framecast.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    lines = []
    for name, command in sub.choices.items():
        about = (helps.get(name) or "").rstrip(".")
        lines += [f"### `framecast {name}`", "", about[:1].upper() + about[1:] + ".", ""]
        usage = command.format_usage().strip().removeprefix("usage: ")
        lines += ["```text", usage, "```", ""]
        rows = []
        for action in command._actions:
            if action.help == argparse.SUPPRESS or "-h" in action.option_strings:
                continue
            flag = ", ".join(action.option_strings) or action.dest
            choices = " \\| ".join(map(str, action.choices)) if action.choices else ""
            rows.append(f"| `{flag}` | {choices} | {cell(action.help or '')} |")
        if rows:
            lines += ["| flag | choices | meaning |", "|---|---|---|", *rows, ""]
    return lines


def configuration_page() -> str:
    from framecast.cli.options import option_rows

    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by docs/gen_pages.py from the config dataclasses, as --help shows them -->",
        "",
        "Every config key, its type, meaning and default, read from the config dataclasses by the same code as "
        "`framecast fit --help` and `framecast compare --help`. A key is set in a YAML file "
        "(`--config FILE`, repeatable) under its section, or on the command line as `--section.key VALUE`; later "
        "files and overrides win. `--print-config` prints the resolved YAML and exits.",
        "",
        "```yaml",
        "model:",
        "  name: predrnn",
        "  size: cpu",
        "data:",
        "  batch_size: 16",
        "trainer:",
        "  max_time_minutes: 30",
        "```",
        "",
        "The model's own keys depend on the model: [Models](models.md) lists them for each, and "
        "`framecast fit --model.name NAME --help` prints them. Two model keys are common to all: "
        "`model.name` (a registered model) and `model.size` (a registered size: published, cpu or test).",
        "",
    ]
    for heading, about, cls, prefix, skip in config_sections():
        lines += [f"## {heading}", "", about, "", f"Dataclass: `{cls.__module__}.{cls.__name__}`.", ""]
        lines += _options_table(option_rows(cls, prefix, None, skip)) + [""]
    lines += [
        "## Commands",
        "",
        "Each command's own flags, besides the config keys above. `fit`, `test` and `compare` also take "
        "`--config FILE` (repeatable) and `--section.key VALUE` overrides; `--debug` goes before or after the "
        "command.",
        "",
    ]
    lines += _commands()
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------- benchmarks


def _results_tables():
    spec = importlib.util.spec_from_file_location("results_tables", ROOT / "benchmarks" / "results_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("results_tables", module)
    spec.loader.exec_module(module)
    return module


def benchmarks_page() -> str:
    """``benchmarks/results_tables.py``'s page, its links to results folders pointed at their
    listing (``benchmark_folder_indexes``), a file the site has."""
    page = _results_tables().benchmarks_page(images_prefix=RESULTS_PREFIX)
    return re.sub(rf"\]\(({re.escape(RESULTS_PREFIX)}[^)\s]+/)\)", r"](\1index.html)", page)


def benchmark_files() -> dict[str, Path]:
    """Site path -> file of every result, plot and config in ``benchmarks/results/`` (the page
    links them); markdown files are left out, as they would become pages."""
    root = ROOT / "benchmarks" / "results"
    return {
        RESULTS_PREFIX + p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != ".md" and "runs" not in p.relative_to(root).parts
    }


def benchmark_folder_indexes() -> dict[str, str]:
    """Site path -> a plain HTML list of each results folder's files, so the page's links to
    folders (``benchmark-results/NAME/``) open a listing."""
    folders: dict[str, list[str]] = {}
    for uri in benchmark_files():
        folder, _, name = uri.rpartition("/")
        if folder != RESULTS_PREFIX.rstrip("/"):
            top = "/".join(folder.split("/")[:2])
            folders.setdefault(top, []).append(uri[len(top) + 1 :])
    out = {}
    for folder, names in folders.items():
        items = "".join(f'<li><a href="{html.escape(n)}">{html.escape(n)}</a></li>' for n in names)
        title = html.escape(folder.split("/", 1)[1])
        out[f"{folder}/index.html"] = (
            f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><ul>{items}</ul>\n"
        )
    return out


# --------------------------------------------------------------------------- changelog, reference


def changelog_page() -> str:
    return (ROOT / "CHANGELOG.md").read_text()


def modules(package: str) -> list[str]:
    """The modules of ``package`` (``framecast``: its top-level modules only), found in the source
    tree without importing them."""
    path = SRC.joinpath(*package.split(".")[1:])
    return [
        f"{package}.{m.name}"
        for m in pkgutil.iter_modules([str(path)])
        if not m.ispkg and not m.name.startswith("_") and (package != "framecast" or m.name != "__main__")
    ]


def reference_pages() -> dict[str, str]:
    pages = {}
    for package, about in PACKAGES.items():
        lines = [f"# `{package}`", "", f"{about[0].upper()}{about[1:]}.", ""]
        options = "    options:\n      show_root_heading: true\n      heading_level: 2\n"
        if package != "framecast":
            lines += [f"::: {package}", "    options:\n      members: false\n      show_root_heading: false", ""]
        for module in modules(package):
            lines += [f"::: {module}", options]
        pages[f"reference/{package}.md"] = "\n".join(lines).rstrip() + "\n"
    return pages


def pages() -> dict[str, str]:
    """Site path -> markdown of every generated page."""
    return {
        "models.md": models_page(),
        "configuration.md": configuration_page(),
        "benchmarks.md": benchmarks_page(),
        "changelog.md": changelog_page(),
        **reference_pages(),
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site-pages")
    for uri, text in pages().items():
        (out / uri).parent.mkdir(parents=True, exist_ok=True)
        (out / uri).write_text(text)
        print(out / uri)
