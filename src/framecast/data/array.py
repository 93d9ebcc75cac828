"""Gridded arrays as clips: weather, traffic, radar, simulations, any (time, channel, y, x) data.

Sources, all read lazily (a file larger than memory is never loaded whole):

- ``.npy``: memory-mapped (``np.load(mmap_mode="r")``);
- ``.npz``: members saved uncompressed (``np.savez``) are memory-mapped in place; compressed
  ones (``np.savez_compressed``) cannot be read in parts and are decompressed into memory;
- HDF5 (``.h5``, ``.hdf5``): h5py datasets, sliced on read;
- NetCDF (``.nc``) and Zarr (a ``.zarr`` folder): xarray without dask, every read an ``isel``
  of the lazily indexed variables (Zarr reads only the chunks a window touches); a Zarr store
  that xarray does not describe is read as plain zarr arrays.

Two layouts: ``clips`` (N, T, C, H, W), split by clip index, and ``series`` (T, C, H, W), one
long record cut into windows of ``n_context + n_future`` steps every ``stride`` steps and split
by time: train, then validation, then test, a window's length apart so no frame feeds two
splits. Several arrays (``.npz`` keys, HDF5 datasets, xarray variables, each (T, H, W) or
(T, C, H, W); an xarray variable's extra dimensions such as ``level``) are stacked as channels.

Values are physical units. Each channel is normalised (``standard``: mean 0 and standard
deviation 1, ``minmax``: [0, 1], ``none``) with statistics fitted on the training split alone,
streamed over the lazy array in chunks; the statistics travel in every checkpoint, so testing
and forecasting use the training data's and predictions go back to physical units. NaNs are
refused (``data.nan: refuse``, naming the first) or kept as NaN in the batch for the task to
leave out of the loss and the metrics (``data.nan: mask``).
"""

from __future__ import annotations

import functools
import glob
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from framecast.data.sources import (  # noqa: F401  (re-exported: the readers live in sources.py)
    CHUNK_BYTES,
    ArraySource,
    Clips,
    Series,
    SourceMissing,
    _is_datetime,
    _needs,
    is_array_path,
)
from framecast.errors import FramecastError

if TYPE_CHECKING:
    from framecast.config import DataConfig


# --------------------------------------------------------------------------- opening a config


def _stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns)
    except OSError:
        return ()


def _paths(pattern: str) -> list[str]:
    if any(c in pattern for c in "*?["):
        found = sorted(glob.glob(pattern))
        if not found:
            raise SourceMissing(f"data.path: no file matches {pattern}")
        return found
    return [pattern]


def open_array(cfg: DataConfig) -> Series | Clips:
    """The ``array`` dataset's source: ``data.path`` (a file, a Zarr folder, or a glob of
    files joined along time in name order)."""
    paths = _paths(cfg.path)
    return _open_cached(
        tuple(paths),
        tuple(_stamp(p) for p in paths),
        tuple(cfg.variables or ()),
        cfg.layout,
        cfg.time_dim,
        cfg.y_dim,
        cfg.x_dim,
    )


@functools.lru_cache(maxsize=8)
def _open_cached(paths, stamps, variables, layout, time_dim, y_dim, x_dim) -> Series | Clips:
    sources = [ArraySource(p, variables or None, layout, time_dim, y_dim, x_dim) for p in paths]
    if sources[0].layout == "clips":
        if len(sources) > 1:
            raise FramecastError("data.path: a glob joins series along time; clips come from one file")
        return Clips(sources[0])
    return Series(sources)


def open_data(cfg: DataConfig) -> Series | Clips:
    """The source of any array dataset (``array``, ``taxibj``, ``weatherbench``)."""
    if cfg.name == "array":
        return open_array(cfg)
    from framecast.data import gridded

    return gridded.OPENERS[cfg.name](cfg)


def array_shape(cfg: DataConfig) -> tuple[int, tuple[int, int]] | None:
    """The array's channels and frame size (H, W) as training reads it (``data.resize``: that
    size), from its metadata only; None where the data is not on this machine."""
    try:
        data = open_data(cfg)
    except SourceMissing:
        return None
    return len(data.channels), (tuple(cfg.resize) if cfg.resize else data.hw)


def _show(hw) -> str:
    return f"{hw[0]}x{hw[1]}"


# --------------------------------------------------------------------------- splits


def _spans(n: int, fractions: Sequence[float], gap: int) -> dict[str, tuple[int, int]]:
    """``[a, b)`` of each split of ``n`` steps: in time order, sized by ``fractions``, ``gap``
    steps between parts (a split with fraction 0 is empty)."""
    names = ("train", "val", "test")
    fr = np.asarray(fractions, dtype=float)
    used = [k for k in range(3) if fr[k] > 0]
    usable = n - gap * (len(used) - 1)
    if usable <= 0:
        return {s: (0, 0) for s in names}
    w = fr / fr.sum()
    edges = np.round(np.cumsum(w) * usable).astype(int)
    out, start, k_used = {}, 0, 0
    for k, s in enumerate(names):
        if fr[k] == 0:
            out[s] = (start, start)
            continue
        a = start + (gap if k_used else 0)
        size = int(edges[k] - (edges[k - 1] if k else 0))
        out[s] = (a, a + size)
        start, k_used = a + size, k_used + 1
    return out


def window_starts(data: Series, spans: list[tuple[int, int]], length: int, stride: int) -> np.ndarray:
    """Window starts inside ``spans`` that never cross a segment's end."""
    starts = []
    for a, b in spans:
        for s0, s1 in data.segments:
            lo, hi = max(a, s0), min(b, s1)
            if hi - lo >= length:
                starts.append(np.arange(lo, hi - length + 1, stride))
    return np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64)


def plan_splits(cfg: DataConfig, data: Series | Clips) -> tuple[dict[str, np.ndarray], dict[str, Any], str]:
    """Per split, the window starts (series) or clip numbers (clips); the frames the
    normalisation is fitted on; and the split in one line for people."""
    lengths = {"train": cfg.total_length, "val": cfg.total_length, "test": cfg.test_length}
    need = max(lengths.values())
    if data.layout == "clips":
        if data.steps < need:
            raise FramecastError(
                f"{data.name}: clips are {data.steps} steps long, shorter than the {need} a window needs "
                f"(n_context + n_future{' or test_n_future' if cfg.test_n_future else ''})"
            )
        spans = _spans(data.n, cfg.split_fractions, 0)
        index = {s: np.arange(a, b) for s, (a, b) in spans.items()}
        empty = [s for s, v in index.items() if len(v) == 0]
        if empty:
            raise FramecastError(
                f"{data.name}: {data.n} clips give no clip to the {', '.join(empty)} split (data.split_fractions "
                f"{list(cfg.split_fractions)}); use more clips or other fractions"
            )
        line = (
            f"{data.name}: {data.n} clips of {data.steps} steps, {len(data.channels)} x {_show(data.hw)}, split by "
            f"index: " + ", ".join(f"{s} {spans[s][0]}-{spans[s][1] - 1} ({len(index[s])})" for s in index)
        )
        return index, {"clips": index["train"], "length": lengths["train"]}, line
    stride = cfg.stride or 1
    gap = need
    if data.split_spans is not None:
        spans = {s: list(v) for s, v in data.split_spans.items()}
        how = "by the dataset's protocol"
    else:
        spans = {s: [ab] for s, ab in _spans(data.n, cfg.split_fractions, gap).items()}
        how = f"by time, {gap}-step gaps"
    starts = {s: window_starts(data, spans[s], lengths[s], stride) for s in spans}
    empty = [s for s, v in starts.items() if len(v) == 0]
    if empty:
        if data.split_spans is not None:
            raise FramecastError(
                f"{data.name}: no window of {need} steps (n_context + n_future) fits in the {', '.join(empty)} "
                f"split of the dataset's protocol; use shorter windows or the full data"
            )
        used = [f for f in cfg.split_fractions if f > 0]
        least = gap * (len(used) - 1) + int(np.ceil(need * sum(used) / min(used)))
        raise FramecastError(
            f"{data.name}: the series has {data.n} steps; a window of {need} steps (n_context + n_future) "
            f"leaves no window for the {', '.join(empty)} split ({how}): a split by time needs at least "
            f"{least} steps; use shorter windows or a longer series"
        )

    def when(a: int, b: int) -> str:
        if _is_datetime(data.times):
            return f"{np.datetime_as_string(data.times[a], unit='D')}..{np.datetime_as_string(data.times[b - 1], unit='D')}"
        return f"steps {a}-{b - 1}"

    parts = []
    for s in ("train", "val", "test"):
        shown = ", ".join(when(a, b) for a, b in spans[s] if b > a)
        parts.append(f"{s} {shown} ({len(starts[s])} windows)")
    line = (
        f"{data.name}: {data.n} steps of {len(data.channels)} x {_show(data.hw)}, split {how}, stride {stride}: "
        + "; ".join(parts)
    )
    return starts, {"spans": spans["train"]}, line


# --------------------------------------------------------------------------- normalisation


@dataclass
class Normalizer:
    """Per channel ``(x - shift) / scale``; ``stats`` holds what was fitted."""

    method: str
    shift: np.ndarray
    scale: np.ndarray
    channels: list[str]
    stats: dict[str, list[float]] = field(default_factory=dict)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.shift[:, None, None]) / self.scale[:, None, None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "normalize": self.method,
            "channels": list(self.channels),
            "shift": [float(v) for v in self.shift],
            "scale": [float(v) for v in self.scale],
            "stats": self.stats,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(
            d["normalize"],
            np.asarray(d["shift"], np.float32),
            np.asarray(d["scale"], np.float32),
            list(d["channels"]),
            dict(d.get("stats", {})),
        )


def _first_bad(x: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])


def nan_error(data: Series | Clips, lead: int, x: np.ndarray, what: str = "") -> FramecastError:
    """One line naming the first NaN (or Inf) of ``x`` (L, C, H, W), read at ``lead``."""
    t, c, i, j = _first_bad(x)
    kind = "NaN" if np.isnan(x[t, c, i, j]) else "Inf"
    where = data.where(lead + t) if data.layout == "series" else f"{data.where(lead)}, step {t}"
    fix = "; fix the data or set data.nan: mask to leave NaNs out of the loss and the metrics" if kind == "NaN" else ""
    return FramecastError(
        f"{data.name}: {kind} at {where}, channel {data.channels[c]!r}, row {i}, column {j}{what}{fix}"
    )


def _chunks(data: Series | Clips, fit: dict[str, Any]):
    """(lead index, (L, C, H, W) float64 frames) of the training split, about CHUNK_BYTES each."""
    if data.layout == "clips":
        for n in fit["clips"]:
            yield int(n), data.read(int(n), fit["length"]).astype(np.float64)
        return
    c, (h, w) = len(data.channels), data.hw
    step = max(1, CHUNK_BYTES // max(1, c * h * w * 8))
    for a, b in fit["spans"]:
        for t in range(a, b, step):
            yield t, data.read(t, min(step, b - t)).astype(np.float64)


def fit_normalizer(cfg: DataConfig, data: Series | Clips, fit: dict[str, Any]) -> Normalizer:
    """Per-channel statistics of the training frames, streamed chunk by chunk (float64,
    Chan et al.'s pairwise merge of means and squared deviations); NaNs are refused or skipped."""
    c = len(data.channels)
    n = np.zeros(c)
    mean = np.zeros(c)
    m2 = np.zeros(c)
    lo, hi = np.full(c, np.inf), np.full(c, -np.inf)
    axes = (0, 2, 3)
    for lead, x in _chunks(data, fit):
        finite = np.isfinite(x)
        if finite.all():
            k = np.full(c, float(x.size // c))
            mk = x.mean(axis=axes)
            lo_k, hi_k = x.min(axis=axes), x.max(axis=axes)
            x -= mk[None, :, None, None]  # in place: no second chunk in memory
            d2 = np.einsum("tchw,tchw->c", x, x)
        else:
            if cfg.nan == "refuse" or np.isinf(x).any():
                raise nan_error(data, lead, x, " (in the training split)")
            k = finite.sum(axis=axes).astype(np.float64)
            mk = np.divide(np.nansum(x, axis=axes), k, out=np.zeros(c), where=k > 0)
            dev = np.nan_to_num(x - mk[None, :, None, None])
            d2 = np.einsum("tchw,tchw->c", dev, dev)
            lo_k = np.where(k > 0, np.nanmin(np.where(finite, x, np.inf), axis=axes), np.inf)
            hi_k = np.where(k > 0, np.nanmax(np.where(finite, x, -np.inf), axis=axes), -np.inf)
        tot = n + k
        delta = mk - mean
        safe = np.where(tot > 0, tot, 1)
        mean = mean + delta * k / safe
        m2 = m2 + d2 + delta**2 * n * k / safe
        n = tot
        lo, hi = np.minimum(lo, lo_k), np.maximum(hi, hi_k)
    empty = [data.channels[i] for i in range(c) if n[i] == 0]
    if empty:
        raise FramecastError(f"{data.name}: channel {', '.join(empty)} has no finite value in the training split")
    std = np.sqrt(m2 / n)
    stats = {"mean": mean.tolist(), "std": std.tolist(), "min": lo.tolist(), "max": hi.tolist(), "count": n.tolist()}
    if cfg.normalize == "standard":
        shift, scale = mean, std
    elif cfg.normalize == "minmax":
        shift, scale = lo, hi - lo
    else:
        shift, scale = np.zeros(c), np.ones(c)
    scale = np.where(scale > 0, scale, 1.0)  # a constant channel stays as it is, shifted
    return Normalizer(cfg.normalize, shift.astype(np.float32), scale.astype(np.float32), list(data.channels), stats)


# --------------------------------------------------------------------------- the dataset


class ArrayWindows(Dataset):
    """Windows (series) or clips (clips) of ``length`` steps, normalised, as (T, C, H, W)
    float32 tensors; NaNs stay NaN with ``nan: mask`` (the task masks them) and are refused
    otherwise. ``value_range`` is None: the task checks no [0, 1] range on arrays."""

    value_range = None

    def __init__(
        self,
        data: Series | Clips,
        index: np.ndarray,
        length: int,
        norm: Normalizer,
        nan: str,
        resize: tuple[int, int] | None,
        meta: dict[str, Any],
    ) -> None:
        self.data, self.index, self.length, self.norm = data, np.asarray(index), length, norm
        self.nan, self.resize, self.meta = nan, tuple(resize) if resize else None, meta

    def __len__(self) -> int:
        return len(self.index)

    def clip_starts(self) -> list[tuple[int, int]]:
        """``(source, first step)`` of every clip, in order: windows of a series share steps,
        clips of a (N, T, ...) array share none."""
        if isinstance(self.data, Series):
            return [(0, int(s)) for s in self.index]
        return [(int(i), 0) for i in self.index]

    def __getitem__(self, i: int) -> torch.Tensor:
        lead = int(self.index[i])
        x = self.data.read(lead, self.length)
        if not np.isfinite(x).all() and (self.nan == "refuse" or np.isinf(x).any()):
            raise nan_error(self.data, lead, x)
        x = torch.from_numpy(np.ascontiguousarray(self.norm.apply(x), dtype=np.float32))
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x = resample(x, self.resize)
        return x


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, C, H, W) -> (T, C, *size), bilinear (antialiased when shrinking); NaN pixels stay NaN
    where they dominate the new pixel."""
    bad = torch.isnan(x)
    smaller = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    y = F.interpolate(x.nan_to_num(0.0), size=size, mode="bilinear", align_corners=False, antialias=smaller)
    if bad.any():
        valid = F.interpolate((~bad).float(), size=size, mode="bilinear", align_corners=False, antialias=smaller)
        y = torch.where(valid > 0.5, y / valid.clamp_min(1e-6), torch.full_like(y, float("nan")))
    return y


def subsample(index: np.ndarray, size: int | None) -> np.ndarray:
    """At most ``size`` entries, evenly spaced (None or 0: all)."""
    if not size or size >= len(index):
        return index
    return index[np.linspace(0, len(index) - 1, size).round().astype(int)]


def lat_weights(lat: np.ndarray | None, h: int) -> list[float] | None:
    """WeatherBench's latitude weights: cos(latitude), normalised to mean 1 over the rows."""
    if lat is None or len(lat) != h:
        return None
    w = np.cos(np.deg2rad(np.asarray(lat, dtype=np.float64)))
    return (w / w.mean()).tolist()


def build_arrays(cfg: DataConfig, normalization: dict[str, Any] | None = None) -> dict[str, Dataset]:
    """The train, val and test datasets of an array dataset; ``normalization``: a checkpoint's
    (``ArrayWindows.meta``), used instead of fitting on the training split."""
    data = open_data(cfg)
    index, fit, line = plan_splits(cfg, data)
    if normalization is not None:
        norm = Normalizer.from_dict(normalization)
    else:
        norm = fit_normalizer(cfg, data, fit)
    h, w = tuple(cfg.resize) if cfg.resize else data.hw
    lat = data.lat
    if lat is not None and cfg.resize and len(lat) != h:  # the rows' latitudes, resampled with the frames
        lat = np.interp(np.linspace(0, len(lat) - 1, h), np.arange(len(lat)), lat)
    meta = {
        "dataset": cfg.name,
        **norm.to_dict(),
        "nan": cfg.nan,
        "frame_size": [h, w],
        "lat_weights": lat_weights(lat, h),
        # SSIM and PSNR score images; arrays only on the [0, 1] scale of min-max normalisation
        "image_like": norm.method == "minmax",
        # verification scores of the test pass (evaluation/verification.py), physical units
        "thresholds": list(cfg.thresholds or []),
        "fss_scales": list(cfg.fss_scales or []),
    }
    print(f"framecast: {line}", file=sys.stderr)
    lengths = {"train": cfg.total_length, "val": cfg.total_length, "test": cfg.test_length}
    caps = {"train": None, "val": cfg.val_size, "test": cfg.test_size}
    return {
        s: ArrayWindows(data, subsample(index[s], caps[s]), lengths[s], norm, cfg.nan, cfg.resize, meta)
        for s in ("train", "val", "test")
    }
