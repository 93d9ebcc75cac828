"""The one LightningModule: loss, optimiser, sampling policy and logging for every model.

Models are pure ``nn.Module`` s (models/); everything about *how* they are trained lives here
and in schedules.py, and reaches the model as arguments (the true future frames and a
teacher-forcing mask).
"""

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.callbacks import Timer
from torch import Tensor

from framecast import speed
from framecast.config import TrainConfig, build_dataclass, to_dict
from framecast.errors import FramecastError
from framecast.evaluation.robustness import corrupt_context
from framecast.evaluation.scores import ArrayMetrics, FrameMetrics
from framecast.registry import create_model, get_entry
from framecast.training.schedules import (
    onecycle_lr,
    reverse_sampling_probs,
    sampling_mask,
    scheduled_sampling_eta,
    teacher_forcing_mask,
    teacher_forcing_ratio,
)

CHECKPOINT_FORMAT = 1


class FrameTask(L.LightningModule):
    """Trains and tests any registered model.

    Args:
        model_name: registry name.
        model_config: the model's full config as a plain dict.
        n_context: context frames per clip.
        n_future: frames predicted after the context.
        train: the training policy (a ``TrainConfig``; a plain dict of one is validated).
    """

    def __init__(
        self,
        model_name: str,
        model_config: dict[str, Any],
        n_context: int,
        n_future: int,
        train: TrainConfig | dict[str, Any],
        lpips=None,
        fvd=None,
    ) -> None:
        super().__init__()
        if not isinstance(train, TrainConfig):
            train = build_dataclass(TrainConfig, train, prefix="train.")
        self.save_hyperparameters(
            {
                "model_name": model_name,
                "model_config": model_config,
                "n_context": n_context,
                "n_future": n_future,
                "train": to_dict(train),
            }
        )
        self.model = create_model(model_name, **model_config)
        self.cfg: TrainConfig = train
        self.n_context, self.n_future = n_context, n_future
        self.automatic_optimization = False  # one place for the whole step policy, incl. reverse_input
        self.skipped_steps = 0  # non-finite losses skipped (train.on_nonfinite: skip)
        self.clipped_share: Tensor | None = None  # train.clip_loss: share of predictions outside [0, 1]
        self._warned_clipped = False
        self.test_metrics = FrameMetrics(n_future, lpips, keep_clips=True, fvd=fvd)
        self.val_metrics = FrameMetrics(n_future)
        self.test_results: dict[str, Tensor] | None = None
        # (kind, rate, seed): test clips' context corrupted before prediction (robustness tests)
        self.corruption: tuple[str, float, int] | None = None
        self._test_seen = 0  # test clips seen: each clip's corruption is seeded by its index
        self.test_per_clip: dict[str, Tensor] | None = None
        self.test_fvd_features: tuple[Tensor, Tensor] | None = None
        # The resolved run config (model, data, train, trainer) that runner.fit trains with;
        # stored in every checkpoint, so a checkpoint knows its data and resuming can check it.
        self.run_config: dict[str, Any] | None = None
        # The range every clip must lie in: a property of the data (images: [0, 1]); gridded
        # arrays are normalised physical values and set None (use_array_data).
        self.value_range: tuple[float, float] | None = (0.0, 1.0)
        self.array_meta: dict[str, Any] | None = None
        # trainer.activation_arena: the tensors a training forward pass saves for the backward
        # pass go into large blocks (framecast.speed's arena); set by runner.make_task.
        self.arena: speed.ActivationArena | None = None

    def use_array_data(self, meta: dict[str, Any] | None) -> None:
        """Train and score on gridded arrays (``ArrayWindows.meta``: channels, normalisation,
        NaN policy, latitude weights): no [0, 1] check, NaNs masked with ``nan: mask``, metrics
        in physical units; the checkpoint stores ``meta`` so testing and forecasting undo the
        training data's normalisation."""
        if meta is None:
            return
        self.array_meta, self.value_range = dict(meta), None
        self.test_metrics = ArrayMetrics(self.n_future, meta, keep_clips=True)
        self.val_metrics = ArrayMetrics(self.n_future, meta)

    def _prepare(self, batch: Tensor) -> tuple[Tensor, Tensor | None]:
        """The batch with masked NaNs filled by 0 (the normalised mean, for standard
        normalisation) and the mask of valid values (None: all valid)."""
        if self.array_meta is None or self.array_meta.get("nan") != "mask":
            return batch, None
        valid = ~torch.isnan(batch)
        return (batch, None) if bool(valid.all()) else (batch.nan_to_num(0.0), valid)

    # ------------------------------------------------------------------ policy

    def teacher_mask(self, batch_size: int, itr: int) -> Tensor | None:
        """The (B, T-2) mask of scheduled sampling at iteration ``itr``, or None."""
        if not self.model.uses_mask or self.cfg.sampling == "none":
            return None
        c = self.cfg
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        # Seeded by the step, so a resumed run draws the same masks as an uninterrupted one. Under
        # DDP every rank draws the global batch's mask and keeps its clips' rows (rank r holds
        # clips r, r + world, ... of the global batch), as a one-process run would draw it.
        gen = torch.Generator().manual_seed(c.seed * 1_000_003 + itr)
        if c.sampling == "teacher_forcing":
            epoch = self.trainer.current_epoch if self._trainer is not None else 0
            ratio = teacher_forcing_ratio(epoch, c.teacher_forcing_decay)
            mask = teacher_forcing_mask(batch_size * world, self.n_context, self.n_future, ratio, gen, self.device)
            return mask[rank::world]
        if c.sampling == "scheduled":
            enc, dec = (
                1.0,
                scheduled_sampling_eta(itr, c.sampling_start, c.sampling_changing_rate, c.sampling_stop_iter),
            )
        else:
            enc, dec = reverse_sampling_probs(itr, c.r_sampling_step_1, c.r_sampling_step_2, c.r_exp_alpha)
        mask = sampling_mask(batch_size * world, self.n_context, self.n_future, enc, dec, gen, self.device)
        return mask[rank::world]

    def loss(self, clip: Tensor, mask: Tensor | None, valid: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Frame MSE (+ optional L1 and BCE) over every frame the model predicts, plus the model's own
        terms; ``valid`` (the clip's shape, bool): only those values count (masked NaNs)."""
        context, future = clip[:, : self.n_context], clip[:, self.n_context :]
        with speed.saving(self.arena, clip.device):  # the arena keeps CPU tensors; elsewhere nothing
            out = self.model(context, self.n_future, future=future, mask=mask)
        target = clip[:, -out.frames.shape[1] :]
        pred = out.frames.float()
        if self.cfg.clip_loss:
            self.clipped_share = ((pred < 0) | (pred > 1)).float().mean().detach()
            pred = pred.clamp(0, 1)
        if valid is not None:
            keep = valid[:, -out.frames.shape[1] :].float()
            count = keep.sum().clamp_min(1)
            err = (pred - target.float()) * keep
            terms = {"mse": err.pow(2).sum() / count, **out.losses}
            if self.cfg.l1_weight:
                terms["l1"] = self.cfg.l1_weight * err.abs().sum() / count
            return sum(terms.values()), terms
        terms = {"mse": F.mse_loss(pred, target.float()), **out.losses}
        if self.cfg.l1_weight:
            terms["l1"] = self.cfg.l1_weight * F.l1_loss(pred, target.float())
        if self.cfg.bce_weight:
            terms["bce"] = self.cfg.bce_weight * binary_cross_entropy(pred, target.float())
        return sum(terms.values()), terms

    def _warn_if_clipped_out(self, threshold: float = 0.999) -> str | None:
        """Warns once when (nearly) every prediction lies outside [0, 1] under ``train.clip_loss``:
        clamped values get no gradient, so an unbounded output that has gone below 0 everywhere
        stops learning (SimVP and MAU stayed at exactly the blank-frame score this way)."""
        share = float(self.clipped_share)
        if self._warned_clipped or share < threshold:
            return None
        self._warned_clipped = True
        msg = (
            f"framecast: warning: {100 * share:.1f}% of the predicted values lie outside [0, 1] at step "
            f"{self.global_step}; with train.clip_loss: true they get no gradient and training stalls. "
            f"Set train.clip_loss: false for a model whose output is not bounded."
        )
        (self.print if self._trainer is not None else print)(msg)
        return msg

    def _nonfinite(self, loss: Tensor) -> bool:
        """Whether the loss is NaN/Inf on any process (every rank must take the same branch)."""
        bad = not bool(torch.isfinite(loss.detach()))
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        return bad

    @property
    def iteration(self) -> int:
        """The official code's 1-based iteration: batches trained so far + 1. Lightning's
        ``global_step`` counts optimiser steps, two per batch with ``reverse_input``."""
        return self.global_step // (2 if self.cfg.reverse_input else 1) + 1

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        self._check_batch(batch)
        batch, valid = self._prepare(batch)
        opt = self.optimizers()
        itr = self.iteration
        if self.cfg.lr_schedule == "onecycle":
            for group in opt.param_groups:
                group["lr"] = onecycle_lr(self.budget_progress(), self.cfg.lr, self.cfg.onecycle_pct_start)
        mask = self.teacher_mask(batch.shape[0], itr)
        clips = [batch, batch.flip(1)] if self.cfg.reverse_input else [batch]
        valids = [valid, None if valid is None else valid.flip(1)]
        for clip, ok in zip(clips, valids):
            # the last step's gradients go before the forward pass, not after: they are not
            # needed any more, and held through it they add a model's size to the step's peak
            opt.zero_grad(set_to_none=True)
            loss, terms = self.loss(clip, mask, ok)
            if self._nonfinite(loss):
                if self.cfg.on_nonfinite == "stop":
                    raise FramecastError(
                        f"loss is {loss.item()} at step {self.global_step}; lower train.lr, set "
                        f"train.grad_clip or train.on_nonfinite: skip (the last good checkpoint is kept)"
                    )
                self.skipped_steps += 1
                self.print(f"framecast: warning: non-finite loss at step {self.global_step}; step skipped")
                continue
            self.manual_backward(loss)
            if self.cfg.grad_clip:
                self.clip_gradients(opt, gradient_clip_val=self.cfg.grad_clip, gradient_clip_algorithm="norm")
            opt.step()
        self.log("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log(f"train/{name}", value)
        self.log("lr", opt.param_groups[0]["lr"])
        if self.cfg.clip_loss and self.clipped_share is not None:
            self.log("train/clipped_share", self.clipped_share)
            if self.global_step % 50 == 0:  # reading the value syncs a GPU: not every step
                self._warn_if_clipped_out()
        if mask is not None:
            self.log("train/true_frame_rate", mask[:, self.n_context - 1 :].mean())
        if self.cfg.image_every_n_steps and self.global_step % self.cfg.image_every_n_steps == 0:
            self._log_images(batch)
        return loss

    def _score(self, metrics: torchmetrics.Metric, batch: Tensor) -> None:
        self._check_batch(batch)
        batch, valid = self._prepare(batch)
        pred = self.model(batch[:, : self.n_context], self.n_future).future(self.n_future)
        metrics.update(pred, batch[:, self.n_context :], None if valid is None else valid[:, self.n_context :])

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._score(self.val_metrics, batch)

    def on_validation_epoch_end(self) -> None:
        res = self.val_metrics.compute()
        self.val_metrics.reset()
        for name in ("mse", "mae", "ssim", "psnr", "rmse", "wrmse", "mse_norm"):
            if name in res:
                self.log(f"val/{name}", res[name].mean().float(), prog_bar=name in ("mse", "ssim"), sync_dist=False)

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        if self.corruption is not None:  # robustness: the context as an imperfect source gives it
            kind, rate, seed = self.corruption
            value_range = self.value_range
            # rank r of w processes scores test clips r, r + w, ... (ShardSampler): index them as one process would
            world = self.trainer.world_size if self._trainer is not None else 1
            first = self.global_rank + self._test_seen * world
            batch = corrupt_context(batch, self.n_context, kind, rate, seed, first, value_range, stride=world)
            self._test_seen += batch.shape[0]
        self._score(self.test_metrics, batch)

    def on_test_epoch_end(self) -> None:
        self.test_results = {k: v.cpu() for k, v in self.test_metrics.compute().items()}
        self.test_per_clip = self.test_metrics.per_clip()  # name -> (N, n_future)
        self.test_fvd_features = getattr(self.test_metrics, "fvd_features", lambda: None)()  # (true, predicted)
        self.test_metrics.reset()
        for name, per_step in self.test_results.items():
            self.log(f"test/{name}", per_step.mean().float())

    # ------------------------------------------------------------------ optimiser

    def configure_optimizers(self):
        c = self.cfg
        return torch.optim.Adam(self.parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)

    def budget_progress(self) -> float:
        """How much of the training budget is spent, in [0, 1]: steps or wall-clock, whichever
        is further along (a time budget makes the schedule follow the clock)."""
        trainer = self.trainer
        progress = 0.0
        # One clock, batches: global_step and max_steps count optimiser steps (two per batch with
        # reverse_input), estimated_stepping_batches counts batches unless max_steps is smaller.
        per_batch = 2 if self.cfg.reverse_input else 1
        total = trainer.estimated_stepping_batches
        if trainer.max_steps != -1:
            total = min(total, (trainer.max_steps + per_batch - 1) // per_batch)
        if total and total != float("inf"):
            progress = (self.iteration - 1) / total
        # A time budget (trainer.max_time_minutes) is Lightning's Timer: its public time_remaining
        # is None without one, and elapsed + remaining is the budget (a resume counts time before it).
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        remaining = timer.time_remaining("train") if timer is not None else None
        if remaining is not None:
            elapsed = timer.time_elapsed("train")
            progress = max(progress, elapsed / max(elapsed + remaining, 1e-9))
        return progress

    # ------------------------------------------------------------------ checkpoints and logging

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        speed.release_idle(self.arena)  # between steps its blocks are idle: not held while the checkpoint is written
        checkpoint["framecast"] = {
            "format": CHECKPOINT_FORMAT,
            "model": self.hparams.model_name,
            "config": dict(self.hparams.model_config),
            "n_context": self.n_context,
            "n_future": self.n_future,
        }
        if self.array_meta is not None:  # the normalisation testing and forecasting undo
            checkpoint["framecast"]["array"] = self.array_meta
        if self.run_config is not None:
            checkpoint["framecast"]["run_config"] = self.run_config
            # data.batch_size is per process: the global batch needs the number of processes
            checkpoint["framecast"]["processes"] = self._trainer.world_size if self._trainer is not None else 1

    def on_train_end(self) -> None:
        speed.release_idle(self.arena)  # testing and validation after fit save nothing for a backward pass

    def _check_batch(self, batch: Tensor) -> None:
        want = self.n_context + self.n_future
        if batch.dim() != 5 or batch.shape[1] < want:
            raise FramecastError(f"batches must be (B, T, C, H, W) clips with T >= {want}, got {tuple(batch.shape)}")
        if self.value_range is None:  # arrays: the dataset refused NaNs unless they are masked
            return
        lo, hi = (float(v) for v in torch.aminmax(batch))
        if lo < self.value_range[0] or hi > self.value_range[1]:
            raise FramecastError(
                f"clip values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; divide uint8 frames by 255"
            )

    @torch.no_grad()
    def _log_images(self, batch: Tensor) -> None:
        writer = getattr(self.logger, "experiment", None)
        if writer is None or not hasattr(writer, "add_image"):
            return
        clip = self._prepare(batch[:1])[0]
        pred = self.model(clip[:, : self.n_context], self.n_future).future(self.n_future).float()
        if self.array_meta is not None:  # the first channel, its range mapped to [0, 1]
            lo, hi = clip[:, :, :1].amin(), clip[:, :, :1].amax()
            clip, pred = ((x[:, :, :1] - lo) / (hi - lo).clamp_min(1e-6) for x in (clip, pred))
        pred = pred.clamp(0, 1)
        writer.add_image(
            "train/context_truth_prediction_error", frame_grid(clip[0], pred[0], self.n_context), self.global_step
        )


def frame_grid(clip: Tensor, pred: Tensor, n_context: int) -> Tensor:
    """A (C, H', W') image: rows context, truth, prediction and |error| for one clip.

    Args:
        clip: (T, C, H, W) the true clip.
        pred: (n_future, C, H, W) predicted future frames.
        n_context: context frames in ``clip``.
    """
    from torchvision.utils import make_grid

    clip = clip.float().cpu()
    pred = pred.float().cpu()
    truth = clip[n_context : n_context + len(pred)]
    context = clip[:n_context]
    width = max(len(context), len(pred))

    def row(frames: Tensor) -> list[Tensor]:
        pad = [torch.zeros_like(clip[0])] * (width - len(frames))
        return list(frames) + pad

    rows = row(context) + row(truth) + row(pred) + row((pred - truth).abs())
    return make_grid(torch.stack(rows), nrow=width, padding=2, pad_value=0.5)


def is_trainable(model_name: str) -> bool:
    return get_entry(model_name).trainable


def binary_cross_entropy(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean per-pixel binary cross-entropy of predictions in [0, 1] (clamped to [eps, 1 - eps]);
    written out rather than ``F.binary_cross_entropy``, which autocast refuses."""
    p = pred.clamp(eps, 1 - eps)
    return -(target * p.log() + (1 - target) * (1 - p).log()).mean()
