"""Uncertainty of test scores: bootstrap confidence intervals over test clips and paired tests.

A test score is a mean over test clips, and another draw of clips would give another mean. The
percentile bootstrap (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13;
https://doi.org/10.1201/9780429246593) resamples the clips with replacement and reads the
interval off the resampled means. Two models scored on the same clips are compared by a paired
bootstrap of the mean of their per-clip differences (Koehn 2004, "Statistical Significance Tests
for Machine Translation Evaluation", https://aclanthology.org/W04-3250/): the clip-to-clip spread
that both models share cancels, so a difference can hold where the two intervals overlap.

Every resampling is seeded (``seed``) and vectorised: one (n_boot, n) array of indices drawn
once with ``numpy.random.default_rng``.

Test clips that share frames (windows of a series a step apart, as gridded arrays are cut) are
not independent: resampled one by one they give intervals too narrow. With ``block`` > 1 the
resampling is the block bootstrap (Kuensch 1989, "The Jackknife and the Bootstrap for General
Stationary Observations", https://doi.org/10.1214/aos/1176347265) in its circular form (Politis &
Romano 1992, "A Circular Block-Resampling Procedure for Stationary Data"), which weighs every
clip alike: runs of ``block`` consecutive clips, wrapping past the last clip to the first, are
drawn whole, so the dependence within a run is kept. ``block_length`` gives the number of clips
that share a frame, the block ``bootstrap_block: auto`` uses; a block is never more than a
quarter of the clips, so that resamples still differ.
"""

from typing import Any

import numpy as np

N_BOOT = 1000  # resamples
SEED = 0  # the seed every report records
LEVEL = 0.95
NOT_SEPARABLE = "not separable at this budget"

# metrics where a lower value is better; the others (ssim, psnr) are better higher
LOWER_IS_BETTER = ("mse", "mae", "mse_pixel", "mae_pixel", "rmse", "wrmse", "mse_norm", "lpips", "fvd")


def lower_is_better(metric: str) -> bool:
    """Whether a lower ``metric`` is better (``mse/t2m``: as ``mse``)."""
    return metric.split("/")[0] in LOWER_IS_BETTER


def _clean(x: Any) -> np.ndarray:
    """A 1-D float64 array without NaNs (a clip whose frames are all masked has no score)."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    return a[~np.isnan(a)]


def usable_block(block: int, n: int) -> int:
    """``block`` for ``n`` clips: at most a quarter of them (at least 1), so resamples differ."""
    return max(1, min(int(block), n // 4))


def _indices(n: int, n_boot: int, seed: int, block: int = 1) -> np.ndarray:
    """(n_boot, n) resampled clip indices: clips drawn one by one (``block`` 1, the plain
    bootstrap), or runs of ``block`` consecutive clips (``usable_block``) with uniform starts,
    wrapping around (the circular block bootstrap), cut to ``n``."""
    rng = np.random.default_rng(seed)
    block = usable_block(block, n)
    if block == 1:
        return rng.integers(0, n, size=(n_boot, n))
    starts = rng.integers(0, n, size=(n_boot, -(-n // block)))
    return ((starts[:, :, None] + np.arange(block)) % n).reshape(n_boot, -1)[:, :n]


def block_length(starts: list[tuple[Any, int]], length: int) -> int:
    """How many consecutive test clips ``(source, first frame)`` of ``length`` frames, in test
    order, share a frame: the block bootstrap's block for them (1: no two share one)."""
    gaps = [b[1] - a[1] for a, b in zip(starts, starts[1:]) if a[0] == b[0] and 0 < b[1] - a[1] < length]
    return -(-length // min(gaps)) if gaps else 1


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return float(lo), float(hi)


def bootstrap_ci(
    per_clip: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL, block: int = 1
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over clips.

    Args:
        per_clip: (n,) one score per test clip (NaNs are left out).
        n_boot: resamples; seed: their generator's seed; level: the coverage, e.g. 0.95;
        block: clips drawn together (the moving-block bootstrap; 1: the plain bootstrap).

    Returns:
        (lo, hi); (nan, nan) without clips; (x, x) with a single clip.
    """
    if block > 1:  # blocks of neighbours: resample positions, then leave NaN clips out of each mean
        x = np.asarray(per_clip, dtype=np.float64).reshape(-1)
        if np.isnan(x).all():
            return float("nan"), float("nan")
        return _percentiles(_nanmean_rows(x[_indices(len(x), n_boot, seed, block)]), level)
    x = _clean(per_clip)
    if len(x) == 0:
        return float("nan"), float("nan")
    return _percentiles(x[_indices(len(x), n_boot, seed, block)].mean(axis=1), level)


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    """Each row's mean without its NaNs; a row of NaNs only is left out."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = ~np.isnan(a)
        means = np.where(ok, a, 0).sum(axis=1) / ok.sum(axis=1)
    return means[~np.isnan(means)]


def bootstrap_ci_steps(
    per_clip_step: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL, block: int = 1
) -> list[tuple[float, float]]:
    """Per horizon step: the bootstrap interval of each column of an (n_clips, n_steps) array,
    every step resampling the same clips (one index array). NaNs are left out of the means."""
    x = np.asarray(per_clip_step, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"per_clip_step must be (n_clips, n_steps) with clips, got shape {x.shape}")
    resampled = x[_indices(x.shape[0], n_boot, seed, block)]  # (n_boot, n_clips, n_steps)
    means = np.nanmean(resampled, axis=1) if np.isnan(x).any() else resampled.mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.nanpercentile(means, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return [(float(a), float(b)) for a, b in zip(lo, hi)]


def paired_test(
    a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL, block: int = 1
) -> dict[str, Any]:
    """Paired bootstrap of the mean difference ``a - b`` of two models' scores on the same clips.

    Returns ``{diff, lo, hi, p, separable}``: the mean difference, its ``level`` interval, the
    two-sided bootstrap p-value (twice the share of resampled differences on the other side of
    0, at most 1) and whether the interval excludes 0. Clips where either score is NaN are left
    out.
    """
    x, y = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"a paired test needs scores of the same clips, got {x.shape[0]} and {y.shape[0]} clips")
    both = np.where(np.isnan(y), np.nan, x - y)
    d = _clean(both)
    if len(d) == 0:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "p": float("nan"), "separable": False}
    if block > 1:  # blocks of neighbours: resample positions, then leave NaN clips out
        means = _nanmean_rows(both[_indices(len(both), n_boot, seed, block)])
    else:
        means = d[_indices(len(d), n_boot, seed, block)].mean(axis=1)
    lo, hi = _percentiles(means, level)
    diff = float(d.mean())
    if diff == 0 and lo == 0 and hi == 0:  # identical scores: no evidence of any difference
        p = 1.0
    else:
        p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return {"diff": diff, "lo": lo, "hi": hi, "p": p, "separable": bool(lo > 0 or hi < 0)}


def pairwise(
    per_clip: dict[str, np.ndarray],
    metric: str,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
    block: int = 1,
) -> list[dict[str, Any]]:
    """Every pair of models (in the order given) tested on ``metric``: one record per pair with
    ``a``, ``b``, the ``paired_test`` fields and ``better`` (the better model where separable,
    else None). Models without per-clip scores, or with another number of clips, are skipped."""
    labels = [k for k, v in per_clip.items() if v is not None and len(v)]
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            if len(per_clip[a]) != len(per_clip[b]):
                continue
            t = paired_test(per_clip[a], per_clip[b], n_boot, seed, level, block)
            better = None
            if t["separable"]:
                a_lower = t["diff"] < 0
                better = a if a_lower == lower_is_better(metric) else b
            out.append({"a": a, "b": b, **t, "better": better})
    return out


def verdict(
    per_clip: dict[str, np.ndarray],
    metric: str,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
    block: int = 1,
) -> str:
    """One line on ``metric``: the best model by mean, named the winner only where its paired
    test against every other model separates; otherwise ``not separable at this budget`` with
    the models it cannot be told from."""
    scores = {k: _clean(v) for k, v in per_clip.items() if v is not None and len(_clean(v))}
    if len(scores) < 2:
        return f"{metric}: fewer than two models with per-clip scores; {NOT_SEPARABLE}"
    sign = 1 if lower_is_better(metric) else -1
    best = min(scores, key=lambda k: sign * scores[k].mean())
    ties = []
    for other in scores:
        if other == best:
            continue
        if (
            len(per_clip[other]) != len(per_clip[best])
            or not paired_test(per_clip[best], per_clip[other], n_boot, seed, level, block)["separable"]
        ):
            ties.append(other)
    if not ties:
        return f"{metric}: {best} is best, its difference from every other model holds (paired bootstrap, {level:.0%})"
    return f"{metric}: {NOT_SEPARABLE} ({best} has the best mean; not told apart from {', '.join(ties)})"


def summarize(
    per_clip: dict[str, float | list], n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL, block: int = 1
):
    """metric -> [lo, hi]: the bootstrap interval of each metric's per-clip scores."""
    return {k: list(bootstrap_ci(v, n_boot, seed, level, block)) for k, v in per_clip.items()}


def settings(n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL, block: int = 1) -> dict[str, Any]:
    """What results files record about the intervals (``params`` reads them back)."""
    how = "percentile bootstrap" if block == 1 else f"circular block bootstrap (blocks of {block} clips)"
    return {
        "method": f"{how} of the mean over test clips; pairs: paired bootstrap of the mean difference",
        "n_boot": n_boot,
        "seed": seed,
        "level": level,
        "block": block,
    }


def params(record: dict[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments (n_boot, seed, level, block) of a ``settings`` record; the defaults
    for a record without them (results written before they were recorded)."""
    record = record or {}
    return {
        "n_boot": int(record.get("n_boot", N_BOOT)),
        "seed": int(record.get("seed", SEED)),
        "level": float(record.get("level", LEVEL)),
        "block": int(record.get("block", 1)),
    }
