"""What makes a CPU fast, behind one small interface that only training (``training/runner.py``,
``training/task.py``) and the ``Forecaster`` call. Models and layers never import it.

Each piece, its default, the one key that changes it, and what it measured (files under
``benchmarks/results/``; the AMX Xeon, 2 cores):

- precision and layout probe (``precision``, ``probe``): ``auto``, measured on a CPU and cached;
  off: an explicit ``trainer.precision`` and ``trainer.channels_last``. bf16-mixed ran 0.56-4x
  fp32 by CPU, so only a measurement can tell; it costs at most 5 s per model shape at the cpu
  sizes and 10 s at the published ones, once per machine.
- activation arena (``arena``; private torch calls): on where a first pass copies at least
  1 GiB (the official sizes), else it steps aside; off: ``trainer.activation_arena: false``.
  Official PredRNN peak 4.89 -> 2.95 GiB (-40%), the same losses, step time within noise
  (``memory-train-official-fp32-pt2.14-cpu-xeon-amx.json``).
- malloc tuning (``malloc``; glibc's ``mallopt``): off; on: ``trainer.malloc: fixed`` (or
  ``FRAMECAST_MALLOC=fixed``). Without the arena, official PredRNN peak 4.7 -> 3.2 GiB (-33%),
  but its steps 12-26% slower; the arena (on by default) takes more (2.95 GiB) without that cost
  (``study-malloc-fixed-mmap-threshold-pt2.14-cpu-xeon-amx/``).
- packed bf16 weights (``packed``; private oneDNN ops): ``auto``, only where the packed copy
  measures at least 1.2x as fast here (cached); off: ``Forecaster(pack_weights=False)``. Gate
  convolutions 1.75-2.6x at batch 1 (``batch1-forecast-official-predrnn-pt2.14-cpu-xeon-amx.json``).
- compile with its eager fallback (``compile``): off; on: ``Forecaster(compile=True)``. The
  official PredRNN's batch-1 clip 1.4x after 22 s of compiling (the same file).

Each module's docstring gives the figures (files under ``benchmarks/results/``). Where a piece
cannot work (a GPU, macOS, musl, ARM, no oneDNN bf16) it steps aside silently: the conditions
are ``support``'s functions, one per condition.
"""

import contextlib
import os
from typing import Any

import torch
from torch import nn

from framecast.speed import malloc, support
from framecast.speed.arena import ActivationArena, saving_if_worthwhile
from framecast.speed.compile import compile_forecaster
from framecast.speed.precision import AUTO, BF16, ENV_PIN, FP32, Choice, autocast, static_precision
from framecast.speed.precision import resolve as resolve_precision

__all__ = [
    "AUTO",
    "BF16",
    "FP32",
    "Choice",
    "activation_arena",
    "autocast",
    "compile_forecaster",
    "prepare_for_inference",
    "release_idle",
    "resolve_precision",
    "saving",
    "static_precision",
    "tune_malloc",
]


def tune_malloc(trainer: Any = None) -> str | None:
    """glibc's fixed mmap threshold where ``trainer.malloc: fixed`` (a ``TrainerConfig``) or
    ``FRAMECAST_MALLOC=fixed`` asks for it (``malloc``): what was done, or None (not asked for,
    not glibc, ARM)."""
    return malloc.fix_mmap_threshold(force=getattr(trainer, "malloc", "default") == "fixed")


def activation_arena(trainer: Any) -> ActivationArena | None:
    """The arena for training with ``trainer`` (a ``TrainerConfig``): None where
    ``trainer.activation_arena`` is false, the accelerator is not the CPU, or this torch lacks
    the private calls it needs."""
    if not getattr(trainer, "activation_arena", True):
        return None
    if not support.on_cpu(getattr(trainer, "accelerator", "auto")) or not support.has_arena_calls():
        return None
    return ActivationArena()


def saving(arena: ActivationArena | None, device: "torch.device | str" = "cpu") -> contextlib.AbstractContextManager:
    """The context of a training forward pass: the arena's hooks where it is worth them (a CPU
    tensor, gradients recorded, a first pass that copied enough); elsewhere nothing."""
    return saving_if_worthwhile(arena if support.on_cpu(device) else None)


def release_idle(arena: ActivationArena | None) -> None:
    """Give the arena's idle blocks back (between steps: before a checkpoint, after training)."""
    if arena is not None:
        arena.release_idle()


def prepare_for_inference(
    model: nn.Module,
    precision: str,
    device: "torch.device | str",
    *,
    pack: bool | str = AUTO,
    n_context: int = 10,
    n_future: int = 10,
    image_size: Any = 64,
) -> tuple[nn.Module, int]:
    """``model`` as the Forecaster should run it, and how many convolutions run on prepacked
    bf16 weights (``packed``): a packed copy where ``precision`` is bf16-mixed on a CPU with
    oneDNN bf16 and ``pack`` is True, or ``auto`` and the copy measured at least 1.2x as fast
    here (cached; with ``$FRAMECAST_PRECISION`` set, which means "no probe", nothing is measured
    and ``auto`` does not pack); ``model`` itself and 0 otherwise. The caller's model is never
    changed."""
    if pack not in (True, False, AUTO):
        raise ValueError(f"pack_weights must be true, false or auto, got {pack!r}")
    from framecast.speed import packed

    if pack is False or precision != BF16 or not support.on_cpu(device) or not packed.available():
        return model, 0
    if pack == AUTO and os.environ.get(ENV_PIN, "").strip():
        return model, 0
    twin, count = packed.pack_convolutions(model)
    if count and pack == AUTO and not packed.pays(model, twin, n_context, n_future, image_size)["pays"]:
        return model, 0
    return twin, count
