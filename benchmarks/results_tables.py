"""What each file in ``benchmarks/results/`` is, and the markdown tables made from them.

A results file is named by what it measured and where (``results_name``), e.g.
``speed-train-infer-quick-auto-pt2.14-cpu-xeon-amx.json``: the benchmark, its settings, the torch
version and the machine (the CPU model, and ``amx`` or ``avx512bf16`` where it has them). Each
records ``command``, ``date`` (YYYY-MM-DD) and ``machine`` at its top (``provenance`` makes them
for a benchmark script). A folder holds a benchmark whose output is more than one file
(``results.json``, a plot, configs), a tuning study (``tuning-...``: short runs that chose a
shipped config's values) or a study of one question (``study-...``). There is one file per
benchmark, settings and machine profile: a new run replaces the old one, and git keeps its
history.

    python benchmarks/results_tables.py readme [README.md]   # rewrite the block between the markers
    python benchmarks/results_tables.py check [README.md]    # exit 1 if that block is not what the files give
    python benchmarks/results_tables.py page docs/benchmarks.md [--images-prefix ../benchmarks/results/]

The README's block lies between ``<!-- results:start -->`` and ``<!-- results:end -->``. Standard
library only; importing this module runs nothing.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"
PAGE_IMAGES_PREFIX = "../benchmarks/results/"  # from docs/benchmarks.md

# Benchmark kinds: the start of a results file's (or folder's) name, and its section title, in
# the docs page's order.
KINDS = {
    "time-to-quality": "Time to quality",
    "speed-train-infer": "Training and inference speed",
    "batch1-forecast": "Forecasting one clip at batch 1",
    "memory-train": "Training peak memory",
    "batch-size-train": "Training speed per batch size",
    "precision-auto-fit": "precision: auto against explicit fp32",
    "precision-layout-conv": "Convolution rates per precision and layout",
    "compile-train": "torch.compile for training",
    "compare-overhead": "What a comparison's intervals, paired tests and sections cost",
    "tuning": "Tuning studies",
    "study": "Studies",
}
# registered model sizes -> the word results names use (speed.py's --preset words)
SIZE_WORDS = {"published": "official", "cpu": "quick"}
PRECISION_WORDS = {"32": "fp32", "fp32": "fp32", "bf16-mixed": "bf16", "bf16": "bf16", "auto": "auto"}
# environment variables that change what a benchmark measures: recorded in its command
RECORDED_ENV = ("FRAMECAST_MALLOC", "FRAMECAST_PRECISION")
SETTING_WORDS = {
    "mnist": "Moving MNIST",
    "auto": "precision auto",
    "fp32": "fp32",
    "bf16": "bf16",
    "quick": "registered cpu sizes",
    "official": "published sizes",
    "zoo": "zoo models, no reference-style rows",
}

# ---------------------------------------------------------------------------------------------
# names


def _cpu_words(cpu: str | None) -> list[str]:
    """The words that tell a CPU model apart: "Intel(R) Xeon(R) Processor" -> ["Xeon"]."""
    name = re.sub(r"\((?:R|TM)\)", " ", cpu or "", flags=re.I)
    name = re.sub(r"@.*$|\b\d+-core\b|\bCPU\b", " ", name, flags=re.I)
    noise = {"intel", "amd", "processor", "genuine", "with", "unknown"}
    return [w for w in re.split(r"[^A-Za-z0-9]+", name) if w and w.lower() not in noise][:3]


def _flag_tag(flags: Iterable[str]) -> str:
    flags = set(flags)
    for flag, tag in (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flag in flags:
            return tag
    return ""


def machine_tag(machine: dict) -> str:
    """The end of a results name: torch version and machine, e.g. ``pt2.14-cpu-xeon-amx``."""
    m = re.match(r"(\d+)\.(\d+)", str(machine.get("torch") or ""))
    parts = [f"pt{m[1]}.{m[2]}" if m else "pt-unknown"]
    if machine.get("gpu"):
        words = [
            w for w in re.split(r"[^a-z0-9]+", machine["gpu"].lower()) if w not in ("", "nvidia", "geforce", "amd")
        ]
        cuda = re.search(r"\+(cu\d+|rocm[\d.]+)", str(machine.get("torch") or ""))
        parts += [cuda[1] if cuda else "", "".join(words) or "gpu"]
    else:
        cpu = "-".join(w.lower() for w in _cpu_words(machine.get("cpu"))) or "unknown"
        parts += ["cpu", cpu, _flag_tag(machine.get("cpu_flags") or ())]
    return "-".join(p for p in parts if p)


def machine_short(machine: dict) -> str:
    """A few words for a table cell: "Xeon (AMX)", "EPYC (AVX512-BF16)"."""
    if machine.get("gpu"):
        return machine["gpu"]
    cpu = " ".join(_cpu_words(machine.get("cpu"))) or "CPU"
    flag = {"amx": "AMX", "avx512bf16": "AVX512-BF16", "avx512": "AVX512", "avx2": "AVX2"}.get(
        _flag_tag(machine.get("cpu_flags") or ()), ""
    )
    return f"{cpu} ({flag})" if flag else cpu


def machine_label(machine: dict) -> str:
    """The machine in full, as a figure cites it: CPU model, bf16 flags, cores, torch, oneDNN."""
    flags = set(machine.get("cpu_flags") or ())
    if "amx_bf16" in flags:
        bf16 = "AMX-BF16 and AVX512-BF16" if "avx512_bf16" in flags else "AMX-BF16"
    elif "avx512_bf16" in flags:
        bf16 = "AVX512-BF16, no AMX"
    else:
        bf16 = "no AVX512-BF16 or AMX"
    parts = [f"{machine.get('cpu', 'unknown CPU')} ({bf16})"]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if machine.get("gpu"):
        parts.append(f"GPU {machine['gpu']}")
    parts.append(f"torch {machine.get('torch', 'unknown')}")
    if machine.get("onednn"):
        parts.append(f"oneDNN {machine['onednn']}")
    return ", ".join(parts)


def _slug(word: object) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", str(word).lower()).strip("-")


def results_name(kind: str, machine: dict, *settings: object, suffix: str = ".json") -> str:
    """A results file's name: ``{kind}-{settings...}-{machine_tag}{suffix}``; ``suffix=""`` for a folder.

    >>> results_name("speed-train-infer", {"torch": "2.14.1", "cpu": "AMD EPYC", "cpu_flags": ["avx512_bf16"]},
    ...              "quick", "auto")
    'speed-train-infer-quick-auto-pt2.14-cpu-epyc-avx512bf16.json'
    """
    return "-".join([kind, *(_slug(s) for s in settings if s not in (None, "")), machine_tag(machine)]) + suffix


def size_word(size: str) -> str:
    """A registered size as results names say it: published -> official, cpu -> quick."""
    return SIZE_WORDS.get(size, size)


def precision_word(precision: str) -> str:
    return PRECISION_WORDS.get(str(precision), str(precision))


def default_path(kind: str, machine: dict, *settings: object, suffix: str = ".json") -> str:
    """Where a benchmark writes by default: ``benchmarks/results/<results_name>``, relative to
    the repository when it runs there."""
    path = RESULTS / results_name(kind, machine, *settings, suffix=suffix)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def add_json_argument(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    """``--json [PATH]`` for a benchmark script: with PATH, write there; alone, to its default
    name in ``benchmarks/results/`` (``json_path``)."""
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="PATH",
        help=f"also write {what} here; --json alone: benchmarks/results/, named by what ran and where",
    )


def json_path(given: str | None, kind: str, machine: dict, *settings: object) -> str | None:
    """Where ``--json`` writes: None when it was not given, PATH when it was, else ``default_path``."""
    if given is None:
        return None
    return given or default_path(kind, machine, *settings)


def provenance(machine: dict, argv: list[str] | None = None, today: datetime.date | None = None) -> dict:
    """``command``, ``date`` and ``machine`` for the top of a results file: the command line this
    process was started with (and the environment variables that change what it measures)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("?")
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in RECORDED_ENV if os.environ.get(k)]
    command = " ".join([*env, "python", script.as_posix(), shlex.join(argv[1:])]).strip()
    return {"command": command, "date": (today or datetime.date.today()).isoformat(), "machine": machine}


def kind_of(name: str) -> str | None:
    """The benchmark kind a file or folder name starts with, or None."""
    for kind in sorted(KINDS, key=len, reverse=True):
        if name == kind or name.startswith(kind + "-"):
            return kind
    return None


def settings_of(name: str, kind: str | None, machine: dict | None) -> list[str]:
    """The words of a name between its kind and its machine tag."""
    rest = name[len(kind) + 1 :] if kind and name.startswith(kind + "-") else name
    tag = machine_tag(machine) if machine else None
    if tag and rest.endswith(tag):
        rest = rest[: -len(tag)]
    return [w for w in rest.strip("-").split("-") if w]


# ---------------------------------------------------------------------------------------------
# loading


def load(root: Path = RESULTS) -> list[dict]:
    """Every results file under ``root``: its path, its name relative to ``root``, the top-level
    entry it belongs to (itself or its folder), its benchmark kind, the kind of that entry
    (``group``: ``tuning``, ``study`` or the kind), its machine (record, full label and tag), date,
    command (a list: a file gathered from several runs has one per run) and data. Files under a
    folder's ``runs/`` (training outputs, not kept in git) are left out."""
    root = Path(root)
    records = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(p for p in entry.rglob("*.json") if "runs" not in p.relative_to(entry).parts)
        elif entry.suffix == ".json":
            files = [entry]
        else:
            continue
        for path in files:
            records.append(_record(root, entry, path))
    return records


def _record(root: Path, entry: Path, path: Path) -> dict:
    data = json.loads(path.read_text())
    top = data if isinstance(data, dict) else {}
    machine = top.get("machine") if isinstance(top.get("machine"), dict) else None
    command = top.get("command")
    commands = [command] if isinstance(command, str) else [c for c in command or [] if isinstance(c, str)]
    group = kind_of(entry.name)
    return {
        "path": path,
        "entry_path": entry,
        "name": path.relative_to(root).as_posix(),
        "entry": entry.name,
        "group": group,
        "kind": kind_of(path.stem) or group,
        "machine": machine,
        "machine_label": machine_label(machine) if machine else None,
        "machine_tag": machine_tag(machine) if machine else None,
        "date": top.get("date"),
        "command": commands,
        "data": data,
    }


def _runs(data: dict) -> dict[str, dict]:
    """time_to_quality.py's runs in a results file ({label: run}), or {}."""
    runs = data.get("results") if isinstance(data, dict) else None
    if isinstance(runs, dict) and runs and all(isinstance(r, dict) and "marks" in r for r in runs.values()):
        return runs
    return {}


# ---------------------------------------------------------------------------------------------
# formatting


def _table(head: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join("–" if c is None else str(c) for c in row) + " |" for row in rows]


def _num(x: object, digits: int = 1) -> str | None:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return None
    return f"{x:,.{digits}f}"


def _commands(commands: list[str]) -> list[str]:
    if not commands:
        return []
    return ["```bash", *commands, "```"]


def _describe(settings: list[str]) -> str:
    words = []
    for s in settings:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(min|s)", s)
        if m:
            words.append(f"{m[1]} minutes" if m[2] == "min" else f"{m[1]} s budget")
        else:
            words.append(SETTING_WORDS.get(s, s))
    return ", ".join(words)


def _is_setting(word: str) -> bool:
    return word in SETTING_WORDS or re.fullmatch(r"\d+(?:\.\d+)?(?:min|s)", word) is not None


def _title(settings: list[str], fallback: str) -> str:
    """ "predrnn loss (7 minutes, Moving MNIST, precision auto)" from a name's settings words."""
    i = next((k for k, w in enumerate(settings) if _is_setting(w)), len(settings))
    what, how = " ".join(settings[:i]), _describe(settings[i:])
    return f"{what} ({how})" if what and how else what or how or fallback


def _span(dates: Iterable[str | None]) -> str | None:
    dates = sorted(d for d in dates if d)
    if not dates:
        return None
    return dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"


def _header(rec: dict, level: str, prefix: str) -> list[str]:
    name = rec["entry"] if rec["entry"] != rec["name"] else Path(rec["name"]).stem
    settings = settings_of(name, rec["group"], rec["machine"])
    title = _title(settings, KINDS.get(rec["kind"], rec["name"]))
    lines = [f"{level} {title}" + (f" — {machine_short(rec['machine'])}" if rec["machine"] else ""), ""]
    when = _span([r.get("date") for r in _runs(rec["data"]).values()]) or rec["date"] or "on a date not recorded"
    lines.append(f"Machine: {rec['machine_label'] or 'not recorded'}. Measured {when}.")
    lines.append(f"File: [`{rec['name']}`]({prefix}{rec['name']}).")
    return lines + [""]


def _ttq_rows(runs: dict[str, dict], minutes: list[float]) -> list[list[object]]:
    rows = []
    for label, r in sorted(runs.items(), key=lambda kv: kv[1]["marks"][-1]["mse"]):
        at = {m["minutes"]: m["mse"] for m in r["marks"]}
        cells = [(_num(at.get(t)) or "") for t in minutes]
        last = r["marks"][-1]
        i = minutes.index(last["minutes"])
        cells[i] = f"**{cells[i]}**"
        where = ", ".join(x for x in (r.get("precision"), r.get("layout")) if x) or None
        rows.append([f"`{label}`", *cells, f"{r['steps']:,}", f"{last['ssim']:.3f}", where, r.get("date")])
    return rows


def _ttq(runs: dict[str, dict]) -> list[str]:
    minutes = sorted({m["minutes"] for r in runs.values() for m in r["marks"]})
    head = ["run", *[f"{t:g} min" for t in minutes], "steps", "SSIM at the end", "precision, layout", "date"]
    return _table(head, _ttq_rows(runs, minutes))


# ---------------------------------------------------------------------------------------------
# one renderer per benchmark kind: a record -> markdown lines (its table and notes)


def _render_time_to_quality(rec: dict) -> list[str]:
    runs = _runs(rec["data"])
    lines = ["Test MSE per frame at each minute mark (the last in bold), SSIM at the end.", ""]
    lines += _ttq(runs) + [""]
    notes = [f"`{k}`: {r['note']}" for k, r in runs.items() if r.get("note")]
    if notes:
        lines += ["; ".join(notes) + ".", ""]
    return lines + ["Commands (one run each):", ""] + _commands(rec["command"])


def _render_speed(rec: dict) -> list[str]:
    d = rec["data"]
    peaks = d.get("conv_peak_flop_per_s") or {}
    rows = []
    for r in d.get("results", []):
        rows.append(
            [
                f"`{r['model']}`",
                r.get("style"),
                f"{r.get('precision')}, {r.get('layout', '?')}",
                _num(r.get("train_samples_per_s"), 2),
                _num(r.get("infer_samples_per_s"), 2),
                _num(r.get("train_speedup_vs_reference"), 2),
                _num(100 * r["train_share_of_bf16_peak"], 0) + "%" if "train_share_of_bf16_peak" in r else None,
                _num(r.get("peak_rss_gib"), 2),
                _num(r.get("forecast_one_clip_s"), 3),
                _num(r.get("forecast_one_clip_compiled_s"), 3),
            ]
        )
    head = [
        "model",
        "style",
        "precision, layout",
        "train samples/s",
        "infer samples/s",
        "train x reference",
        "train % of bf16 peak",
        "peak GiB",
        "one clip s",
        "one clip compiled s",
    ]
    lines = _table(head, rows) + [""]
    if peaks:
        lines += [
            "Convolution peaks measured in the same run (5x5, 128 -> 512 channels, 16x16, batch 16, channels-last): "
            f"fp32 {_num(peaks.get('fp32', 0) / 1e9, 0)}, bf16 {_num(peaks.get('bf16', 0) / 1e9, 0)} GFLOP/s. "
            "x reference: over the same model run as reference code runs it (fp32, contiguous, unfused gates).",
            "",
        ]
    return lines + _commands(rec["command"])


def _render_batch1(rec: dict) -> list[str]:
    d = rec["data"]
    c = d.get("clip", {})
    limit = c.get("limit_s") or float("nan")

    def row(name: str, key: str, extra: str = "") -> list[object]:
        s = c.get(key)
        return [name + extra, _num(s, 3), _num(s / limit, 2) if isinstance(s, (int, float)) else None]

    lines = [
        f"The official PredRNN, one clip 10 -> 10 at batch 1 on {c.get('threads', '?')} threads: "
        f"{_num(c.get('clip_flops', 0) / 1e9, 0)} GFLOP in {c.get('conv_calls', '?')} convolution calls; "
        f"its limit is its FLOPs over the bf16 convolution peak measured in the run "
        f"({_num(d.get('bf16_conv_peak_flop_per_s', 0) / 1e9, 0)} GFLOP/s).",
        "",
    ]
    lines += _table(
        ["forecast", "seconds", "x limit"],
        [
            ["limit", _num(c.get("limit_s"), 3), "1.00"],
            row("Forecaster, eager (packed weights)", "eager_s"),
            row("Forecaster(compile=True)", "compiled_s", f" (compiled in {_num(c.get('compile_s'), 0)} s)"),
            row("its convolutions alone", "convolutions_only_s"),
            row("reading its bf16 weights once per frame", "weight_reads_s"),
        ],
    )
    convs = d.get("gate_convolutions") or []
    if convs:
        lines += ["", "Gate convolutions of one cell at batch 1 (16x16 maps, bf16, channels-last):", ""]
        lines += _table(
            ["convolution", "threads", "plain µs", "packed without the shape µs", "packed µs", "packed GFLOP/s"],
            [
                [
                    g["conv"],
                    g["threads"],
                    _num(g["plain_us"], 0),
                    _num(g["packed_without_shape_us"], 0),
                    _num(g["packed_us"], 0),
                    _num(g["packed_gflop_per_s"], 0),
                ]
                for g in convs
            ],
        )
    return lines + [""] + _commands(rec["command"])


def _render_memory(rec: dict) -> list[str]:
    rows = [
        [
            f"`{r['model']}`",
            r.get("mode"),
            r.get("size"),
            r.get("batch"),
            r.get("allocator"),
            "yes" if r.get("thp_alloc") else "no",
            " / ".join(f"{g:.2f}" for g in r.get("peak_gib_after_step", [])),
            " / ".join(f"{t:.1f}" for t in r.get("step_s", [])),
            f"{r['last_loss']:.8f}" if isinstance(r.get("last_loss"), float) else None,
        ]
        for r in rec["data"].get("results", [])
    ]
    head = [
        "model",
        "mode",
        "size",
        "batch",
        "allocator",
        "huge pages",
        "peak GiB after each step",
        "step s",
        "last loss",
    ]
    return (
        _table(head, rows)
        + ["", "fp32, contiguous: the arithmetic of the official code.", ""]
        + _commands(rec["command"])
    )


def _render_batch_size(rec: dict) -> list[str]:
    results = rec["data"].get("results", [])
    keys = list(dict.fromkeys(k for r in results for k in r.get("samples_per_s", {})))
    rows = [
        [
            f"`{r['model']}`",
            r.get("batch"),
            *[_num(r.get("samples_per_s", {}).get(k), 1) for k in keys],
            r.get("rounds"),
        ]
        for r in results
    ]
    head = ["model", "batch", *[f"{k} samples/s" for k in keys], "timed rounds"]
    return _table(head, rows) + [""] + _commands(rec["command"])


def _render_precision_auto(rec: dict) -> list[str]:
    rows = []
    for r in rec["data"].get("results", []):
        p = r.get("precision") or {}
        rows.append(
            [
                f"`{r['model']}`",
                r.get("run"),
                f"{p.get('precision')}, {p.get('layout')}",
                _num(r.get("wall_s"), 1),
                _num(r.get("train_s"), 1),
                r.get("steps"),
                _num(r.get("wall_vs_fp32"), 3),
                p.get("reason") or "explicit",
            ]
        )
    head = ["model", "run", "precision, layout", "wall s", "training s", "steps", "wall vs explicit fp32", "why"]
    return _table(head, rows) + [""] + _commands(rec["command"])


def _render_precision_layout(rec: dict) -> list[str]:
    rates: dict[tuple, dict] = {}
    for r in rec["data"].get("rows", []):
        rates.setdefault((r["shape"], r["pass"], r["layout"]), {})[r["dtype"]] = r["gflops"]
    rows = [
        [
            shape,
            pas,
            layout,
            _num(v.get("float32"), 0),
            _num(v.get("bfloat16"), 0),
            _num(v["bfloat16"] / v["float32"], 2) if v.get("float32") and v.get("bfloat16") else None,
        ]
        for (shape, pas, layout), v in rates.items()
    ]
    head = ["shape", "pass", "layout", "fp32 GFLOP/s", "bf16 GFLOP/s", "bf16 / fp32"]
    return _table(head, rows) + [""] + _commands(rec["command"])


def _render_compile(rec: dict) -> list[str]:
    rows = []
    for r in rec["data"].get("results", []):
        if "error" in r:
            rows.append([f"`{r['model']}`", r["variant"], None, None, None, None, None, r["error"]])
            continue
        rows.append(
            [
                f"`{r['model']}`",
                r["variant"],
                f"{r.get('precision')}, {r.get('layout')}",
                _num(r.get("compile_s"), 1),
                _num(r.get("step_s"), 3),
                _num(r.get("speedup_steady"), 2),
                _num(r.get("steps_in_30_min_vs_eager"), 2),
                "yes" if r.get("pays_back") else "no",
            ]
        )
    threshold = rec["data"].get("payback_threshold")
    head = [
        "model",
        "variant",
        "precision, layout",
        "compile s",
        "step s",
        "x eager",
        "30-min steps vs eager",
        "pays back",
    ]
    note = f"A variant pays back at {threshold}x eager's steps in a 30-minute run, compile time included."
    return _table(head, rows) + ["", note, ""] + _commands(rec["command"])


def _render_compare_overhead(rec: dict) -> list[str]:
    d = rec["data"]
    base = d["compare_seconds"] - d["intervals_seconds"] - d["paired_tests_seconds"]
    rows = [
        ["the comparison (training, test passes, report)", _num(d["compare_seconds"], 0), None],
        ["95% intervals of every score", _num(d["intervals_seconds"], 1), _num(100 * d["intervals_seconds"] / base, 1)],
        [
            "paired tests and summary lines",
            _num(d["paired_tests_seconds"], 1),
            _num(100 * d["paired_tests_seconds"] / base, 1),
        ],
        [f"sections: {', '.join(d['sections'])}", _num(d["sections_seconds"], 0), _num(100 * d["sections_share"], 1)],
    ]
    if d.get("test_pass_seconds"):
        rows.insert(1, ["its short-term test passes", _num(d["test_pass_seconds"], 0), None])
    note = (
        f"{d.get('test_size')} test clips, {d.get('minutes')} training minutes per model; shares are of the "
        "comparison without its intervals and paired tests."
    )
    return _table(["part", "seconds", "% of the comparison"], rows) + ["", note, ""] + _commands(rec["command"])


def _render_other(rec: dict) -> list[str]:
    keys = ", ".join(f"`{k}`" for k in rec["data"]) if isinstance(rec["data"], dict) else "a list"
    return [f"Holds {keys}.", ""] + _commands(rec["command"])


RENDERERS: dict[str, Callable[[dict], list[str]]] = {
    "time-to-quality": _render_time_to_quality,
    "speed-train-infer": _render_speed,
    "batch1-forecast": _render_batch1,
    "memory-train": _render_memory,
    "batch-size-train": _render_batch_size,
    "precision-auto-fit": _render_precision_auto,
    "precision-layout-conv": _render_precision_layout,
    "compile-train": _render_compile,
    "compare-overhead": _render_compare_overhead,
}


def _render_folder(entry: str, recs: list[dict], prefix: str) -> list[str]:
    """A tuning or study folder: its time_to_quality.py runs in one table, other files each with
    their kind's table, its plots."""
    first = recs[0]
    kind = first["group"]
    settings = settings_of(entry, kind, first["machine"])
    title = _title(settings, entry)
    lines = [f"### {title}" + (f" — {machine_short(first['machine'])}" if first["machine"] else ""), ""]
    lines += [f"Machine: {first['machine_label'] or 'not recorded'}. Folder: [`{entry}/`]({prefix}{entry}/).", ""]
    runs, commands, dates = {}, [], []
    for rec in recs:
        found = _runs(rec["data"])
        stem = Path(rec["name"]).stem
        for label, run in found.items():
            name = label if label == stem else f"{stem}: {label}"
            runs[name] = {**run, "date": run.get("date") or rec["date"]}
        if found:
            commands += rec["command"]
            dates.append(rec["date"])
    if runs:
        lines += [
            f"Measured {', '.join(sorted(set(d for d in dates if d)))}. Test MSE per frame at each minute mark "
            "(the last in bold), SSIM at the end; configs beside the results.",
            "",
        ]
        lines += _ttq(runs) + ["", "Commands:", ""] + _commands(list(dict.fromkeys(commands))) + [""]
    for rec in recs:
        if _runs(rec["data"]):
            continue
        lines += [f"#### `{Path(rec['name']).name}`", "", f"Measured {rec['date']}.", ""]
        lines += RENDERERS.get(rec["kind"], _render_other)(rec) + [""]
    folder = first["entry_path"]
    for png in sorted(folder.rglob("*.png")) if folder.is_dir() else []:
        lines += [f"![{entry}: {png.stem}]({prefix}{png.relative_to(folder.parent).as_posix()})", ""]
    return lines


# ---------------------------------------------------------------------------------------------
# the README's table and the docs page


def _summary_records(records: list[dict]) -> list[dict]:
    return [
        r
        for r in records
        if r["kind"] == "time-to-quality"
        and r["group"] == "time-to-quality"
        and settings_of(r["entry"], "time-to-quality", r["machine"]) == ["30min", "mnist", "auto"]
    ]


def summary_table(
    records: list[dict] | None = None,
    link: str | None = "benchmarks/results/",
    text: str = "the benchmarks page of the docs",
) -> str:
    """One short table for the README: each shipped config's test MSE and SSIM after 30 minutes of
    training on Moving MNIST with ``precision: auto``, on whichever machine measured it, the
    machines named under it and a link to the full page."""
    records = load() if records is None else records
    picked = _summary_records(records)
    rows, machines, dates, precisions = [], {}, [], set()
    for rec in picked:
        short = machine_short(rec["machine"])
        for label, run in _runs(rec["data"]).items():
            last = run["marks"][-1]
            config = run.get("config") or ""
            name = f"`{config}`" if config.startswith("configs/") else f"`{label}`"
            rows.append(
                (
                    last["mse"],
                    [
                        name,
                        f"{last['mse']:.1f}",
                        f"{last['ssim']:.3f}",
                        f"{run['steps']:,}",
                        run.get("precision"),
                        short,
                    ],
                )
            )
            machines.setdefault(short, [rec["machine_label"], 0])[1] += 1
            dates.append(run.get("date") or rec["date"])
            precisions.add(run.get("precision"))
    rows.sort(key=lambda r: r[0])
    head = ["config", "test MSE", "SSIM", "steps", "precision", "machine"]
    cells = [r for _, r in rows]
    picked_precision = ""
    if len(precisions) == 1:  # the same everywhere: said under the table, not in a column
        head, cells = head[:4] + head[5:], [c[:4] + c[5:] for c in cells]
        picked_precision = f", which picked {next(iter(precisions))} for each"
    lines = _table(head, cells)
    cores = sorted({str(r["machine"].get("cores")) for r in picked if r["machine"].get("cores")})
    named = sorted(machines.items(), key=lambda kv: -kv[1][1])
    lines += [
        "",
        f"Test MSE per frame (lower is better) and SSIM on built-in Moving MNIST after 30 minutes of training on "
        f"{' or '.join(cores) or '?'} CPU cores, `precision: auto`{picked_precision}; measured {_span(dates) or '?'}. "
        + "Machines: "
        + "; ".join(f"{short}: {label}" for short, (label, _) in named)
        + f". Commands, dates and the other benchmarks: {text}"
        + (f", rendered from [{link}]({link})." if link else "."),
    ]
    return "\n".join(lines)


def benchmarks_page(records: list[dict] | None = None, images_prefix: str = PAGE_IMAGES_PREFIX) -> str:
    """The docs page ``benchmarks.md``: a section per benchmark kind, a table per results file (one
    per settings and machine profile) with its machine, date and command; plots and files linked
    through ``images_prefix`` (where ``benchmarks/results/`` is seen from the page)."""
    records = load() if records is None else records
    prefix = images_prefix if not images_prefix or images_prefix.endswith("/") else images_prefix + "/"
    lines = [
        "# Benchmarks",
        "",
        "<!-- generated by benchmarks/results_tables.py from benchmarks/results/: edit those files, not this page -->",
        "",
        "Every figure here comes from a file in `benchmarks/results/`, one per benchmark, settings and machine "
        "profile, named by what and where; each section names its machine, date and command. Older runs that a "
        "newer one of the same benchmark, settings and machine replaced are in the git history.",
        "",
        "Machines:",
        "",
    ]
    machines = {r["machine_tag"]: r["machine_label"] for r in records if r["machine"]}
    lines += [f"- `{tag}`: {label}" for tag, label in sorted(machines.items())] + [""]
    lines += ["## The 30-minute table", "", summary_table(records, link=None, text="the sections below"), ""]
    by_group: dict[str, list[dict]] = {}
    for rec in records:
        by_group.setdefault(rec["group"] or "other", []).append(rec)
    for group in [*KINDS, "other"]:
        recs = by_group.get(group)
        if not recs:
            continue
        lines += [f"## {KINDS.get(group, 'Other results')}", ""]
        if group in ("tuning", "study"):
            entries: dict[str, list[dict]] = {}
            for rec in recs:
                entries.setdefault(rec["entry"], []).append(rec)
            for entry, members in entries.items():
                lines += _render_folder(entry, members, prefix)
            continue
        for rec in sorted(recs, key=lambda r: (r["machine_tag"] or "", r["name"])):
            lines += _header(rec, "###", prefix)
            lines += RENDERERS.get(rec["kind"], _render_other)(rec) + [""]
            if rec["entry"] != rec["name"]:  # a folder: its plots
                for png in sorted(rec["path"].parent.glob("*.png")):
                    lines += [f"![{rec['entry']}]({prefix}{rec['entry']}/{png.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def readme_block(records: list[dict] | None = None) -> str:
    return f"{START}\n{summary_table(records)}\n{END}"


def _split(text: str) -> tuple[str, str, str] | None:
    """(before, block, after) around the markers, block included; None without both."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        return None
    return text[:i], text[i : j + len(END)], text[j + len(END) :]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(RESULTS), help="the results folder (default: benchmarks/results)")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("readme", help="rewrite the block between the results markers")
    r.add_argument("file", nargs="?", default=str(ROOT / "README.md"))
    c = sub.add_parser("check", help="exit 1 if the block between the results markers is not what the files give")
    c.add_argument("file", nargs="?", default=str(ROOT / "README.md"))
    g = sub.add_parser("page", help="write the benchmarks docs page")
    g.add_argument("out")
    g.add_argument("--images-prefix", default=PAGE_IMAGES_PREFIX, help="benchmarks/results/ as seen from the page")
    args = p.parse_args(argv)
    records = load(Path(args.root))
    if args.cmd == "page":
        Path(args.out).write_text(benchmarks_page(records, args.images_prefix))
        print(f"wrote {args.out}")
        return 0
    path = Path(args.file)
    text = path.read_text()
    parts = _split(text)
    if parts is None:
        print(
            f"{path}: no {START} ... {END} block to {'rewrite' if args.cmd == 'readme' else 'check'}", file=sys.stderr
        )
        return 1
    want = readme_block(records)
    if args.cmd == "readme":
        if parts[1] != want:
            path.write_text(parts[0] + want + parts[2])
            print(f"{path}: results block rewritten")
        else:
            print(f"{path}: results block already up to date")
        return 0
    if parts[1].strip() == want.strip():
        print(f"{path}: results block matches benchmarks/results")
        return 0
    diff = difflib.unified_diff(
        parts[1].splitlines(), want.splitlines(), "in the file", "from the results", lineterm=""
    )
    print(
        f"{path}: the block between {START} and {END} differs from what {args.root} gives "
        f"(edited by hand, or results changed); run: python benchmarks/results_tables.py readme {path}\n"
        + "\n".join(diff),
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
