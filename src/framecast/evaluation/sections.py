"""PredBench's tests beyond the training horizon (Wang et al. 2024, https://arxiv.org/abs/2407.08418),
as sections of a comparison: every model, trained once, is scored again

- **long-term**: on a test horizon ``long_term`` times the training horizon (10 -> 30 for 3),
  rolled out as each model rolls out (recurrent models step on their own predictions, window
  models predict in chunks), with per-horizon curves to the end;
- **generalization**: on another data config (``test_data``) without retraining, e.g. Moving
  MNIST with 3 digits after training on 2, or a folder of videos; a model that cannot take its
  shape is refused in one line;
- **robustness**: on the test clips with their context frames dropped, duplicated or noised
  (``framecast.evaluation.robustness``), against the same clips clean.

Each section's scores are cached beside the model's run (``runs/<label>/sections/``), keyed by
the section's settings, so a resumed comparison scores only what it has not.
"""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from framecast.config import DataConfig, to_dict
from framecast.errors import FramecastError
from framecast.evaluation.robustness import against_clean, describe_change, parse_corruptions
from framecast.evaluation.visualize import plot_per_horizon
from framecast.io import atomic_write_text
from framecast.resolve import ResolvedRun, resolve_data
from framecast.training.testing import describe_data, test_model


@dataclasses.dataclass(frozen=True)
class Section:
    """One extra test: its name, the data it scores and the corruption of the context, if any."""

    key: str  # long_term | generalization | robustness
    name: str  # shown in the report: "long-term 10 -> 30", "robustness drop 0.2", ...
    data: DataConfig
    corruption: tuple[str, float, int] | None = None


def sections_of(cfg: Any) -> list[Section]:
    """The extra tests a ``CompareConfig`` asks for (none by default)."""
    d = cfg.data
    out = []
    if cfg.long_term and cfg.long_term > 1:
        long = dataclasses.replace(d, test_n_future=cfg.long_term * d.n_future)
        out.append(Section("long_term", f"long-term {d.n_context} -> {long.test_length - d.n_context}", long))
    if cfg.test_data is not None:
        other = resolve_data(cfg.test_data)
        out.append(Section("generalization", f"generalization to {other.name}", other))
    for kind, rate in parse_corruptions(cfg.robustness):
        out.append(Section("robustness", f"robustness {kind} {rate:g}", d, (kind, rate, cfg.robustness_seed)))
    return out


def _digest(section: Section) -> str:
    blob = json.dumps([section.key, to_dict(section.data), section.corruption], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def score_sections(
    sections: list[Section], model, run: ResolvedRun, run_dir: Path, fingerprint: str, lpips, log
) -> dict[str, dict[str, Any]]:
    """Score ``model`` (trained under ``run``) on every section; name -> ``test_model``'s result.
    Cached in ``run_dir/sections/`` per section and model fingerprint."""
    out = {}
    for s in sections:
        cache = run_dir / "sections" / f"{s.key}-{_digest(s)}.json"
        if cache.is_file():
            cached = json.loads(cache.read_text())
            if cached.get("fingerprint") == fingerprint and cached.get("evaluation") == to_dict(run.config.evaluation):
                out[s.name] = cached["test"]
                continue
        scored = dataclasses.replace(run.config, data=s.data)
        log(f"[{model.model_name}] {s.name}: testing on {s.data.name}")
        try:
            tested = test_model(model, ResolvedRun(scored, run.model), lpips=lpips, corruption=s.corruption)
        except FramecastError as e:  # a shape the model cannot take: said, and the section goes on
            if s.key != "generalization":
                raise
            tested = {"refused": str(e)}
        record = {"fingerprint": fingerprint, "evaluation": to_dict(run.config.evaluation), "test": tested}
        atomic_write_text(cache, json.dumps(record, indent=2))
        out[s.name] = tested
    return out


def _cell(res: dict[str, Any], metric: str) -> str:
    if "refused" in res:
        return "refused"
    value, ci = res["mean"].get(metric), (res.get("ci95") or {}).get(metric)
    if value is None:
        return "–"
    digits = 4 if metric == "ssim" else 1
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def report_sections(sections: list[Section], results: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """report.md's sections for the extra tests, with a per-horizon plot for the long-term one."""
    lines: list[str] = []
    clean = {label: r["test"] for label, r in results.items()}
    for s in sections:
        scored = {label: r.get("sections", {}).get(s.name) for label, r in results.items()}
        scored = {k: v for k, v in scored.items() if v is not None}
        if not scored:
            continue
        metrics = [m for m in ("mse", "ssim", "rmse") if any(m in v.get("mean", {}) for v in scored.values())]
        lines += [f"## {s.name[0].upper()}{s.name[1:]}", ""]
        first = next((v for v in scored.values() if "data" in v), None)
        if first is not None:
            lines += [
                f"Scored on {describe_data(first['data'])}"
                + (
                    f", context {s.corruption[0]} at {s.corruption[1]:g} (seed {s.corruption[2]})"
                    if s.corruption
                    else ""
                )
                + ".",
                "",
            ]
        head = ["model", *[f"{m.upper()} [95% interval]" for m in metrics]]
        if s.key == "robustness":
            head += [f"{m.upper()} clean" for m in metrics] + ["MSE change (paired test, same clips)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for label, res in scored.items():
            row = [label, *[_cell(res, m) for m in metrics]]
            if s.key == "robustness":
                row += [_cell(clean[label], m) for m in metrics]
                row.append("–" if "refused" in res else describe_change(against_clean(res, clean[label])))
            lines.append("| " + " | ".join(row) + " |")
        refused = {k: v["refused"] for k, v in scored.items() if "refused" in v}
        lines += ["", *[f"Refused: `{k}`: {why}." for k, why in refused.items()]] if refused else []
        if s.key == "long_term":
            curves = {k: v["per_horizon"]["mse"] for k, v in scored.items() if "per_horizon" in v}
            bands = {k: v.get("per_horizon_ci95", {}).get("mse") for k, v in scored.items() if "per_horizon" in v}
            plot_per_horizon(curves, "MSE", out / "mse_per_horizon_long_term.png", "MSE per frame", bands=bands)
            lines += ["", "![MSE per horizon, long-term](mse_per_horizon_long_term.png)"]
        lines.append("")
    return lines
