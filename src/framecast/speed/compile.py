"""The Forecaster's ``compile=True``: ``torch.compile`` of the model's recurrent ``step`` (models
without one: their forward pass), with a fallback to eager that says why in one line.

Inductor (with its C++ wrapper where it builds; needs a C++ compiler) fuses each step's gate
arithmetic into a few kernels. Gain and cost, measured (``benchmarks/batch1.py``,
``benchmarks/results/batch1-forecast-official-predrnn-pt2.14-cpu-xeon-amx.json``, the AMX Xeon):
the official PredRNN's clip at batch 1, bf16 with packed weights, 0.128 -> 0.090 s (1.4x) after
22 s of compiling; it pays for long streams or many clips, not for one. Training does not compile:
``benchmarks/results/compile-train-quick-fp32-pt2.14-cpu-xeon-amx.json`` (ConvLSTM, cpu size,
batch 8) found the compiled step 1.01x eager after 32 s of compiling, the compiled training step
0.2x. So it is off by default (``Forecaster(compile=False)``), a public API with no private
interface but dynamo's config (``torch._dynamo.config``, read with ``hasattr`` guards).

Built when the Forecaster is, on warm-up forecasts of zeros that take every path ``predict`` and
``push`` take. Where compiling fails (now, or later for a new frame size) the Forecaster says why
in one line and runs eagerly (``compiled`` then False). Forecasts differ from eager ones by
rounding (fused arithmetic). A new input shape recompiles (seconds); past torch's recompile limit
(8 graphs per model class, the warm-up excepted) dynamo runs that shape eagerly.
"""

import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from framecast.errors import FramecastError
from framecast.layers import as_hw


def compile_forecaster(forecaster: Any, caller: nn.Module, log: Callable[[str], None] | None) -> bool:
    """Compile a copy's ``step`` (or ``forward``) of ``forecaster.model`` and build it on warm-up
    forecasts of zeros through ``predict`` and ``push``; eager again, with one line saying why,
    where that fails. Sets ``compile_seconds`` and ``compile_options``; whether it compiled.
    ``caller``: the caller's model, never touched."""
    f = forecaster
    if f.model is caller:  # never touch the caller's model
        f.model = copy.deepcopy(caller)
    name = "step" if callable(getattr(f.model, "step", None)) else "forward"
    # eager first: a model that fails fails here, as itself; packed convolutions fit their
    # weights to these shapes (what the compiled graphs will trace)
    warm_up(f)
    eager, why = getattr(f.model, name), ""
    t0 = time.perf_counter()
    # inductor's C++ wrapper calls the kernels with less overhead (the official PredRNN's clip
    # ~8% faster here, compiling ~6 s longer); where it cannot be built, its Python one
    for options in ({"cpp_wrapper": True}, {}):
        try:
            compiled = torch.compile(eager, options=options)
            setattr(f.model, name, compiled)
            with _recompile_limit_fails():  # a graph dynamo gives up on is a failure, not silent eager
                warm_up(f)
        except Exception as e:  # no C++ compiler, an op inductor does not take, ...
            vars(f.model).pop(name, None)  # the class's own method again
            why = reason(e)
            continue
        f.compile_seconds = time.perf_counter() - t0
        f.compile_options = options
        setattr(f.model, name, _guarded(f, compiled, eager, name, log))
        if log:
            wrapper = "C++" if options.get("cpp_wrapper") else "Python"
            log(
                f"compile: the model's {name} compiled (torch.compile, inductor, {wrapper} wrapper) "
                f"in {f.compile_seconds:.1f} s"
            )
        return True
    if log:
        log(f"compile: torch.compile of the model's {name} failed, forecasting eagerly ({why})")
    return False


def warm_up(f: Any) -> None:
    """Forecasts of zeros through ``predict`` and ``push`` (n_context frames, the last with
    its forecast), as a user's calls make them; then a fresh stream."""
    h, w = as_hw(f.size or 64)
    zeros = np.zeros((f.n_context, f.channels, h, w), np.float32)  # (T, C, H, W): any C
    f.predict(zeros)
    for frame in zeros:
        f.push(frame)
    f.reset()


def _guarded(f: Any, compiled, eager, name: str, log):
    """``compiled``; where a call of it fails (a recompilation, e.g. for a new frame size,
    that inductor cannot build) and the eager step does not, eager from then on, said in one
    line. An error eager raises too is the caller's: raised, compiling kept."""
    failed = False

    def call(*args, **kwargs):
        nonlocal failed
        if failed:  # a rollout that took this wrapper before it failed keeps calling it
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except FramecastError:
            raise
        except Exception as e:
            out = eager(*args, **kwargs)  # raises the caller's own error, if that is what it was
            failed = True
            vars(f.model).pop(name, None)
            f.compiled = False
            if log:
                log(f"compile: recompiling the model's {name} failed, forecasting eagerly ({reason(e)})")
            return out

    return call


def _recompile_limit_fails():
    """Within: room for this Forecaster's graphs (dynamo keeps the graphs of every instance of a
    model class under one function, 8 by default), and dynamo raises where it would still give
    up compiling and run eagerly without a word."""
    import torch._dynamo.config as dynamo_config

    wanted = {
        "fail_on_recompile_limit_hit": True,
        "recompile_limit": max(64, getattr(dynamo_config, "recompile_limit", 8)),
    }
    settings = {k: v for k, v in wanted.items() if hasattr(dynamo_config, k)}
    return dynamo_config.patch(**settings) if settings else contextlib.nullcontext()


def reason(e: BaseException) -> str:
    """The cause of a compile failure in one line (dynamo wraps inductor's in BackendCompilerFailed)."""
    inner = getattr(e, "inner_exception", None)
    inner = e if inner is None else inner
    first = (str(inner).splitlines() or [""])[0]
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__
