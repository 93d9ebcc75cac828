"""The report of a comparison (``framecast.evaluation.compare``): results.csv, results.json,
report.md and the figures, every score with its 95% bootstrap interval over the test clips and
every pair of models tested on the same clips (``framecast.evaluation.uncertainty``)."""

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framecast.config import to_dict
from framecast.evaluation import uncertainty as U
from framecast.evaluation.fvd import fvd_verdict, read_features
from framecast.evaluation.sections import report_sections
from framecast.evaluation.seeds import report_seeds
from framecast.evaluation.visualize import comparison_gif, plot_loss_curves, plot_per_horizon, strip_png
from framecast.io import atomic_write_text
from framecast.layers import show_size
from framecast.machine import describe as describe_machine
from framecast.machine import machine_profile
from framecast.training.testing import scored_data

COLUMNS = [
    ("model", "model"),
    ("params", "params"),
    ("flops_per_sample", "GFLOPs/sample"),
    ("mse", "MSE"),
    ("mae", "MAE"),
    ("mse_pixel", "MSE/px"),
    ("mae_pixel", "MAE/px"),
    ("ssim", "SSIM"),
    ("psnr", "PSNR"),
    ("lpips", "LPIPS"),
    ("fvd", "FVD"),
    ("rmse", "RMSE"),  # arrays: physical units (metrics.per_frame_array)
    ("wrmse", "lat-weighted RMSE"),
    ("train_seconds", "train time"),
    ("epochs", "epochs"),
    ("steps", "steps"),
    ("infer_frames_per_s", "infer frames/s"),
    ("gap_mse", "MSE vs copy_last"),
]


SCORES = ("mse", "mae", "mse_pixel", "mae_pixel", "ssim", "psnr", "lpips", "fvd", "rmse", "wrmse")  # carry intervals


def _row(label: str, res: dict[str, Any]) -> dict[str, Any]:
    m = res["test"]["mean"]
    ci = res["test"].get("ci95") or {}  # results from before intervals were kept have none
    gap = res.get("gap_to_copy_last") or {}
    return {
        "model": label,
        "params": res["params"],
        "flops_per_sample": res["flops_per_sample"],
        **{k: m.get(k) for k in SCORES},
        **{f"{k}_{end}": (ci[k][i] if k in ci else None) for k in SCORES for i, end in enumerate(("lo", "hi"))},
        "train_seconds": res["train_seconds"],
        "epochs": res["epochs"],
        "steps": res["steps"],
        "infer_frames_per_s": res["infer_frames_per_s"],
        "gap_mse": gap.get("mse"),
    }


def _precisions_used(results: dict[str, dict[str, Any]]) -> str:
    """``Precision and layout used: convlstm trained in bf16-mixed, channels-last, tested in ...``."""

    def used(rec: Any) -> str | None:
        return f"{rec['precision']}, {rec['layout']}" if isinstance(rec, dict) and "layout" in rec else None

    parts = []
    for label, res in results.items():
        train, test = used(res.get("train_precision")), used(res.get("test", {}).get("precision"))
        if train or test:
            parts.append(
                f"{label} " + " and ".join(f"{k} in {v}" for k, v in (("trained", train), ("tested", test)) if v)
            )
    return f"Precision and layout used: {'; '.join(parts)}." if parts else ""


def _first_channel(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(N, T, C, H, W) normalised arrays -> their first channel mapped from [lo, hi] to [0, 1]."""
    return ((x[:, :, :1].float() - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "–"
    if key == "params":
        return f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v:,}"
    if key == "flops_per_sample":
        return f"{v / 1e9:.2f}"
    if key == "train_seconds":
        return f"{v / 60:.1f} min" if v else "–"
    if key == "epochs":
        return f"{v:.3g}"
    if key in ("ssim", "lpips"):
        return f"{v:.4f}"
    if key in ("mse_pixel", "mae_pixel"):
        return f"{v:.5f}"
    if key == "gap_mse":
        return f"{v:+.1f}"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def uncertainty_summary(results: dict[str, dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """For each of ``metrics``: every pair of models tested on the same clips (paired bootstrap)
    and one summary line that names a winner only where the differences hold
    (``framecast.evaluation.uncertainty``), with the bootstrap's settings."""
    per_clip = {label: res["test"].get("per_clip") or {} for label, res in results.items()}
    record = next((r["test"]["bootstrap"] for r in results.values() if r["test"].get("bootstrap")), None)
    kw = U.params(record)  # the settings every model's intervals were computed with
    pairs, summary = {}, {}
    for metric in metrics:
        scores = {label: np.asarray(v[metric]) for label, v in per_clip.items() if v.get(metric)}
        if len(scores) < 2:
            continue
        pairs[metric] = U.pairwise(scores, metric, **kw)
        summary[metric] = U.verdict(scores, metric, **kw)
    if "fvd" in metrics:  # a distance between sets of clips: tested on the I3D features each test kept
        features = {
            label: read_features((res["test"].get("fvd") or {}).get("features")) for label, res in results.items()
        }
        if sum(f is not None for f in features.values()) >= 2:
            pairs["fvd"], summary["fvd"] = fvd_verdict(features, seed=kw["seed"], level=kw["level"], block=kw["block"])
            if any("seeds" in r for r in results.values()):  # the features kept are the first seed's
                summary["fvd"] += " (tested on the first training seed's predictions)"
    return {**U.settings(**kw), "overlap": bool((record or {}).get("overlap")), "summary": summary, "pairwise": pairs}


def _fmt_ci(key: str, value: Any, ci: list[float] | None) -> str:
    """``23.9 [22.1, 25.8]``: the value and its 95% interval (the value alone without one)."""
    if ci is None or value is None or any(math.isnan(x) for x in ci):
        return _fmt(key, value)
    return f"{_fmt(key, value)} [{_fmt(key, ci[0])}, {_fmt(key, ci[1])}]"


def _pair_lines(metric: str, header: str, pairs: list[dict[str, Any]], n_boot: int) -> list[str]:
    """The report's table of which differences of ``metric`` hold."""
    fmt = lambda v: f"{v:+.4g}"  # noqa: E731
    lines = [f"| {header}: A − B | difference [95% interval] | p | holds |", "|---|---|---|---|"]
    for p in pairs:
        holds = f"yes: {p['better']} better" if p["better"] else "no"
        pval = f"< {1 / n_boot:.3g}" if p["p"] < 1 / n_boot else f"{p['p']:.3f}"  # none of the resamples crossed 0
        lines.append(f"| {p['a']} − {p['b']} | {fmt(p['diff'])} [{fmt(p['lo'])}, {fmt(p['hi'])}] | {pval} | {holds} |")
    return lines


def write_outputs(cfg, results, examples, curves, test_clips, skipped=None, sections=()) -> None:
    """Write the report folder of a comparison ``cfg`` (a ``CompareConfig``): results.csv,
    results.json, the per-horizon and loss plots, examples.gif/png and report.md. ``skipped``:
    label -> why a baseline was not scored; ``sections``: PredBench's extra tests
    (``framecast.evaluation.sections``), scored in each result's ``sections``."""
    out = Path(cfg.out_dir)
    nc = cfg.data.n_context
    rows = [_row(label, res) for label, res in results.items()]
    arrays = cfg.data.is_array
    per_h = {label: res["test"]["per_horizon"] for label, res in results.items()}
    second = "ssim" if all("ssim" in v for v in per_h.values()) else "rmse"  # arrays: SSIM only if image-like
    shown = [(k, h) for k, h in COLUMNS if any(r[k] is not None for r in rows)]
    unc = uncertainty_summary(results, [k for k, _ in shown if k in SCORES])
    # results.csv / results.json
    buf = io.StringIO()
    fields = [f for k, _ in COLUMNS for f in ((k, f"{k}_lo", f"{k}_hi") if k in SCORES else (k,))]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    public = {label: {k: v for k, v in res.items() if k != "loss_curve"} for label, res in results.items()}
    scored = scored_data(cfg.data, next(iter(results.values()))["test"]["n_clips"])  # every model: these clips
    atomic_write_text(
        out / "results.json",
        json.dumps(
            {
                "data": scored,
                "machine": machine_profile(),
                "config": to_dict(cfg),
                "uncertainty": unc,
                "skipped": skipped or {},
                "results": public,
            },
            indent=2,
        ),
    )
    # figures
    bands = lambda metric: {k: r["test"].get("per_horizon_ci95", {}).get(metric) for k, r in results.items()}  # noqa: E731
    mse_title = "MSE per pixel, physical units (mean over channels)" if arrays else "MSE per frame (sum over pixels)"
    plot_per_horizon(
        {k: v["mse"] for k, v in per_h.items()}, "MSE", out / "mse_per_horizon.png", mse_title, bands=bands("mse")
    )
    plot_per_horizon(
        {k: v[second] for k, v in per_h.items()},
        second.upper(),
        out / f"{second}_per_horizon.png",
        bands=bands(second),
    )
    plot_loss_curves({k: v for k, v in curves.items() if v}, out / "loss_vs_time.png")
    if arrays:  # normalised physical values, any channels: the first channel, on the test clips' range
        lo, hi = test_clips[:, :, :1].amin(), test_clips[:, :, :1].amax()
        test_clips, examples = (
            _first_channel(test_clips, lo, hi),
            {k: _first_channel(v, lo, hi) for k, v in examples.items()},
        )
    comparison_gif(test_clips[: cfg.n_examples], examples, nc, out / "examples.gif")
    strip_png(test_clips[0], {k: v[0] for k, v in examples.items()}, nc, out / "examples.png")
    # report.md
    d, t = cfg.data, cfg.trainer
    budget = (
        f"{t.max_time_minutes:g} minutes of training per model"
        if t.max_time_minutes
        else f"{t.max_epochs} epochs per model"
    )
    if t.max_steps and t.max_steps > 0:
        budget += f" (at most {t.max_steps} steps)"
    n_clips = next(iter(results.values()))["test"]["n_clips"]
    lines = [
        "# framecast comparison report",
        "",
        f"Data: {d.name}, {show_size(d.image_size)}, {d.n_context} context -> {d.test_length - d.n_context} future frames, "
        f"{next(iter(results.values()))['test']['n_clips']} test clips (seed {d.seed}). Budget: {budget}, "
        f"batch {d.batch_size}, precision {t.precision}. Every model is scored by the same code on the same clips.",
        "",
        f"Machine: {describe_machine(machine_profile())}. {_precisions_used(results)}",
        "",
        "| " + " | ".join(f"{h} [95% interval]" if k in SCORES else h for k, h in shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    lines += [
        "| "
        + " | ".join(
            _fmt_ci(k, r[k], None if r.get(f"{k}_lo") is None else [r[f"{k}_lo"], r[f"{k}_hi"]])
            if k in SCORES
            else _fmt(k, r[k])
            for k, _ in shown
        )
        + " |"
        for r in rows
    ]
    lines += [
        "",
        f"Intervals: 95% {'percentile' if unc['block'] == 1 else 'circular block'} bootstrap of the mean over the "
        f"{n_clips} test clips ({unc['n_boot']} resamples, seed {unc['seed']}"
        + (f", blocks of {unc['block']} consecutive clips" if unc["block"] > 1 else "")
        + "). A difference between two models holds where the 95% interval of the paired "
        "bootstrap of their per-clip differences (the same clips) excludes 0; a winner is named only then."
        + (f" With {n_clips} clips the intervals are rough: the bootstrap wants a few dozen." if n_clips < 30 else "")
        + (
            " The test clips overlap (neighbouring windows share frames), so they are not independent; "
            + (
                f"runs of {unc['block']} consecutive clips are resampled whole (the circular block bootstrap), so "
                "the intervals carry that dependence."
                if unc["block"] > 1
                else "resampled one by one (too few clips for blocks, or evaluation.bootstrap_block 1), the "
                "intervals understate the uncertainty."
            )
            if unc["overlap"]
            else ""
        )
        + (
            f" Each trained model was trained with {cfg.seeds} seeds: its score is the mean over seeds, its interval "
            "that of each clip's mean over seeds, and its band in the per-horizon plots the range over seeds."
            if cfg.seeds > 1
            else ""
        ),
        "",
        *[f"- {line}" for line in unc["summary"].values()],
    ]
    trained = [label for label, r in results.items() if r.get("steps")]
    if cfg.seeds == 1 and len(trained) > 1:  # clip-level verdicts say nothing of another training run
        lines += [
            "",
            f"Each of {', '.join(trained)} was trained once: these intervals and verdicts cover the test clips, "
            "not training. Another seed, or another number of steps in the same minutes, can move a trained "
            "model by more than its interval and turn a verdict between trained models; `--seeds N` trains "
            "each N times and reports the spread.",
        ]
    if skipped:
        lines += ["", *[f"Not scored: `{k}`: {why}." for k, why in skipped.items()]]
    explained = (
        "MSE, MAE and RMSE: per pixel, in the data's physical units, averaged over channels, future frames and "
        "clips (RMSE per frame, then averaged); lat-weighted RMSE: WeatherBench's, cos(latitude) weights of mean 1. "
        "Per-channel values and what each metric is are in results.json. Nothing is clipped. `blank` predicts "
        "the normalised zero (the training mean under standard normalisation). "
        if arrays
        else "MSE and MAE: per-frame sums over pixels on the [0, 1] scale, averaged over future frames and clips "
        "(the papers' convention); MSE/px and MAE/px: per-pixel means. SSIM and PSNR on uint8 frames "
        "(skimage's SSIM: 7x7 uniform window). Predictions are clipped to [0, 1]. "
        + (
            "FVD: the Fréchet distance between I3D features (Kinetics-400) of the predicted and the true future "
            "frames of all test clips, lower is better; not comparable to FVDs of other clip lengths, sizes or "
            "clip counts; its interval resamples the clips (200 resamples, centred on the value). "
            if any("fvd" in r["test"]["mean"] for r in results.values())
            else ""
        )
    )
    lines += [
        "",
        explained + "GFLOPs: forward pass for one "
        "clip's whole future. Train time: wall-clock seconds inside training steps. `copy_last` repeats the last "
        "context frame, `blank` predicts empty frames, `linear` extrapolates each pixel's least-squares trend over "
        "the context (clipped to the context's range) and `flow` moves the last frame along the optical flow of the "
        "context (OpenCV DIS for video, pysteps Lucas-Kanade for fields, semi-Lagrangian): none is trained, and a "
        "model is only worth something where it beats them.",
        "",
        f"![MSE per horizon](mse_per_horizon.png) ![{second.upper()} per horizon]({second}_per_horizon.png)",
        "",
        "![training loss against time](loss_vs_time.png)",
        "",
        "Test clips, context (green) then truth and each model's prediction (red), columns: "
        f"truth, {', '.join(examples)}:",
        "",
        "![examples](examples.gif)",
        "",
        "![first clip](examples.png)",
        "",
    ]
    for metric, header in (("mse", "MSE"), (second, second.upper())):
        if unc["pairwise"].get(metric):
            lines += [
                f"## Which {header} differences hold",
                "",
                *_pair_lines(metric, header, unc["pairwise"][metric], unc["n_boot"]),
                "",
            ]
    lines += report_seeds(results, [k for k, _ in shown if k in SCORES])
    lines += report_sections(list(sections), results, out)
    atomic_write_text(out / "report.md", "\n".join(lines))
