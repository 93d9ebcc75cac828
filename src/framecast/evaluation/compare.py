"""The comparison harness: every model on one data split, one horizon, one budget, one metric code.

``compare(cfg)`` trains each model (skipping those already finished, resuming those half
trained), tests it on the same test clips together with the ``copy_last`` and ``blank``
baselines, and writes a report folder:

    report.md  results.json  results.csv
    mse_per_horizon.png  ssim_per_horizon.png  loss_vs_time.png
    examples.gif  examples.png  runs/<model>/...
"""

import csv
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from framecast.checkpoint import load_checkpoint
from framecast.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    TrainConfig,
    TrainerConfig,
    build_dataclass,
    merge,
    resolve_model_config,
    to_dict,
)
from framecast.data import build_datasets
from framecast.errors import FramecastError
from framecast.evaluation.visualize import comparison_gif, plot_loss_curves, plot_per_horizon, strip_png
from framecast.io import atomic_write_text
from framecast.layers import as_hw, show_size
from framecast.machine import describe as describe_machine
from framecast.machine import machine_profile
from framecast.registry import create_model, get_entry
from framecast.training.runner import ConfigChanged, describe_data, fit, scored_data, test_model


@dataclass
class CompareConfig:
    """A comparison: which models, on which data, with which equal budget."""

    # label -> model overrides; "name" picks the registry model (default: the label), and an
    # optional "train" mapping adjusts the training policy for that model only.
    models: dict[str, Any] = field(default_factory=lambda: {"convlstm_seq2seq": {}, "convlstm": {}})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    baselines: tuple[str, ...] = ("copy_last", "blank")  # parameter-free models scored beside them
    out_dir: str = "reports/compare"  # the report folder (each model trains in runs/<label> under it)
    n_examples: int = 4  # test clips shown in examples.gif and examples.png
    speed_batch: int = 16  # batch of the inference-speed measurement
    lpips: str = "auto"  # auto: score LPIPS where its weights are on the machine; on: require it; off

    def __post_init__(self) -> None:
        if self.lpips not in ("auto", "on", "off"):
            raise ConfigError(f"lpips must be auto, on or off, got {self.lpips!r}")


def build_compare_config(values: dict[str, Any]) -> CompareConfig:
    values = dict(values)
    models = values.get("models")
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if isinstance(models, list):
        models = {m: {} for m in models}
    if models is not None:
        values["models"] = {k: (v or {}) for k, v in models.items()}
    cfg = build_dataclass(CompareConfig, values)
    if not cfg.models:
        raise ConfigError("models: name at least one model to compare (see `framecast models`)")
    for label in cfg.models:
        run_config(cfg, label)  # validates names and keys before any training
    for name in cfg.baselines:
        get_entry(name)
    return cfg


def run_config(cfg: CompareConfig, label: str) -> RunConfig:
    """The run config of one model: the shared data, policy and budget plus its own overrides."""
    spec = dict(cfg.models[label])
    name = spec.pop("name", label)
    train = merge(to_dict(cfg.train), spec.pop("train", {}) or {})
    run = RunConfig(
        model={"name": name, **spec},
        data=cfg.data,
        train=build_dataclass(TrainConfig, train, prefix=f"models.{label}.train."),
        trainer=cfg.trainer,
        out_dir=str(Path(cfg.out_dir) / "runs" / label),
    )
    get_entry(name)
    resolve_model_config(run)
    return run


def _fingerprint(run: RunConfig) -> str:
    d = to_dict(run)
    d.pop("out_dir")
    d["trainer"].pop("enable_progress_bar")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _conv_backward_flops(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape=None,
    **_,
) -> int:
    """FLOPs of a convolution's backward: the gradient of the input and that of the weight each
    cost as many multiply-adds as the forward. torch.utils.flop_counter's own formula counts the
    weight gradient of a grouped convolution as if it were dense (``groups`` times too many: a
    depthwise 21x21 block of SimVP read 5x its true training FLOPs)."""
    spatial = x_shape[2:] if transposed else grad_out_shape[2:]
    forward = 2 * grad_out_shape[0] * math.prod(w_shape) * math.prod(spatial)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter (a multiply-add = 2 FLOPs) with grouped convolutions' backward
    counted right (``_conv_backward_flops``); equal to torch's count for ungrouped ones."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops})


def count_flops(model: torch.nn.Module, clip: torch.Tensor, n_context: int, n_future: int) -> int:
    """Forward FLOPs of predicting one clip's future (torch.utils.flop_counter)."""
    with torch.no_grad(), flop_counter() as counter:
        model(clip[:1, :n_context], n_future)
    return int(counter.get_total_flops())


def registered_flops(name: str, size: str, n_context: int = 10, n_future: int = 10) -> int | None:
    """Forward FLOPs of one clip (``n_context`` -> ``n_future`` at the size's frame size) of the
    registered ``size`` of model ``name``, counted on the meta device: shapes only, no compute
    and no memory, so published sizes count in a moment. None if the model cannot run on meta
    tensors. A multiply-add counts as 2 FLOPs (torch.utils.flop_counter); fvcore, whose counts
    OpenSTL publishes, counts it as 1."""
    with torch.device("meta"):
        model = create_model(name, size=size).eval()
    cfg = model.config
    n_context = getattr(cfg, "n_context", n_context)
    context = torch.empty(
        1, n_context, getattr(cfg, "channels", 1), *as_hw(getattr(cfg, "image_size", 64)), device="meta"
    )
    try:
        return count_flops(model, context, n_context, n_future)
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def inference_speed(
    model: torch.nn.Module, clips: torch.Tensor, n_context: int, n_future: int, repeats: int = 2
) -> float:
    """Predicted frames per second at the batch of ``clips`` (median of ``repeats`` after warm-up)."""
    model.eval()
    times = []
    with torch.no_grad():
        model(clips[:, :n_context], n_future)
        for _ in range(repeats):
            t = time.perf_counter()
            model(clips[:, :n_context], n_future)
            times.append(time.perf_counter() - t)
    return clips.shape[0] * n_future / sorted(times)[len(times) // 2]


def make_lpips(mode: str, log=print):
    """The LPIPS scorer for ``mode`` (auto | on | off); auto says in one line why it is skipped."""
    from framecast.evaluation.lpips_metric import LPIPS, try_lpips

    if mode == "off":
        return None
    return LPIPS() if mode == "on" else try_lpips(log)


def compare(cfg: CompareConfig, log=print) -> dict[str, Any]:
    """Train, test and report every model of ``cfg``; returns the results mapping."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build_datasets(cfg.data)
    test_clips = torch.stack(
        [data["test"][i] for i in range(min(len(data["test"]), max(cfg.n_examples, cfg.speed_batch)))]
    )
    nc, nf = cfg.data.n_context, cfg.data.test_length - cfg.data.n_context  # the test horizon
    scorer = make_lpips(cfg.lpips, log)
    results: dict[str, dict[str, Any]] = {}
    examples: dict[str, torch.Tensor] = {}
    curves: dict[str, list] = {}

    labels = list(cfg.baselines) + [m for m in cfg.models if m not in cfg.baselines]
    for label in labels:
        is_baseline = label in cfg.baselines and label not in cfg.models
        run = (
            RunConfig(
                model={"name": label},
                data=cfg.data,
                train=cfg.train,
                trainer=cfg.trainer,
                out_dir=str(out / "runs" / label),
            )
            if is_baseline
            else run_config(cfg, label)
        )
        run_dir = Path(run.out_dir)
        done_file = run_dir / "result.json"
        fp = _fingerprint(run)
        if done_file.is_file():
            prev = json.loads(done_file.read_text())
            if prev.get("fingerprint") != fp:
                raise FramecastError(
                    f"{run_dir} holds a finished run with another config; pick another --out_dir "
                    f"or delete that folder to train '{label}' again"
                )
            log(f"[{label}] finished earlier, reusing {done_file}")
            res = prev
            model = (
                load_checkpoint(res["checkpoint"])
                if res.get("checkpoint")
                else create_model(run.model_name, **resolve_model_config(run))
            )
        else:
            if is_baseline or not get_entry(run.model_name).trainable:
                model = create_model(run.model_name, **resolve_model_config(run))
                stats = {"train_seconds": 0.0, "epochs": 0, "steps": 0, "loss_curve": [], "best_checkpoint": None}
            else:
                log(
                    f"[{label}] training ({'resuming' if (run_dir / 'checkpoints' / 'last.ckpt').is_file() else 'new run'}) -> {run_dir}"
                )
                try:
                    stats = fit(run, resume=True)
                except ConfigChanged as e:
                    raise FramecastError(
                        f"{run_dir} holds a half-trained '{label}' trained with another config "
                        f"({'; '.join(e.changes)}); go back to the config it was trained with, or pick another "
                        f"--out (or delete {run_dir}) to train '{label}' again"
                    ) from None
                model = load_checkpoint(stats["best_checkpoint"])
            log(f"[{label}] testing on {describe_data(scored_data(cfg.data, len(data['test'])))}")
            tested = test_model(model, run, lpips=scorer)
            model.eval()
            res = {
                "model": run.model_name,
                "fingerprint": fp,
                "params": sum(p.numel() for p in model.parameters()),
                "flops_per_sample": count_flops(model, test_clips, nc, nf),
                "infer_frames_per_s": inference_speed(model, test_clips[: cfg.speed_batch], nc, nf)
                if not is_baseline
                else None,
                "train_seconds": stats["train_seconds"],
                "epochs": stats["epochs"],
                "steps": stats["steps"],
                "checkpoint": stats["best_checkpoint"],
                "loss_curve": stats["loss_curve"],
                "test": tested,  # test.precision: what testing ran in, and on which machine
                "train_precision": stats.get("precision"),  # what training ran in (None: a baseline)
                "config": resolve_model_config(run),
            }
            atomic_write_text(done_file, json.dumps(res, indent=2))
        results[label] = res
        curves[label] = res["loss_curve"]
        with torch.no_grad():
            pred = model.eval()(test_clips[: cfg.n_examples, :nc], nf).future(nf).float()
            examples[label] = pred if cfg.data.is_array else pred.clamp(0, 1)  # arrays: drawn on their range

    ref = results.get("copy_last", {}).get("test", {}).get("mean", {})
    for res in results.values():
        m = res["test"]["mean"]
        res["gap_to_copy_last"] = {k: m[k] - ref[k] for k in ("mse", "ssim") if k in m and k in ref} if ref else None

    _write_outputs(cfg, results, examples, curves, test_clips)
    return results


# --------------------------------------------------------------------------- report


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
    ("rmse", "RMSE"),  # arrays: physical units (metrics.per_frame_array)
    ("wrmse", "lat-weighted RMSE"),
    ("train_seconds", "train time"),
    ("epochs", "epochs"),
    ("steps", "steps"),
    ("infer_frames_per_s", "infer frames/s"),
    ("gap_mse", "MSE vs copy_last"),
]


def _row(label: str, res: dict[str, Any]) -> dict[str, Any]:
    m = res["test"]["mean"]
    gap = res.get("gap_to_copy_last") or {}
    return {
        "model": label,
        "params": res["params"],
        "flops_per_sample": res["flops_per_sample"],
        **{k: m.get(k) for k in ("mse", "mae", "mse_pixel", "mae_pixel", "ssim", "psnr", "lpips", "rmse", "wrmse")},
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


def _write_outputs(cfg: CompareConfig, results, examples, curves, test_clips) -> None:
    out = Path(cfg.out_dir)
    nc = cfg.data.n_context
    rows = [_row(label, res) for label, res in results.items()]
    # results.csv / results.json
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[k for k, _ in COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    public = {label: {k: v for k, v in res.items() if k != "loss_curve"} for label, res in results.items()}
    scored = scored_data(cfg.data, next(iter(results.values()))["test"]["n_clips"])  # every model: these clips
    atomic_write_text(
        out / "results.json",
        json.dumps({"data": scored, "machine": machine_profile(), "config": to_dict(cfg), "results": public}, indent=2),
    )
    # figures
    per_h = {label: res["test"]["per_horizon"] for label, res in results.items()}
    arrays = cfg.data.is_array
    mse_title = "MSE per pixel, physical units (mean over channels)" if arrays else "MSE per frame (sum over pixels)"
    plot_per_horizon({k: v["mse"] for k, v in per_h.items()}, "MSE", out / "mse_per_horizon.png", mse_title)
    second = "ssim" if all("ssim" in v for v in per_h.values()) else "rmse"  # arrays: SSIM only if image-like
    plot_per_horizon({k: v[second] for k, v in per_h.items()}, second.upper(), out / f"{second}_per_horizon.png")
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
    shown = [(k, h) for k, h in COLUMNS if any(r[k] is not None for r in rows)]
    lines = [
        "# framecast comparison report",
        "",
        f"Data: {d.name}, {show_size(d.image_size)}, {d.n_context} context -> {d.test_length - d.n_context} future frames, "
        f"{next(iter(results.values()))['test']['n_clips']} test clips (seed {d.seed}). Budget: {budget}, "
        f"batch {d.batch_size}, precision {t.precision}. Every model is scored by the same code on the same clips.",
        "",
        f"Machine: {describe_machine(machine_profile())}. {_precisions_used(results)}",
        "",
        "| " + " | ".join(h for _, h in shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(k, r[k]) for k, _ in shown) + " |" for r in rows]
    explained = (
        "MSE, MAE and RMSE: per pixel, in the data's physical units, averaged over channels, future frames and "
        "clips (RMSE per frame, then averaged); lat-weighted RMSE: WeatherBench's, cos(latitude) weights of mean 1. "
        "Per-channel values and what each metric is are in results.json. Nothing is clipped. `blank` predicts "
        "the normalised zero (the training mean under standard normalisation). "
        if arrays
        else "MSE and MAE: per-frame sums over pixels on the [0, 1] scale, averaged over future frames and clips "
        "(the papers' convention); MSE/px and MAE/px: per-pixel means. SSIM and PSNR on uint8 frames "
        "(skimage's SSIM: 7x7 uniform window). Predictions are clipped to [0, 1]. "
    )
    lines += [
        "",
        explained + "GFLOPs: forward pass for one "
        "clip's whole future. Train time: wall-clock seconds inside training steps. `copy_last` repeats the last "
        "context frame and `blank` predicts empty frames: a model is only worth something where it beats both.",
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
    atomic_write_text(out / "report.md", "\n".join(lines))
