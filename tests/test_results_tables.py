"""benchmarks/results/ and benchmarks/results_tables.py: every results file says what it is (its
command, date and machine, and a name that says what ran and where), and the README's results
block is what the files give."""

import datetime
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "results_tables.py"
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def rt():
    spec = importlib.util.spec_from_file_location("results_tables", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def records(rt):
    return rt.load()


def test_every_results_file_loads_and_has_command_date_and_machine(records):
    assert len(records) > 10
    for rec in records:
        assert isinstance(rec["data"], dict), rec["name"]
        assert rec["command"] and all(isinstance(c, str) and c.strip() for c in rec["command"]), rec["name"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", rec["date"] or ""), rec["name"]
        datetime.date.fromisoformat(rec["date"])
        machine = rec["machine"]
        assert machine and machine.get("cpu") and machine.get("torch"), rec["name"]
        assert isinstance(machine.get("cpu_flags"), list), rec["name"]
        assert rec["kind"] is not None, f"{rec['name']}: no benchmark kind in its name"


def test_results_names_say_what_and_where_not_when(records, rt):
    for path in RESULTS.rglob("*"):
        rel = path.relative_to(RESULTS)
        if "runs" in rel.parts:  # training outputs, not kept in git
            continue
        assert not re.search(r"_s[0-9]+|check[0-9]", path.name), rel
        if path.suffix in (".json", ".yaml"):
            text = path.read_text()
            assert not re.search(r"\bsession|_s[0-9]+\b", text, re.I), f"{rel} speaks of sessions"
    for rec in records:  # each top-level file or folder ends with its machine's tag
        stem = rec["entry"].removesuffix(".json")
        assert stem.endswith(rec["machine_tag"]), (rec["name"], rec["machine_tag"])


def test_results_name(rt):
    xeon = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": ["avx2", "avx512_bf16", "amx_bf16"], "torch": "2.14.1"}
    epyc = {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "avx512f", "avx512_bf16"], "torch": "2.14.1+cu130"}
    assert (
        rt.results_name("speed-train-infer", xeon, "quick", "auto")
        == "speed-train-infer-quick-auto-pt2.14-cpu-xeon-amx.json"
    )
    assert (
        rt.results_name("time-to-quality", epyc, "30min", "mnist", "auto", suffix="")
        == "time-to-quality-30min-mnist-auto-pt2.14-cpu-epyc-avx512bf16"
    )


def test_summary_table_names_every_model_and_its_machine(rt, records):
    table = rt.summary_table(records)
    picked = [r for r in records if r["group"] == "time-to-quality" and "-30min-mnist-auto-" in r["entry"]]
    assert picked
    for rec in picked:
        for label in rec["data"]["results"]:
            assert re.search(rf"\b{re.escape(label)}\b", table), label
        assert rt.machine_short(rec["machine"]) in table
        assert rec["machine"]["cpu"] in table  # the machine named in full under the table
    assert "benchmarks/results/" in table  # where the figures come from
    assert table.count("\n|") < 20  # one short table


def test_benchmarks_page_has_every_file(rt, records):
    page = rt.benchmarks_page(records, images_prefix="results/")
    for rec in records:
        assert rec["entry"] in page, rec["name"]
    assert "](results/time-to-quality-30min-mnist-auto-" in page


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_check_fails_on_a_readme_whose_block_was_edited_by_hand(tmp_path, rt):
    readme = tmp_path / "README.md"
    readme.write_text(f"# framecast\n\nBefore.\n\n{rt.START}\nold\n{rt.END}\n\nAfter.\n")
    assert run("check", str(readme)).returncode == 1  # stale

    assert run("readme", str(readme)).returncode == 0
    text = readme.read_text()
    assert text.startswith("# framecast\n\nBefore.\n\n") and text.endswith("\n\nAfter.\n")
    assert run("check", str(readme)).returncode == 0

    row = next(line for line in text.splitlines() if line.startswith("| `"))
    edited = re.sub(r"\d+\.\d+", "1.5", row, count=1)  # a figure edited by hand
    assert edited != row
    readme.write_text(text.replace(row, edited))
    out = run("check", str(readme))
    assert out.returncode == 1
    assert "differs" in out.stderr and "results_tables.py readme" in out.stderr

    readme.write_text("# no block\n")
    out = run("check", str(readme))
    assert out.returncode == 1 and "no <!-- results:start -->" in out.stderr
