"""Verdicts that survive another seed: each model of a comparison trained ``seeds`` times.

Seed ``k`` trains with ``train.seed + k`` (the initial weights and the order of training clips;
the test clips stay the same) in ``runs/<label>/seed-<k>/``; seed 0 keeps ``runs/<label>/``, so
a comparison with more seeds reuses the one it has. Each seed is a run of its own: a killed
comparison resumes the seed it was in.

The model's row then holds the mean over seeds of every score, the spread over seeds (their
standard deviation and each seed's value), and the clip-level interval of the mean over seeds
of each clip's score; paired tests compare those seed-averaged clip scores. The per-horizon
bands become the range over seeds. A ranking is stated where the paired test separates the
models; the seed table says in how many seeds each ordering held.
"""

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from framecast.config import RunConfig
from framecast.evaluation import uncertainty as U


def seed_runs(run: RunConfig, seeds: int) -> list[RunConfig]:
    """``run`` trained with ``seeds`` seeds: train.seed + k, in ``<out_dir>/seed-<k>`` (k > 0)."""
    out = [run]
    for k in range(1, seeds):
        train = dataclasses.replace(run.train, seed=run.train.seed + k)
        out.append(dataclasses.replace(run, train=train, out_dir=str(Path(run.out_dir) / f"seed-{k}")))
    return out


def combine_tests(tests: list[dict[str, Any]]) -> dict[str, Any]:
    """One test result from the tests (``test_model``'s results) of one model trained with
    several seeds, on the same clips: mean scores, the clip-level interval of each clip's mean
    over seeds, the range over seeds as per-horizon bands. A refused test stays refused."""
    first = tests[0]
    refused = next((t for t in tests if "refused" in t), None)
    if refused is not None:
        return refused
    metrics = [m for m in first["mean"] if all(m in t["mean"] for t in tests)]
    per_clip = {
        m: np.nanmean([t["per_clip"][m] for t in tests], axis=0)
        for m in metrics
        if all(m in t.get("per_clip", {}) for t in tests)
    }
    return {
        **first,
        "mean": {m: float(np.mean([t["mean"][m] for t in tests])) for m in metrics},
        "per_horizon": {
            m: np.mean([t["per_horizon"][m] for t in tests], axis=0).tolist()
            for m in metrics
            if m in first["per_horizon"]
        },
        "per_clip": {m: v.tolist() for m, v in per_clip.items()},
        "ci95": {
            **{  # metrics of the whole split (FVD): the envelope of the seeds' intervals
                m: [min(t["ci95"][m][0] for t in tests), max(t["ci95"][m][1] for t in tests)]
                for m in metrics
                if m not in per_clip and all(m in t.get("ci95", {}) for t in tests)
            },
            **{m: list(U.bootstrap_ci(v, **U.params(first.get("bootstrap")))) for m, v in per_clip.items()},
        },
        "per_horizon_ci95": {  # the range over seeds per step
            m: np.stack(
                [np.min([t["per_horizon"][m] for t in tests], 0), np.max([t["per_horizon"][m] for t in tests], 0)], 1
            ).tolist()
            for m in metrics
            if m in first["per_horizon"]  # FVD: one value per test, no steps
        },
        "bands": "range over seeds",
        "per_seed": {m: [t["mean"][m] for t in tests] for m in metrics},
    }


def combine_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One comparison result from the results of one model trained with several seeds."""
    first = per_seed[0]
    test = combine_tests([r["test"] for r in per_seed])
    per_seed_means = test.pop("per_seed")
    return {
        **first,
        "test": test,
        "train_seconds": float(np.mean([r["train_seconds"] for r in per_seed])),
        "epochs": float(np.mean([r["epochs"] for r in per_seed])),
        "steps": float(np.mean([r["steps"] for r in per_seed])),
        "seeds": {
            "n": len(per_seed),
            "train_seeds": [r.get("train_seed") for r in per_seed],
            "checkpoints": [r.get("checkpoint") for r in per_seed],
            "per_seed": per_seed_means,
            "std": {m: float(np.std(v, ddof=1)) for m, v in per_seed_means.items()},
        },
    }


def report_seeds(results: dict[str, dict[str, Any]], metrics: list[str]) -> list[str]:
    """report.md's seed section: each model's mean, spread and per-seed values, and in how many
    seeds each ordering of two trained models held."""
    trained = {label: r for label, r in results.items() if "seeds" in r}
    if not trained:
        return []
    n = next(iter(trained.values()))["seeds"]["n"]
    metrics = [m for m in metrics if all(m in r["seeds"]["per_seed"] for r in trained.values())]
    head = ["model", *[f"{m.upper()} mean ± sd over seeds (each seed)" for m in metrics]]
    lines = [
        f"## Across {n} training seeds",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for label, r in trained.items():
        s = r["seeds"]
        cells = [
            f"{np.mean(s['per_seed'][m]):.4g} ± {s['std'][m]:.2g} ({', '.join(f'{v:.4g}' for v in s['per_seed'][m])})"
            for m in metrics
        ]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines.append("")
    for m in metrics:
        for a, b in itertools.combinations(trained, 2):
            va, vb = trained[a]["seeds"]["per_seed"][m], trained[b]["seeds"]["per_seed"][m]
            better = sum((x < y) if U.lower_is_better(m) else (x > y) for x, y in zip(va, vb))
            lines.append(f"- {m}: `{a}` better than `{b}` in {better} of {n} seeds")
    return [*lines, ""]
