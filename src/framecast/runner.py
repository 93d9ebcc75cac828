"""Fit and test a run: builds the Trainer, the data module and the task from a ``RunConfig``.

Used by the CLI and by ``compare``: both go through these two functions.
"""

import json
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from framecast.checkpoint import SafeCheckpointIO, resume_checkpoint
from framecast.config import RunConfig, resolve_model_config, save_yaml, to_dict
from framecast.data import FrameDataModule
from framecast.errors import FramecastError, warn
from framecast.io import atomic_write_text
from framecast.task import FrameTask, is_trainable

# Lightning's advice about worker counts and logging intervals is noise on tiny CPU runs.
for pattern in (
    ".*does not have many workers.*",
    ".*log_every_n_steps.*",
    ".*LeafSpec.*",
    ".*tensorboardX.*",
    ".*manual optimization and every_n_train_steps.*",
    ".*litmodels.*",
):
    warnings.filterwarnings("ignore", message=pattern)


class TrainingClock(Callback):
    """Records wall-clock training time and the loss curve (seconds, step, loss), resumably."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.curve: list[tuple[float, int, float]] = []
        self._start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self.curve.append((round(self.seconds, 3), trainer.global_step, float(loss)))

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "curve": self.curve}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds = state["seconds"]
        self.curve = [tuple(x) for x in state["curve"]]


def make_task(cfg: RunConfig) -> FrameTask:
    model_cfg = resolve_model_config(cfg)
    task = FrameTask(cfg.model_name, model_cfg, cfg.data.n_context, cfg.data.n_future, to_dict(cfg.train))
    if cfg.trainer.channels_last:
        task.model.to(memory_format=torch.channels_last)
    return task


def _strategy(name: str) -> Any:
    """framecast's ``ddp``: Lightning's DDP strategy that tolerates parameters a step leaves
    unused (plain ``ddp`` stops with an error on them) and does not sync buffers in every
    forward pass, so ranks may score different numbers of test batches without waiting on each
    other (clips are sharded without padding: every clip is scored exactly once)."""
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True, forward_sync_buffers=False)
    return name


def make_trainer(
    cfg: RunConfig, callbacks: list[Callback] | None = None, logger: bool = True, checkpointing: bool = True
) -> L.Trainer:
    t = cfg.trainer
    out = Path(cfg.out_dir)
    loggers = (
        [TensorBoardLogger(out, name="tb", version=""), CSVLogger(out, name="csv", version="")] if logger else False
    )
    return L.Trainer(
        default_root_dir=out,
        plugins=[SafeCheckpointIO()],
        # The data module shards every split itself (FreshSampler / ShardSampler): the training
        # stream stays resumable and a run on N processes reads a one-process run's clips.
        use_distributed_sampler=False,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        max_time={"minutes": t.max_time_minutes} if t.max_time_minutes else None,
        precision=t.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(t.strategy),
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        val_check_interval=t.val_check_interval,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        enable_checkpointing=checkpointing,  # False: no default ModelCheckpoint (and no tip about it)
        callbacks=callbacks or [],
        logger=loggers,
    )


def fit(cfg: RunConfig, resume: bool = True, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train ``cfg``'s model; returns paths and training statistics.

    The run folder ``cfg.out_dir`` receives ``config.yaml`` (the resolved config),
    ``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt``, and TensorBoard logs in ``tb/``.
    With ``resume`` and a ``last.ckpt`` present, training continues from it.
    """
    out = Path(cfg.out_dir)
    if not is_trainable(cfg.model_name):
        raise FramecastError(f"model '{cfg.model_name}' has no parameters to train; use `framecast test` on it")
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    task = make_task(cfg)
    data = FrameDataModule(cfg.data)
    data.setup()  # fail on bad data before the run folder is touched
    resolved = to_dict(cfg)
    resolved["model"] = {"name": cfg.model_name, **task.hparams.model_config}
    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/mse",
        mode="min",
        save_last=False,
        save_top_k=1,
        enable_version_counter=False,  # a --no-resume run overwrites best.ckpt, never best-v1.ckpt
    )
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        every_n_train_steps=cfg.trainer.checkpoint_every_n_steps or cfg.trainer.log_every_n_steps * 5,
    )
    clock = TrainingClock()
    trainer = make_trainer(cfg, callbacks=[best, last, clock, *(callbacks or [])])
    if trainer.is_global_zero:
        save_yaml(resolved, out / "config.yaml")
    ckpt_path = ckpt_dir / "last.ckpt"
    # Resuming reads our own run folder, but still as untrusted data: tensors and plain containers
    # only; a truncated last.ckpt falls back to the one before it (last.prev.ckpt).
    start = resume_checkpoint(ckpt_path, warn=warn) if resume else None
    trainer.fit(task, datamodule=data, ckpt_path=str(start) if start else None, weights_only=True)
    trainer.save_checkpoint(ckpt_path, weights_only=False)
    stats = {
        "train_seconds": clock.seconds,
        # fractional: a time budget usually stops inside an epoch
        "epochs": round(
            trainer.fit_loop.epoch_loop.batch_progress.total.completed / max(1, trainer.num_training_batches), 4
        ),
        "steps": trainer.global_step,
        "loss_curve": clock.curve,
        "best_checkpoint": str(Path(best.best_model_path)) if best.best_model_path else str(ckpt_path),
        "last_checkpoint": str(ckpt_path),
        "val_mse": float(best.best_model_score) if best.best_model_score is not None else None,
    }
    if trainer.is_global_zero:
        atomic_write_text(out / "train_stats.json", json.dumps(stats, indent=2))
    return stats


def test_model(model: torch.nn.Module, cfg: RunConfig, lpips=None) -> dict[str, Any]:
    """Score ``model`` on the test set of ``cfg.data``; returns means and per-horizon lists.

    ``lpips``: an optional ``framecast.lpips_metric.LPIPS`` scorer adding the ``lpips`` metric.
    """
    channels = getattr(model.config, "channels", None)
    if channels is not None and channels != cfg.data.channels:
        raise FramecastError(
            f"the model reads {channels}-channel frames but data.channels is {cfg.data.channels}; "
            f"set --data.channels {channels}"
        )
    horizon = cfg.data.test_length - cfg.data.n_context
    task = FrameTask(model.model_name, to_dict(model.config), cfg.data.n_context, horizon, to_dict(cfg.train), lpips)
    task.model.load_state_dict(model.state_dict())
    if cfg.trainer.channels_last:
        task.model.to(memory_format=torch.channels_last)
    data = FrameDataModule(cfg.data)
    trainer = make_trainer(cfg, logger=False, checkpointing=False)
    trainer.test(task, datamodule=data, verbose=False)
    res = task.test_results
    return {
        "mean": {k: float(v.mean()) for k, v in res.items()},
        "per_horizon": {k: [float(x) for x in v] for k, v in res.items()},
        "n_clips": len(data.datasets["test"]),
    }
