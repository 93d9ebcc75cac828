"""Fit a run: builds the Trainer, the data module and the task from a ``RunConfig``, resumes
from the run folder's last checkpoint, and trains. Used by the CLI and by ``compare``; testing a
model goes through ``framecast.training.testing``, which builds its Trainer here too.
"""

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar

from framecast import speed
from framecast.changes import config_changes
from framecast.checkpoint import Resume, SafeCheckpointIO, resume_checkpoint
from framecast.config import RunConfig, save_yaml
from framecast.data import FrameDataModule
from framecast.errors import FramecastError, warn
from framecast.io import atomic_write_text, run_folder_lock
from framecast.lightning_compat import batches_done, quiet_lightning
from framecast.resolve import ResolvedRun, resolve_run
from framecast.speed import AUTO, resolve_precision, static_precision
from framecast.training.checks import check_array_model
from framecast.training.progress import PlainProgress, draws_on_a_terminal
from framecast.training.run_logs import run_loggers
from framecast.training.task import FrameTask, is_trainable

# Lightning's advice about worker counts and logging intervals is noise on tiny CPU runs. (Its
# info chatter, devices and install tips, is a log, not a warning: make_trainer quiets it.)
for pattern in (
    ".*does not have many workers.*",
    ".*log_every_n_steps.*",
    ".*LeafSpec.*",
    ".*tensorboardX.*",
    ".*manual optimization and every_n_train_steps.*",
    ".*litmodels.*",
    ".*Checkpoint directory .* exists and is not empty.*",  # a resumed run writes into its own folder
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


def make_task(run: ResolvedRun | RunConfig) -> FrameTask:
    """The task of ``run`` (channels-last if ``trainer.channels_last`` is true; ``auto`` is
    resolved by ``resolve_trainer``, which fit and test_model call next)."""
    run = resolve_run(run)
    cfg = run.config
    task = FrameTask(run.model_name, run.model, cfg.data.n_context, cfg.data.n_future, cfg.train)
    if cfg.trainer.channels_last is True:
        task.model.to(memory_format=torch.channels_last)
    task.arena = speed.activation_arena(cfg.trainer)  # None: off, or not on a CPU
    return task


def _log_rank_zero(msg: str) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(f"framecast: {msg}", file=sys.stderr)


def resolve_trainer(
    run: ResolvedRun, model: torch.nn.Module, kind: str = "train", stored: dict[str, Any] | None = None, log=None
) -> ResolvedRun:
    """Resolve ``trainer.precision`` / ``trainer.channels_last`` ``auto`` for ``model`` on this
    machine (``framecast.speed``: measured on a CPU, once per machine and model shape), put
    ``model`` in the chosen layout, and return ``run`` with the concrete values and the choice.

    ``kind``: ``train`` times a training step, ``infer`` a forward pass (testing). ``stored``:
    the trainer section of the checkpoint being resumed; ``auto`` then keeps its values, so a
    resumed run keeps its arithmetic and ``check_resume`` sees no change.
    """
    t, d = run.config.trainer, run.config.data
    choice = resolve_precision(
        model,
        t.precision,
        t.channels_last,
        accelerator=t.accelerator,
        kind=kind,
        batch=d.batch_size,
        n_context=d.n_context,
        n_future=d.n_future if kind == "train" else d.test_length - d.n_context,
        image_size=d.image_size,
        num_nodes=t.num_nodes,
        stored=stored,
        log=log or _log_rank_zero,
    )
    model.to(memory_format=torch.channels_last if choice.channels_last else torch.contiguous_format)
    return run.with_choice(choice)


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
    cfg: RunConfig,
    callbacks: list[Callback] | None = None,
    logger: bool = True,
    checkpointing: bool = True,
    resume_step: int | None = None,
) -> L.Trainer:
    """The Lightning Trainer of ``cfg``; ``resume_step``: the global step of the checkpoint a
    fit resumes from, so that the run's metric logs keep what came before it (run_logs.py)."""
    t = cfg.trainer
    out = Path(cfg.out_dir)
    loggers = run_loggers(out, resume_step) if logger else False
    quiet_lightning()  # no "GPU available", limit_* notes or install tips: progress and results only
    callbacks = list(callbacks or [])
    if t.enable_progress_bar and not draws_on_a_terminal() and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(PlainProgress())  # a log file gets plain lines, not thousands of bar redraws
    return L.Trainer(
        default_root_dir=out,
        plugins=[SafeCheckpointIO()],
        # The data module shards every split itself (FreshSampler / ShardSampler): the training
        # stream stays resumable and a run on N processes reads a one-process run's clips.
        use_distributed_sampler=False,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        max_time={"minutes": t.max_time_minutes} if t.max_time_minutes else None,
        precision=static_precision(t.precision, t.accelerator),  # auto: resolve_trainer measures first
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
        callbacks=callbacks,
        logger=loggers,
    )


class ConfigChanged(FramecastError):
    """A run would resume from a checkpoint trained with another config; ``changes`` names the
    keys, ``"key: old -> new"``."""

    def __init__(self, message: str, changes: list[str]) -> None:
        super().__init__(message)
        self.changes = changes


def check_resume(found: Resume, resolved: dict[str, Any], processes: int, log=warn) -> None:
    """Refuse (``ConfigChanged``) to resume from the checkpoint ``found`` with the resolved run
    config ``resolved`` when it differs from the one stored in the checkpoint in a key that
    matters (``changes.RESUME_SAFE_KEYS`` lists those that do not). A checkpoint that stores no
    config (written before framecast stored it) resumes with a warning through ``log``."""
    ckpt, meta = found.path, found.meta
    stored = meta.get("run_config")
    if not isinstance(stored, dict):
        log(f"{ckpt} does not store the config it was trained with (an older checkpoint); resuming unchecked")
        return
    changes = config_changes(stored, resolved, (int(meta.get("processes", 1)), processes))
    if changes:
        raise ConfigChanged(
            f"{ckpt} was trained with another config ({'; '.join(changes)}); to resume, run it with the config "
            f"it was trained with ({ckpt.parent.parent / 'config.yaml'}); to start over, pick a new --out_dir "
            f"or pass --no-resume (overwrites this run)",
            changes,
        )


def fit(cfg: RunConfig | ResolvedRun, resume: bool = True, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train ``cfg``'s model; returns paths and training statistics.

    ``cfg`` is resolved here once (``framecast.resolve``) unless it comes resolved.

    The run folder ``cfg.out_dir`` receives ``config.yaml`` (the resolved config),
    ``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt``, and TensorBoard logs in ``tb/``.
    With ``resume`` and a ``last.ckpt`` present, training continues from it, if it was trained
    with the same config (every checkpoint stores it; ``check_resume`` says what may differ).
    The run folder is this process's while it trains (``framecast.io.run_folder_lock``): another
    fit or compare on it refuses, naming this one.
    """
    run = resolve_run(cfg)
    cfg = run.config
    out = Path(cfg.out_dir)
    if not is_trainable(cfg.model_name):
        raise FramecastError(f"model '{cfg.model_name}' has no parameters to train; use `framecast test` on it")
    speed.tune_malloc(cfg.trainer)  # trainer.malloc: fixed: a step's peak memory stays its own (speed/malloc.py)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    task = make_task(run)
    data = FrameDataModule(cfg.data)
    data.setup()  # fail on bad data before the run folder is touched
    if cfg.data.is_array:  # physical values: no [0, 1] check, masked NaNs, metrics in physical units
        check_array_model(task.model, cfg.data)
        task.use_array_data(data.array_meta)
    with run_folder_lock(out):  # a second fit or compare on this folder refuses, naming this process
        return _train(run, task, data, resume, callbacks)


def _train(
    run: ResolvedRun, task: FrameTask, data: FrameDataModule, resume: bool, callbacks: list[Callback] | None
) -> dict[str, Any]:
    """``fit``'s training, in its run folder ``out_dir`` (held by ``fit``)."""
    cfg = run.config
    out = Path(cfg.out_dir)
    # Resuming reads our own run folder, but still as untrusted data: tensors and plain containers
    # only; a truncated last.ckpt falls back to the one before it (last.prev.ckpt).
    ckpt_dir = out / "checkpoints"
    ckpt_path = ckpt_dir / "last.ckpt"
    found = resume_checkpoint(ckpt_path, warn=warn) if resume else None
    # precision / channels_last auto -> concrete values (measured, cached, or the resumed
    # checkpoint's); the resolved config, config.yaml and every checkpoint store those
    stored = found.trainer if found is not None and AUTO in (cfg.trainer.precision, cfg.trainer.channels_last) else None
    run = resolve_trainer(run, task.model, "train", stored)
    cfg, choice = run.config, run.choice
    resolved = run.as_dict()  # what config.yaml holds (--print-config prints the same)
    task.run_config = resolved  # every checkpoint stores it: its data, and what a resume must match
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
    start = found.path if found is not None else None
    trainer = make_trainer(
        cfg, callbacks=[best, last, clock, *(callbacks or [])], resume_step=found.step if found is not None else None
    )
    if found is not None:  # before config.yaml is rewritten: it must keep describing the checkpoint
        check_resume(found, resolved, trainer.world_size, warn if trainer.is_global_zero else lambda _: None)
    if trainer.is_global_zero:
        save_yaml(resolved, out / "config.yaml")
    trainer.fit(task, datamodule=data, ckpt_path=str(start) if start else None, weights_only=True)
    trainer.save_checkpoint(ckpt_path, weights_only=False)
    stats = {
        "train_seconds": clock.seconds,
        # fractional: a time budget usually stops inside an epoch
        "epochs": round(batches_done(trainer) / max(1, trainer.num_training_batches), 4),
        "steps": trainer.global_step,
        "loss_curve": clock.curve,
        "best_checkpoint": str(Path(best.best_model_path)) if best.best_model_path else str(ckpt_path),
        "last_checkpoint": str(ckpt_path),
        "val_mse": float(best.best_model_score) if best.best_model_score is not None else None,
        "precision": choice.record(),  # what ran, why, and the machine it ran on
    }
    if trainer.is_global_zero:
        atomic_write_text(out / "train_stats.json", json.dumps(stats, indent=2))
    return stats
