"""The comparison harness: every model on one data split, one horizon, one budget, one metric code.

``compare(cfg)`` trains each model (skipping those already finished, resuming those half
trained), tests it on the same test clips together with the ``copy_last``, ``blank``,
``linear`` and ``flow`` baselines, and writes a report folder:

    report.md  results.json  results.csv
    mse_per_horizon.png  ssim_per_horizon.png  loss_vs_time.png
    examples.gif  examples.png  runs/<model>/...

(written by ``framecast.evaluation.report``).
"""

import dataclasses
import hashlib
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
    EvaluationConfig,
    RunConfig,
    TrainConfig,
    TrainerConfig,
    build_dataclass,
    merge,
    to_dict,
)
from framecast.data import build_datasets
from framecast.errors import FramecastError
from framecast.evaluation.fvd import make_fvd
from framecast.evaluation.report import write_outputs
from framecast.evaluation.robustness import parse_corruptions
from framecast.evaluation.sections import score_sections, sections_of
from framecast.evaluation.seeds import combine_seeds, combine_tests, seed_runs
from framecast.io import atomic_write_text, run_folder_lock
from framecast.layers import as_hw
from framecast.registry import create_model, get_entry
from framecast.resolve import ResolvedRun, resolve_data, resolve_model_config
from framecast.training.runner import ConfigChanged, fit
from framecast.training.testing import describe_data, scored_data, test_model


@dataclass
class CompareConfig:
    """A comparison: which models, on which data, with which equal budget."""

    # label -> model overrides; "name" picks the registry model (default: the label), and an
    # optional "train" mapping adjusts the training policy for that model only.
    models: dict[str, Any] = field(default_factory=lambda: {"convlstm_seq2seq": {}, "convlstm": {}})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)  # the intervals' bootstrap
    # parameter-free models scored beside them; flow is skipped, with a note, where OpenCV is missing
    baselines: tuple[str, ...] = ("copy_last", "blank", "linear", "flow")
    out_dir: str = "reports/compare"  # the report folder (each model trains in runs/<label> under it)
    n_examples: int = 4  # test clips shown in examples.gif and examples.png
    speed_batch: int = 16  # batch of the inference-speed measurement
    lpips: str = "auto"  # auto: score LPIPS where its weights are on the machine; on: require it; off
    fvd: str = "auto"  # auto: score FVD where I3D's weights are on the machine (videos, 9+ future frames); on; off
    seeds: int = 1  # train each model this many times (train.seed + k) and report the mean and spread over seeds
    # PredBench's tests beyond the training horizon (evaluation/sections.py), each a report section:
    long_term: int = 0  # also test on a horizon this many times data.n_future (3: 10 -> 30); 0 or 1: off
    test_data: DataConfig | None = None  # also test on this data without retraining (generalization)
    robustness: list[str] = field(default_factory=list)  # context corruptions KIND:RATE: drop, duplicate, noise
    robustness_seed: int = 0  # seed of the corruptions (the same seed corrupts the same clips the same way)

    def __post_init__(self) -> None:
        for key in ("lpips", "fvd"):
            if getattr(self, key) not in ("auto", "on", "off"):
                raise ConfigError(f"{key} must be auto, on or off, got {getattr(self, key)!r}")
        if self.long_term < 0:
            raise ConfigError(
                f"long_term must be a whole multiple of the training horizon (0: off), got {self.long_term}"
            )
        parse_corruptions(self.robustness)
        if self.seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {self.seeds}")


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
    # the data's shape (gridded arrays: read from the files), so model keys are checked against it
    cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))
    if not cfg.models:
        raise ConfigError("models: name at least one model to compare (see `framecast models`)")
    for label in cfg.models:  # a bad model name or key fails as the config is read, before any training
        resolve_model_config(run_config(cfg, label))
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
        evaluation=cfg.evaluation,
        out_dir=str(Path(cfg.out_dir) / "runs" / label),
    )
    get_entry(name)
    return run


def _fingerprint(run: RunConfig) -> str:
    """What a finished run was trained and tested with, but for the folder, the display and the
    intervals' settings (a change of those retests without retraining: ``_stale_test``)."""
    d = to_dict(run)
    d.pop("out_dir")
    d.pop("evaluation")
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
    """Train, test and report every model of ``cfg``; returns the results mapping.

    The report folder is this process's while it runs (``framecast.io.run_folder_lock``): another
    compare or fit on it refuses, naming this one. Each model's fit holds its own folder,
    ``runs/<label>`` under it."""
    cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))  # the data's shape, read once for every model
    with run_folder_lock(cfg.out_dir):
        return _compare(cfg, log)


def _compare(cfg: CompareConfig, log) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)  # DDP ranks other than 0 take no lock and may come first
    data = build_datasets(cfg.data)
    test_clips = torch.stack(
        [data["test"][i] for i in range(min(len(data["test"]), max(cfg.n_examples, cfg.speed_batch)))]
    )
    nc, nf = cfg.data.n_context, cfg.data.test_length - cfg.data.n_context  # the test horizon
    scorer = make_lpips(cfg.lpips, log)
    fvd = make_fvd(cfg.fvd, nf, log, arrays=cfg.data.is_array)
    results: dict[str, dict[str, Any]] = {}
    examples: dict[str, torch.Tensor] = {}
    curves: dict[str, list] = {}

    labels = list(cfg.baselines) + [m for m in cfg.models if m not in cfg.baselines]
    skipped: dict[str, str] = {}
    sections = sections_of(cfg)
    for label in labels:
        is_baseline = label in cfg.baselines and label not in cfg.models
        why = getattr(get_entry(label).cls, "unavailable", None) if is_baseline else None
        if why is not None and why() is not None:
            skipped[label] = why()
            log(f"[{label}] skipped: {skipped[label]}")
            continue
        run = (
            RunConfig(
                model={"name": label},
                data=cfg.data,
                train=cfg.train,
                trainer=cfg.trainer,
                evaluation=cfg.evaluation,
                out_dir=str(out / "runs" / label),
            )
            if is_baseline
            else run_config(cfg, label)
        )
        runs = [run] if is_baseline or not get_entry(run.model_name).trainable else seed_runs(run, cfg.seeds)
        done = [_train_and_test(cfg, label, r, is_baseline, data, test_clips, (scorer, fvd), log) for r in runs]
        res, model = done[0][:2]  # seed 0: the examples
        if len(done) > 1:
            res = combine_seeds([d[0] for d in done])
        if sections:  # scored apart from result.json: adding a section later reuses the training
            scored = [
                score_sections(sections, m, resolved, Path(r.out_dir), stamp, scorer, log)
                for r, (_, m, resolved, stamp) in zip(runs, done)
            ]
            res["sections"] = (  # every seed scored, as the short-term test is
                scored[0]
                if len(scored) == 1
                else {name: combine_tests([s[name] for s in scored]) for name in scored[0]}
            )
        results[label] = res
        curves[label] = res["loss_curve"]
        with torch.no_grad():
            pred = model.eval()(test_clips[: cfg.n_examples, :nc], nf).future(nf).float()
            examples[label] = pred if cfg.data.is_array else pred.clamp(0, 1)  # arrays: drawn on their range

    for key in (k for k in ("lpips", "fvd") if getattr(cfg, k) == "off"):  # off: not shown, even if scored before
        for res in results.values():
            for part in ("mean", "ci95", "per_horizon", "per_horizon_ci95", "per_clip"):
                res["test"].get(part, {}).pop(key, None)
    ref = results.get("copy_last", {}).get("test", {}).get("mean", {})
    for res in results.values():
        m = res["test"]["mean"]
        res["gap_to_copy_last"] = {k: m[k] - ref[k] for k in ("mse", "ssim") if k in m and k in ref} if ref else None

    write_outputs(cfg, results, examples, curves, test_clips, skipped, sections)
    return results


def _stale_test(res: dict[str, Any], run: RunConfig, scorers) -> str | None:
    """Why a finished run's test scores no longer answer this comparison (None: they do): other
    interval settings, or LPIPS or FVD asked for and not scored. Training is reused either way."""
    if res.get("evaluation") != to_dict(run.evaluation):  # none recorded: tested before the settings were
        return "other evaluation settings"
    for scorer, name in zip(scorers, ("LPIPS", "FVD")):
        if scorer is not None and name.lower() not in res["test"]["mean"] and not run.data.is_array:
            return f"{name} is now scored"
    return None


def _train_and_test(cfg: CompareConfig, label: str, run: RunConfig, is_baseline: bool, data, test_clips, scorers, log):
    """Train (or resume, or reuse) and test one model of the comparison in ``run.out_dir``;
    returns its result, the model, its resolved run and a stamp of its weights. ``scorers``:
    the LPIPS scorer and the FVD embedder (each None where not scored)."""
    nc, nf = cfg.data.n_context, cfg.data.test_length - cfg.data.n_context
    resolved = ResolvedRun(run, resolve_model_config(run))
    run_dir = Path(run.out_dir)
    done_file = run_dir / "result.json"
    features = run_dir / "fvd_features.npz"  # I3D features of its test clips: paired FVD tests
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
            else create_model(run.model_name, **resolved.model)
        )
        stale = _stale_test(res, run, scorers)
        if stale:
            log(f"[{label}] testing again ({stale})")
            tested = test_model(model, resolved, lpips=scorers[0], fvd=scorers[1], fvd_features=features)
            res = {**res, "test": tested, "evaluation": to_dict(run.evaluation)}
            atomic_write_text(done_file, json.dumps(res, indent=2))
    else:
        if is_baseline or not get_entry(run.model_name).trainable:
            model = create_model(run.model_name, **resolved.model)
            stats = {"train_seconds": 0.0, "epochs": 0, "steps": 0, "loss_curve": [], "best_checkpoint": None}
        else:
            log(
                f"[{label}] training ({'resuming' if (run_dir / 'checkpoints' / 'last.ckpt').is_file() else 'new run'}) -> {run_dir}"
            )
            try:
                stats = fit(resolved, resume=True)
            except ConfigChanged as e:
                raise FramecastError(
                    f"{run_dir} holds a half-trained '{label}' trained with another config "
                    f"({'; '.join(e.changes)}); go back to the config it was trained with, or pick another "
                    f"--out (or delete {run_dir}) to train '{label}' again"
                ) from None
            model = load_checkpoint(stats["best_checkpoint"])
        log(f"[{label}] testing on {describe_data(scored_data(cfg.data, len(data['test'])))}")
        tested = test_model(model, resolved, lpips=scorers[0], fvd=scorers[1], fvd_features=features)
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
            "config": resolved.model,
            "train_seed": run.train.seed,
            "evaluation": to_dict(run.evaluation),  # the intervals' settings it was tested with
        }
        atomic_write_text(done_file, json.dumps(res, indent=2))
    ckpt = res.get("checkpoint")
    stamp = f"{fp}:{ckpt}:{Path(ckpt).stat().st_mtime_ns if ckpt and Path(ckpt).is_file() else ''}"
    return res, model, resolved, stamp
