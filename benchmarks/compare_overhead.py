"""What the comparison's extras add to a ``compare`` of the demo's size, end to end.

Runs ``framecast compare`` three times on one report folder, all in this process:

1. the config as given (``configs/compare_quick.yaml``: two models trained 4 minutes each, the
   four baselines, 500 test clips): the whole comparison, timed, with the time spent in the
   95% intervals (``testing.clip_statistics``) and in the paired tests and summary lines
   (``report.uncertainty_summary``) timed inside it;
2. the same with PredBench's sections added (long-term 3x the horizon, generalization to 3-digit
   Moving MNIST, robustness to dropped context frames): training and the short-term test are
   reused, so this run's time is the sections' cost plus the reuse;
3. the same again: everything cached, the reuse alone, subtracted from run 2.

It prints each part as a share of run 1 (the plain comparison, its intervals taken out), checks
the two targets below, writes a results file with the command, the date and the machine, and
exits 1 where a target fails:

- the intervals and paired tests add under 10% to the comparison (``INTERVALS_LIMIT``);
- the sections cost no more than the test passes they run (``SECTION_PASSES``: the long-term
  test's k passes, one for the other data, one per corruption), in units of the short-term
  test passes. A section is a test pass over the whole split: its cost is scoring, which no
  machinery can take under 10% of a comparison whose test passes are themselves ~6% of it.

    python benchmarks/compare_overhead.py                       # the demo's size: ~25 min on 2 cores
    python benchmarks/compare_overhead.py --minutes 0.5 --test-size 100   # a short run (~4 min)
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml
from results_tables import add_json_argument, json_path, provenance

from framecast.config import merge
from framecast.evaluation import compare as C
from framecast.evaluation import report as R
from framecast.io import atomic_write_text
from framecast.machine import describe, machine_profile
from framecast.training import testing

SECTIONS = {
    "long_term": 3,
    "test_data": {"num_digits": 3},  # merged into the config's data section
    "robustness": ["drop:0.2"],
}
INTERVALS_LIMIT = 0.10  # the intervals and paired tests: under 10% of the comparison
SECTION_PASSES = SECTIONS["long_term"] + 1 + len(SECTIONS["robustness"])  # test passes the sections run


class Stopwatch:
    """Total seconds spent in wrapped functions."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t

        return timed


def run(values: dict, log) -> dict[str, float]:
    """One comparison: wall seconds, and the seconds spent in the short-term test passes, the
    intervals and the paired tests."""
    watches = {"tests": Stopwatch(), "intervals": Stopwatch(), "pairs": Stopwatch()}
    saved = C.test_model, testing.clip_statistics, R.uncertainty_summary
    C.test_model = watches["tests"].wrap(saved[0])
    testing.clip_statistics = watches["intervals"].wrap(saved[1])
    R.uncertainty_summary = watches["pairs"].wrap(saved[2])
    try:
        t = time.perf_counter()
        C.compare(C.build_compare_config(values), log=log)
        return {"wall": time.perf_counter() - t, **{k: w.seconds for k, w in watches.items()}}
    finally:
        C.test_model, testing.clip_statistics, R.uncertainty_summary = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/compare_quick.yaml")
    parser.add_argument(
        "--minutes", type=float, default=None, help="training minutes per model (default: the config's)"
    )
    parser.add_argument("--test-size", type=int, default=None, help="test clips (default: the config's)")
    parser.add_argument("--out", default=None, help="the report folder (default: a temporary one)")
    add_json_argument(parser)
    args = parser.parse_args()

    values = yaml.safe_load(Path(args.config).read_text())
    values["trainer"] = {**values.get("trainer", {}), "enable_progress_bar": False}
    if args.minutes is not None:
        values["trainer"]["max_time_minutes"] = args.minutes
    if args.test_size is not None:
        values["data"] = {**values.get("data", {}), "test_size": args.test_size}
    out = Path(args.out or tempfile.mkdtemp(prefix="framecast-overhead-"))
    values["out_dir"] = str(out)
    sections = {**SECTIONS, "test_data": merge(values.get("data", {}), SECTIONS["test_data"])}
    machine = machine_profile()
    print(f"Machine: {describe(machine)}", flush=True)

    def log(line: str) -> None:
        print(f"  {line}", flush=True)

    print("1. the comparison as configured", flush=True)
    plain = run(values, log)
    print("2. with PredBench's sections (training reused)", flush=True)
    with_sections = run({**values, **sections}, log)["wall"]
    print("3. again, everything cached (the reuse alone)", flush=True)
    reuse = run({**values, **sections}, log)["wall"]

    base = plain["wall"] - plain["intervals"] - plain["pairs"]  # the comparison without its intervals and tests
    section_cost = with_sections - reuse
    figures = {
        "compare_seconds": plain["wall"],
        "test_pass_seconds": plain["tests"],  # the short-term test passes (intervals included)
        "intervals_seconds": plain["intervals"],
        "paired_tests_seconds": plain["pairs"],
        "sections_seconds": section_cost,
        "reuse_seconds": reuse,
        "intervals_and_paired_share": (plain["intervals"] + plain["pairs"]) / base,
        "sections_share": section_cost / base,
        "sections_in_test_passes": section_cost / plain["tests"],
    }
    print(f"\nThe comparison: {plain['wall']:.0f} s, of which short-term test passes {plain['tests']:.0f} s")
    print(f"  95% intervals (every model, every metric, per step): {plain['intervals']:.1f} s")
    print(f"  paired tests of every pair and the summary lines:    {plain['pairs']:.1f} s")
    print(f"  = {100 * figures['intervals_and_paired_share']:.1f}% of the comparison without them")
    print(
        f"PredBench's sections ({', '.join(SECTIONS)}): {section_cost:.0f} s ({with_sections:.0f} s - {reuse:.0f} s reuse)"
    )
    print(f"  = {100 * figures['sections_share']:.1f}% of the comparison")
    print(
        f"  = {figures['sections_in_test_passes']:.1f} times the short-term test passes "
        "(they score 3x the horizon, other data and corrupted context: about 5 test passes' work)"
    )
    targets = {
        f"intervals and paired tests under {100 * INTERVALS_LIMIT:.0f}%": figures["intervals_and_paired_share"]
        < INTERVALS_LIMIT,
        f"sections within the {SECTION_PASSES} test passes they run": figures["sections_in_test_passes"]
        <= SECTION_PASSES,
    }
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    path = json_path(args.json, "compare-overhead", machine, Path(args.config).stem)
    if path:
        record = {
            **provenance(machine),
            "config": args.config,
            "sections": SECTIONS,
            "minutes": values["trainer"].get("max_time_minutes"),
            "test_size": values.get("data", {}).get("test_size"),
            **figures,
            "targets": targets,
        }
        atomic_write_text(Path(path), json.dumps(record, indent=2))
        print(f"wrote {path}")
    if not all(targets.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
