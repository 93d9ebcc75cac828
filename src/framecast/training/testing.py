"""Scoring a model on a test split: ``test_model`` runs the test pass and returns every metric
with its 95% interval (``framecast.evaluation.uncertainty``), FVD where asked for, and the
description of the clips scored."""

import dataclasses
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framecast.config import DataConfig, EvaluationConfig, RunConfig, to_dict
from framecast.data import FrameDataModule
from framecast.evaluation import uncertainty as U
from framecast.evaluation.metrics import describe_array_metrics
from framecast.io import atomic_write_bytes
from framecast.layers import show_size
from framecast.resolve import ResolvedRun, resolve_data
from framecast.training.checks import check_model_fits
from framecast.training.runner import make_trainer, resolve_trainer
from framecast.training.task import FrameTask


def test_model(
    model: torch.nn.Module,
    cfg: RunConfig | ResolvedRun,
    lpips=None,
    corruption: tuple[str, float, int] | None = None,
    fvd=None,
    fvd_features: Path | None = None,
) -> dict[str, Any]:
    """Score ``model`` on the test set of ``cfg.data``; returns means and per-horizon lists.

    The model is scored as it is (its own config); of ``cfg`` only the data, the training
    policy's metrics settings and the trainer are read (the data's shape is read from its files
    here unless ``cfg`` comes resolved).

    ``lpips``: an optional ``framecast.evaluation.lpips_metric.LPIPS`` scorer adding the ``lpips`` metric.
    ``fvd``: an optional ``framecast.evaluation.fvd.I3DFeatures`` adding ``fvd`` (the Fréchet
    Video Distance of the predicted futures to the true ones over the test split, with its
    bootstrap interval); ``fvd_features``: where to keep the clips' I3D features (an .npz of
    ``real`` and ``fake``), which paired FVD tests between models read.
    ``corruption``: (kind, rate, seed) corrupts every clip's context before it is predicted
    (``framecast.evaluation.robustness``; the truth scored stays clean).
    The result's ``data`` names the clips scored (``scored_data``).
    """
    if isinstance(cfg, ResolvedRun):
        cfg = cfg.config
    else:
        cfg = dataclasses.replace(cfg, data=resolve_data(cfg.data))
    check_model_fits(model, cfg.data)
    horizon = cfg.data.test_length - cfg.data.n_context
    arrays = cfg.data.is_array
    lpips, fvd = (None, None) if arrays else (lpips, fvd)  # LPIPS and FVD compare photographs and videos
    task = FrameTask(model.model_name, to_dict(model.config), cfg.data.n_context, horizon, cfg.train, lpips, fvd)
    task.model.load_state_dict(model.state_dict())
    task.corruption = corruption
    # auto: the fastest forward pass here (the model's own config, not the run's, is scored)
    scored = resolve_trainer(ResolvedRun(cfg, to_dict(model.config)), task.model, "infer")
    cfg, choice = scored.config, scored.choice
    # arrays: the normalisation the checkpoint was trained with (a baseline fits it on train)
    stored = (getattr(model, "checkpoint_meta", None) or {}).get("array") if arrays else None
    data = FrameDataModule(cfg.data, normalization=stored)
    if arrays:
        task.use_array_data(data.array_meta)
    trainer = make_trainer(cfg, logger=False, checkpointing=False)
    trainer.test(task, datamodule=data, verbose=False)
    res = task.test_results
    n_clips = len(data.datasets["test"])
    bootstrap = bootstrap_settings(cfg.evaluation, data.datasets["test"])
    out = {
        "data": scored_data(cfg.data, n_clips),
        "mean": {k: float(v.mean()) for k, v in res.items()},
        "per_horizon": {k: [float(x) for x in v] for k, v in res.items()},
        "n_clips": n_clips,
        **clip_statistics(task.test_per_clip, bootstrap),
        "precision": choice.record(),  # what the scores were computed in, and on which machine
        **({"metrics": describe_array_metrics(task.array_meta)} if arrays else {}),
    }
    if task.test_fvd_features is not None:
        out.update(fvd_scores(*task.test_fvd_features, bootstrap, out, fvd_features))
    return out


def fvd_scores(
    real: torch.Tensor, fake: torch.Tensor, bootstrap: dict[str, Any], res: dict[str, Any], keep: Path | None
):
    """FVD's entries of a test result: its value in ``mean``, its interval in ``ci95`` (both
    updated in ``res``) and ``fvd`` (how it was computed); the features written to ``keep``."""
    from framecast.evaluation.fvd import N_BOOT, fvd_with_ci

    if real.shape[0] < 2:  # a Fréchet distance fits a covariance: one clip has none
        return {"fvd": {"skipped": f"FVD needs at least 2 test clips, got {real.shape[0]}"}}
    kw = U.params(bootstrap)
    f = fvd_with_ci(real.numpy(), fake.numpy(), n_boot=N_BOOT, seed=kw["seed"], block=kw["block"])
    res["mean"]["fvd"], res["ci95"]["fvd"] = f["value"], [f["lo"], f["hi"]]
    if keep is not None:
        buf = io.BytesIO()
        np.savez(buf, real=real.numpy(), fake=fake.numpy())
        atomic_write_bytes(keep, buf.getvalue())
    return {
        "fvd": {
            "clips": int(real.shape[0]),
            "frames": "the predicted future frames against the true ones",
            "interval": f"bootstrap over clips, {f['n_boot']} resamples, seed {f['seed']}, centred on the value",
            "n_boot": f["n_boot"],
            "features": str(keep) if keep is not None else None,
        }
    }


def bootstrap_settings(evaluation: EvaluationConfig, test_set: Any) -> dict[str, Any]:
    """The bootstrap a test's intervals use (``uncertainty.settings``): ``evaluation``'s
    resamples and seed, and its block, ``auto`` read off the test clips (how many share a frame,
    ``uncertainty.block_length``; 1 for clips that share none, or without their positions), at
    most a quarter of the clips (``uncertainty.usable_block``). ``overlap`` records whether any
    two test clips share a frame."""
    starts = test_set.clip_starts() if hasattr(test_set, "clip_starts") and hasattr(test_set, "length") else None
    shared = U.block_length(starts, test_set.length) if starts else 1
    block = shared if evaluation.bootstrap_block == "auto" else int(evaluation.bootstrap_block)
    block = U.usable_block(block, len(test_set))
    settings = U.settings(n_boot=evaluation.bootstrap_resamples, seed=evaluation.bootstrap_seed, block=block)
    return {**settings, "overlap": shared > 1}


def clip_statistics(per_clip: dict[str, torch.Tensor], bootstrap: dict[str, Any] | None = None) -> dict[str, Any]:
    """The uncertainty of a test: ``ci95`` (metric -> [lo, hi], bootstrap over test clips of the
    mean), ``per_horizon_ci95`` (metric -> one [lo, hi] per horizon step), ``per_clip`` (metric
    -> each clip's mean over the horizon, in test-loader order: what paired tests compare) and
    ``bootstrap`` (method, resamples, seed, level, block: ``bootstrap_settings``; default: the
    plain bootstrap's defaults)."""
    bootstrap = bootstrap or U.settings()
    kw = U.params(bootstrap)
    with warnings.catch_warnings():  # a clip without any valid pixel: NaN, left out of the intervals
        warnings.simplefilter("ignore", RuntimeWarning)
        clip_means = {k: np.nanmean(v.numpy(), axis=1) for k, v in per_clip.items()}
        return {
            "ci95": {k: list(U.bootstrap_ci(v, **kw)) for k, v in clip_means.items()},
            "per_horizon_ci95": {
                k: [list(band) for band in U.bootstrap_ci_steps(v.numpy(), **kw)] for k, v in per_clip.items() if len(v)
            },
            "per_clip": {k: [float(x) for x in v] for k, v in clip_means.items()},
            "bootstrap": bootstrap,
        }


def scored_data(data: DataConfig, n_clips: int) -> dict[str, Any]:
    """What a test score was measured on; every score travels with it."""
    out = {
        "dataset": data.name,
        "root": data.root,
        "test_file": data.test_file,
        "split": "test",
        "image_size": list(data.image_size) if isinstance(data.image_size, tuple) else data.image_size,
        "channels": data.channels,
        "n_context": data.n_context,
        "n_future": data.test_length - data.n_context,
        "n_clips": n_clips,
        "seed": data.seed,
    }
    if data.is_array:  # the file, the variables and the scale
        out.update(path=data.path, variables=data.variables, normalize=data.normalize, nan=data.nan)
    return out


def describe_data(d: dict[str, Any]) -> str:
    """``scored_data`` in one line: ``moving_mnist test split, 6 clips of 32x32x1, 4 -> 3 frames``."""
    where = "".join(f", {k} {d[k]}" for k in ("root", "test_file", "path") if d.get(k))
    return (
        f"{d['dataset']} {d['split']} split, {d['n_clips']} clips of {show_size(d['image_size'])}x"
        f"{d['channels']}, {d['n_context']} -> {d['n_future']} frames{where}"
    )
