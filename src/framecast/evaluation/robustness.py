"""Imperfect context: the robustness test of PredBench (Wang et al. 2024,
https://arxiv.org/abs/2407.08418), which scores a model on clips whose context frames were
dropped, duplicated or noised, against the same clips clean.

Each corruption touches the context frames only (the future a model is scored on stays the
truth), at a given ``rate`` and ``seed``: the same seed corrupts the same clips the same way,
whatever the batch size, so every figure is reproducible from its seed.

- ``drop``: each context frame after the first is lost with probability ``rate`` and the frame
  before it is shown again in its place (a camera or a link that drops frames);
- ``duplicate``: going back from the last context frame, each frame is shown twice with
  probability ``rate``; the newest frame stays last (aligned with the future), the history
  before it is stretched (a stuttering stream);
- ``noise``: Gaussian noise of standard deviation ``rate`` on every context frame, in the data's
  units (images: the [0, 1] scale, clipped back to it; arrays: normalised values).
"""

from typing import Any

import torch
from torch import Tensor

from framecast.errors import ConfigError
from framecast.evaluation import uncertainty as U

KINDS = ("drop", "duplicate", "noise")


def check_corruption(kind: str, rate: float) -> None:
    """Refuse, in one line, a corruption that is not one of ``KINDS`` or a rate it cannot take."""
    if kind not in KINDS:
        raise ConfigError(f"robustness: unknown corruption '{kind}'; choose from {', '.join(KINDS)}")
    if kind != "noise" and not 0.0 <= rate <= 1.0:
        raise ConfigError(f"robustness: a {kind} rate is a probability in [0, 1], got {rate:g}")
    if kind == "noise" and rate < 0:
        raise ConfigError(f"robustness: the noise's standard deviation must not be negative, got {rate:g}")


def parse_corruptions(items: list[str] | tuple[str, ...]) -> list[tuple[str, float]]:
    """``["drop:0.2", "noise:0.05"]`` -> ``[("drop", 0.2), ("noise", 0.05)]``, one clear line on a bad item."""
    out = []
    for item in items:
        kind, _, rate = str(item).partition(":")
        try:
            value = float(rate)
        except ValueError:
            raise ConfigError(
                f"robustness: '{item}' is not KIND:RATE with KIND one of {', '.join(KINDS)} (e.g. drop:0.2, noise:0.05)"
            ) from None
        check_corruption(kind, value)
        out.append((kind, value))
    return out


def corrupt_context(
    clips: Tensor,
    n_context: int,
    kind: str,
    rate: float,
    seed: int,
    first_index: int = 0,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    stride: int = 1,
) -> Tensor:
    """``clips`` (B, T, C, H, W) with their first ``n_context`` frames corrupted by ``kind``.

    ``first_index``: the index of ``clips[0]`` in the test split, ``stride``: how far apart the
    batch's clips lie in it (a process of ``world`` scores every ``world``-th clip); clip ``i``
    draws from a generator seeded with ``(seed, first_index + i * stride)``, so results depend
    neither on batching nor on the number of processes.
    ``value_range``: where noised frames are clipped to (None: not clipped, for arrays).
    """
    check_corruption(kind, rate)
    out = clips.clone()
    for i in range(clips.shape[0]):
        g = torch.Generator().manual_seed(seed * 1_000_003 + first_index + i * stride)
        ctx = clips[i, :n_context]  # (n_context, C, H, W)
        if kind == "noise":
            noisy = ctx + rate * torch.randn(ctx.shape, generator=g).to(ctx)
            out[i, :n_context] = noisy if value_range is None else noisy.clamp(*value_range)
        else:
            out[i, :n_context] = ctx[_frame_order(n_context, kind, rate, g)]
    return out


def _frame_order(n: int, kind: str, rate: float, g: torch.Generator) -> Tensor:
    """The context frame each of the ``n`` positions shows, (n,) indices into the clean context."""
    hit = torch.rand(n, generator=g) < rate
    if kind == "drop":
        order = torch.arange(n)
        for t in range(1, n):
            if hit[t]:
                order[t] = order[t - 1]  # lost: the last frame received is shown again
        return order
    shown: list[int] = []  # duplicate: newest first, each frame once or twice, until n are shown
    t = n - 1
    while len(shown) < n:
        shown.append(t)
        if hit[t] and len(shown) < n:
            shown.append(t)
        t = max(t - 1, 0)
    return torch.tensor(shown[::-1])


def against_clean(corrupted: dict[str, Any], clean: dict[str, Any], metric: str = "mse") -> dict[str, Any] | None:
    """The change a corruption made to ``metric``, tested on the same clips: ``change`` (relative
    to clean) and the paired bootstrap of corrupted minus clean (``uncertainty.paired_test``,
    with the settings the clean test recorded). None without per-clip scores of ``metric``."""
    a, b = (r.get("per_clip", {}).get(metric) for r in (corrupted, clean))
    if not a or not b or len(a) != len(b):
        return None
    test = U.paired_test(a, b, **U.params(clean.get("bootstrap")))
    base = clean["mean"][metric]
    return {"metric": metric, "change": (corrupted["mean"][metric] - base) / base if base else None, **test}


def describe_change(t: dict[str, Any] | None) -> str:
    """``+12.3% (holds)``: a corruption's change and whether its paired test separates it from 0."""
    if t is None or t["change"] is None:
        return "–"
    return f"{100 * t['change']:+.1f}% ({'holds' if t['separable'] else U.NOT_SEPARABLE})"
