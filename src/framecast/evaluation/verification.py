"""Forecast verification scores of gridded data, as meteorologists report them, from pysteps'
verification module (Pulkkinen et al. 2019, https://doi.org/10.5194/gmd-12-4185-2019):

- CSI (critical success index), POD (probability of detection) and FAR (false alarm ratio) of
  the event "value >= threshold", from the contingency table summed over every clip and pixel
  of a horizon step (``pysteps.verification.detcatscores``);
- FSS, the fractions skill score of Roberts & Lean (2008,
  https://doi.org/10.1175/2007MWR2123.1), at a threshold and a neighbourhood of ``scale`` x
  ``scale`` grid cells (``pysteps.verification.spatialscores``).

Thresholds are in the data's physical units (``data.thresholds``), scales in grid cells
(``data.fss_scales``). pysteps' accumulators are kept as tensor sums, so scores computed over
several processes add up as over one. Masked pixels (``data.nan: mask``) are left out.
"""

import numpy as np
import torch
from torch import Tensor

from framecast.errors import MissingPackage

CONTINGENCY = ("hits", "misses", "false_alarms", "correct_negatives")
FSS_SUMS = ("sum_fct_sq", "sum_fct_obs", "sum_obs_sq")


def _pysteps():
    try:
        from pysteps.verification import detcatscores, spatialscores
    except ImportError as e:
        raise MissingPackage(
            "CSI, POD, FAR and FSS (data.thresholds) use pysteps: pip install 'framecast[baselines]'"
        ) from e
    return detcatscores, spatialscores


class Verification:
    """Accumulates the contingency tables and FSS sums of every (threshold, scale, channel,
    horizon step) over a test pass. ``sums``: one float64 tensor, summed across processes by
    the caller's metric."""

    def __init__(self, n_future: int, channels: list[str], thresholds: list[float], scales: list[int]) -> None:
        self.detcat, self.spatial = _pysteps()
        self.channels, self.thresholds, self.scales = list(channels), [float(t) for t in thresholds], list(scales)
        self.n_future = n_future
        c, t, s = len(channels), len(thresholds), len(scales)
        self.shape = (t, c, n_future, len(CONTINGENCY) + s * len(FSS_SUMS))

    def empty(self) -> Tensor:
        return torch.zeros(self.shape, dtype=torch.float64)

    def accumulate(self, sums: Tensor, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one batch: ``pred``, ``target`` (B, T, C, H, W) in physical units, NaN where masked."""
        b, n, c = pred.shape[:3]
        for i, thr in enumerate(self.thresholds):
            for ch in range(c):
                for step in range(n):
                    table = self.detcat.det_cat_fct_init(thr)
                    fss = [self.spatial.fss_init(thr, scale) for scale in self.scales]
                    for clip in range(b):
                        f, o = pred[clip, step, ch], target[clip, step, ch]
                        self.detcat.det_cat_fct_accum(table, f, o)
                        f = np.where(np.isnan(o), np.nan, f)  # masked pixels: no event on either side
                        for acc in fss:
                            self.spatial.fss_accum(acc, f, o)
                    row = [float(table[k]) for k in CONTINGENCY] + [float(acc[k]) for acc in fss for k in FSS_SUMS]
                    sums[i, ch, step] += torch.tensor(row, dtype=torch.float64)

    def compute(self, sums: Tensor) -> dict[str, Tensor]:
        """name -> (n_future,) scores (NaN where a score is undefined: no event forecast or seen)."""
        suffixes = [""] if len(self.channels) == 1 else [f"/{c}" for c in self.channels]
        by_name: dict[str, list[float]] = {}
        for ch, suffix in enumerate(suffixes):
            for i, thr in enumerate(self.thresholds):
                for step in range(self.n_future):
                    row = sums[i, ch, step].tolist()
                    table = dict(zip(CONTINGENCY, row[:4], strict=True))
                    cat = self.detcat.det_cat_fct_compute(table, scores=["CSI", "POD", "FAR"])
                    for k in ("csi", "pod", "far"):
                        by_name.setdefault(f"{k}_{thr:g}{suffix}", []).append(float(cat[k.upper()]))
                    for j, scale in enumerate(self.scales):
                        acc = dict(zip(FSS_SUMS, row[4 + 3 * j : 7 + 3 * j], strict=True))
                        by_name.setdefault(f"fss_{thr:g}_{scale}{suffix}", []).append(
                            float(self.spatial.fss_compute(acc))
                        )
        return {name: torch.tensor(values, dtype=torch.float64) for name, values in by_name.items()}

    def describe(self) -> dict[str, str]:
        """What the scores are, with their thresholds and scales, for metrics.json."""
        thr = ", ".join(f"{t:g}" for t in self.thresholds)
        out = {
            "csi, pod, far": f"of the event value >= threshold, thresholds {thr} (physical units), from the contingency "
            "table summed over clips and pixels per horizon step (pysteps.verification.detcatscores)",
        }
        if self.scales:
            out["fss"] = (
                f"fractions skill score at thresholds {thr} and neighbourhoods of {', '.join(map(str, self.scales))} "
                "grid cells (pysteps.verification.spatialscores; Roberts & Lean 2008)"
            )
        out["thresholds"] = [*self.thresholds]
        out["fss_scales"] = [*self.scales]
        return out
