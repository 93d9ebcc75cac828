"""The precision and layout probe's timing: seconds per step of a model in each (precision,
layout) candidate, within a budget that holds on any CPU.

Budget: ``PROBE_SECONDS`` (5 s) per model shape where a step at batch 1 fits its share of that
budget (the cpu sizes), ``LARGE_SECONDS`` (10 s) where it does not (the published sizes). The
probe never starts a call that its estimate says would end past the budget, and it stops timing
a candidate once it is clearly slower:

1. A screen: one forward pass at batch 1 per precision (a recurrent model: one frame step; a
   window model: its window), the first precision's twice (the second call, warm, sizes the
   batch). A precision whose first call took more than ``SCREEN_RATIO`` times the fastest one's
   is not timed further: at batch 1 bf16's per-call overheads make it look at most 2-4x slower
   than it is at the run's batch, so 5x is a real slowdown (bf16 on a CPU without native bf16
   costs ~25 fp32 steps). Its time is estimated from the screen.
2. The batch: the largest (up to the run's) whose step the screen says takes its share of the
   budget (a warm-up and three rounds of every candidate), counting a step at batch b as b
   batch-1 steps at ``BATCH_EFFICIENCY`` of their cost.
3. A warm-up call of each candidate (oneDNN builds its kernels on the first call), then up to
   ``MAX_ROUNDS`` interleaved timed rounds, each started only if ``NOISE_MARGIN`` (1.25) times
   its estimate ends within the budget; from the second round on, a candidate whose best time is more than ``DROP_RATIO``
   times the best so far is dropped (its best time is kept).

The fastest time of each candidate is returned; ``info["estimated"]`` names those whose time is
an estimate. The model itself is left untouched (the probe times copies) and so is the global
RNG. Before this budget the official PredRNN's probe took 30 s on an AVX2-only CPU, where one
bf16 step cost as much as 25 fp32 ones (and the probe's batch was sized from FLOPs alone).
"""

import copy
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FP32, BF16 = "32", "bf16-mixed"
PROBE_SECONDS = 5.0  # a model whose batch-1 step fits its share of this: the whole probe within it
LARGE_SECONDS = 10.0  # a model whose batch-1 step does not (the published sizes): within this
SCREEN_RATIO = 5.0  # a precision whose batch-1 forward is this much slower than the best: not timed
DROP_RATIO = 1.5  # after a timed round, a candidate this much slower than the best: timed no more
BATCH_EFFICIENCY = 0.5  # a step at batch b is taken to cost b batch-1 steps at this share of their cost
MAX_ROUNDS = 5
NOISE_MARGIN = 1.25  # a call is started only if this many times its estimate ends within the budget


def layout_name(channels_last: bool) -> str:
    return "channels-last" if channels_last else "contiguous"


def key(precision: str, channels_last: bool) -> str:
    return f"{precision}/{layout_name(channels_last)}"


def is_window_model(model: nn.Module) -> bool:
    """A model that reads a fixed window of ``n_context`` frames per pass (SimVP, TAU, MaxViT),
    not one frame per recurrent step."""
    return hasattr(getattr(model, "config", None), "n_context")


def probe_frames(model: nn.Module, n_context: int, n_future: int) -> tuple[int, int]:
    """A short clip with the per-frame work of the run's: recurrent models cost the same per
    frame at any length; a window model (fixed ``n_context``) predicts one chunk."""
    cfg = model.config
    if is_window_model(model):
        return n_context, min(n_future, getattr(cfg, "n_out", n_future))
    return min(n_context, 2), 1


def probe_steps(
    model: nn.Module,
    candidates: list[tuple[str, bool]],
    *,
    kind: str = "train",
    batch: int = 8,
    n_context: int = 2,
    n_future: int = 1,
    image_size: int | tuple[int, int] = 64,
    seconds: float | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Seconds per step of ``model`` in each (precision, channels_last) candidate, and how they
    were measured (batch, frames, rounds, budget, estimated); see the module docstring.
    ``seconds``: the budget (default: ``PROBE_SECONDS``, or ``LARGE_SECONDS`` for a large model)."""
    start, busy0 = time.perf_counter(), _cpu_busy()
    budget = seconds or PROBE_SECONDS
    window = is_window_model(model)
    shares = (2 if window else 4) * len(candidates)  # a window model affords a warm-up and one round

    def elapsed() -> float:
        return time.perf_counter() - start

    copies = {cl: _copy(model, cl) for cl in sorted({cl for _, cl in candidates})}
    precisions = list(dict.fromkeys(p for p, _ in candidates))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # 1. the screen, at batch 1: one frame step (a window model: its window)
        snc, snf = (n_context, n_future) if window else (1, 1)
        layout0 = candidates[0][1]
        first_call, unit = {}, 0.0
        for p in precisions:
            fn = _step(copies[layout0], p, "infer", 1, snc, snf, image_size)
            first_call[p] = _timed(fn)
            if p == precisions[0]:
                unit = _timed(fn)  # warm: what a batch-1 forward pass costs
        fastest = min(first_call.values())
        screened = [p for p in precisions if first_call[p] > SCREEN_RATIO * fastest]
        ratio = {p: first_call[p] / first_call[precisions[0]] for p in precisions}
        # 2. the batch: a step's share of the budget, from the screen's warm call
        frames = 1 if window else max(1, n_context + n_future - 1)
        per_sample = max(unit, 1e-9) * (3 if kind == "train" else 1) * frames  # backward ~ 2x forward
        if seconds is None and per_sample > PROBE_SECONDS / shares:  # a published size: the larger budget
            budget = LARGE_SECONDS
        per_step = budget / shares
        b = max(1, min(batch, int(per_step / (BATCH_EFFICIENCY * per_sample))))
        alive = [c for c in candidates if c[0] not in screened]
        steps = {c: _step(copies[c[1]], c[0], kind, b, n_context, n_future, image_size) for c in alive}
        # 3. a warm-up call of each candidate, then timed rounds
        warm: dict[tuple[str, bool], float] = {}
        for c in alive:
            guess = per_sample * b * BATCH_EFFICIENCY * ratio[c[0]]
            known = [t / ratio[d[0]] * ratio[c[0]] for d, t in warm.items()]
            if warm and elapsed() + NOISE_MARGIN * (min(known) if known else guess) > budget:
                continue  # no room: estimated below
            warm[c] = _timed(steps[c])
            if len(warm) == 1 and b > 1 and warm[c] > 2 * per_step:  # slower than the screen said
                b = max(1, int(b * per_step / warm[c]))
                steps = {d: _step(copies[d[1]], d[0], kind, b, n_context, n_future, image_size) for d in alive}
                warm[c] = _timed(steps[c])
        alive = [c for c in alive if c in warm]
        best: dict[tuple[str, bool], float] = {}
        rounds = 0
        while rounds < MAX_ROUNDS and alive:
            cost = sum(best.get(c, warm[c]) for c in alive)
            if elapsed() + NOISE_MARGIN * cost > budget:
                break
            for c in alive:
                best[c] = min(best.get(c, math.inf), _timed(steps[c]))
            rounds += 1
            if rounds >= 2:  # two rounds: one noisy step does not drop a candidate
                top = min(best[c] for c in alive)
                alive = [c for c in alive if best[c] <= DROP_RATIO * top]
    measured = {c: best.get(c, warm.get(c)) for c in candidates if c in best or c in warm}
    times, estimated = {key(*c): t for c, t in measured.items()}, []
    for c in candidates:
        if c not in measured:  # screened out, or no room: scaled from a measured candidate
            ref = min(measured.items(), key=lambda item: (item[0][1] != c[1], item[1]))
            times[key(*c)] = ref[1] / ratio[ref[0][0]] * ratio[c[0]]
            estimated.append(key(*c))
    info = {
        "batch": b,
        "frames": [n_context, n_future],
        "rounds": rounds,
        "kind": kind,
        "budget_seconds": budget,
        "screen": {p: round(r, 3) for p, r in ratio.items()},
    }
    if estimated:
        info["estimated"] = estimated
    others = _others_share(busy0, elapsed())
    if others is not None:
        # the share of the machine's CPU time that other processes took meanwhile: they skew every
        # figure, so such a probe is cached for a short while only
        info["others_cpu_share"] = round(others, 3)
    return times, info


def _cpu_busy() -> tuple[float, float] | None:
    """(seconds every CPU of the machine was busy, seconds this process ran) so far (Linux)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK"), time.process_time()


def _others_share(before: tuple[float, float] | None, wall: float) -> float | None:
    after = _cpu_busy()
    if before is None or after is None or wall <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / (wall * (os.cpu_count() or 1)))


def _copy(model: nn.Module, channels_last: bool) -> nn.Module:
    m = copy.deepcopy(model)
    m.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return m


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _step(model: nn.Module, precision: str, kind: str, b: int, nc: int, nf: int, size) -> Callable[[], None]:
    channels = getattr(model.config, "channels", 1)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))  # square or (H, W)
    clip = torch.rand(b, nc + nf, channels, h, w)
    ctx, fut = clip[:, :nc], clip[:, nc:]
    bf16 = precision == BF16

    if kind == "infer":
        model.eval()

        def infer() -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(ctx, nf)

        return infer

    model.train()
    mask = torch.ones(b, nc + nf - 2) if getattr(model, "uses_mask", False) else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-8)

    def train() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(ctx, nf, future=fut, mask=mask)
            loss = F.mse_loss(out.frames.float(), clip[:, -out.frames.shape[1] :])
            loss = loss + sum(out.losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return train
