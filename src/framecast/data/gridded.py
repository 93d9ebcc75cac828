"""TaxiBJ and WeatherBench, read as their distributors publish them, with OpenSTL's protocols.

- ``taxibj`` (Zhang et al., "Deep Spatio-Temporal Residual Networks for Citywide Crowd Flows
  Prediction", AAAI 2017): ``data.root`` holds ``BJ13_M32x32_T30_InOut.h5`` ..
  ``BJ16_M32x32_T30_InOut.h5``, each with ``data`` (N, 2, 32, 32): inflow and outflow per
  half hour, and ``date`` (N,): ``YYYYMMDDSS`` with the slot SS = 01..48 of the day. As the
  authors' preprocessing (ST-ResNet) does, days without all 48 slots are left out, and windows
  never span a missing day or the gaps between the files. OpenSTL's setting: 4 -> 4 steps, the
  last 28 days (1,344 half hours) are the test split. OpenSTL validates on the test split;
  framecast holds out the 28 days before it for validation instead (one window apart from both
  neighbours), so best.ckpt is never picked on test data.
- ``weatherbench`` (Rasp et al., "WeatherBench: A benchmark dataset for data-driven weather
  forecasting", 2020): ``data.root`` holds one folder per variable as published,
  ``2m_temperature/2m_temperature_1979_5.625deg.nc`` .. (one NetCDF file per year, hourly, a
  32 x 64 latitude-longitude grid at 5.625 degrees). ``data.variables`` names the folders
  (default ``2m_temperature``); several are stacked as channels. OpenSTL's setting for
  ``weather_t2m_5_625``: 12 -> 12 hourly steps, train 2010-2015, validation 2016, test
  2017-2018, every hour a window start (stride 1), per-channel standardisation fitted on the
  training years. Only the files of 2010-2018 are opened, lazily (the folder's other years are
  never read).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from framecast.data.sources import ArraySource, Series, SourceMissing
from framecast.errors import FramecastError

if TYPE_CHECKING:
    from framecast.config import DataConfig

TAXIBJ_FILE = re.compile(r"BJ(\d\d)_M32x32_T30_InOut\.h5$")
TAXIBJ_SLOTS = 48  # half hours per day
TAXIBJ_TEST_DAYS = 28
WEATHERBENCH_YEARS = {"train": (2010, 2015), "val": (2016, 2016), "test": (2017, 2018)}
WEATHERBENCH_FILE = re.compile(r"_(\d{4})_([0-9.]+)deg\.nc$")


def _root(cfg: DataConfig, what: str) -> Path:
    root = Path(cfg.root or "")
    if not root.is_dir():
        raise SourceMissing(f"data.root: folder not found: {root} (the {what} files)")
    return root


# --------------------------------------------------------------------------- TaxiBJ


def _complete_days(dates: list[str]) -> np.ndarray:
    """Indices of the timestamps whose day has all 48 slots, in order, once each."""
    keep = []
    i = 0
    while i < len(dates):
        day = dates[i][:8]
        j = i
        while j < len(dates) and dates[j][:8] == day:
            j += 1
        slots = [int(d[8:]) for d in dates[i:j]]
        if slots == list(range(1, TAXIBJ_SLOTS + 1)):
            keep.extend(range(i, j))
        i = j
    return np.asarray(keep, dtype=np.int64)


def open_taxibj(cfg: DataConfig) -> Series:
    """The four TaxiBJ files as one half-hourly series of (inflow, outflow) on 32 x 32."""
    import h5py

    root = _root(cfg, "TaxiBJ BJ13_M32x32_T30_InOut.h5 ..")
    files = sorted(p for p in root.iterdir() if TAXIBJ_FILE.search(p.name))
    if not files:
        raise FramecastError(
            f"{root}: no TaxiBJ files (BJ13_M32x32_T30_InOut.h5 .. BJ16_M32x32_T30_InOut.h5); point data.root at them"
        )
    sources, runs, segments, times = [], [], [], []
    prev_day = None
    for k, path in enumerate(files):
        with h5py.File(path, "r") as f:
            if "date" not in f or "data" not in f:
                raise FramecastError(
                    f"{path}: not a TaxiBJ file (datasets 'data' and 'date' expected, found {list(f)})"
                )
            dates = [d.decode() if isinstance(d, bytes) else str(d) for d in f["date"][()]]
        src = ArraySource(path, ["data"], "series")
        if src.lead_shape[0] != len(dates) or len(src.channels) != 2:
            shape = (*src.lead_shape, len(src.channels), *src.hw)
            raise FramecastError(f"{path}: 'data' is {shape}, not (N, 2, H, W) for its {len(dates)} dates")
        src.channels = ["inflow", "outflow"]
        sources.append(src)
        keep = _complete_days(dates)
        if len(keep) == 0:
            continue
        # runs of consecutive file indices (whole days); a new segment where days do not follow
        breaks = np.flatnonzero(np.diff(keep) != 1) + 1
        for run in np.split(keep, breaks):
            first_day = np.datetime64(f"{dates[run[0]][:4]}-{dates[run[0]][4:6]}-{dates[run[0]][6:8]}")
            start = sum(b - a for _, a, b in runs)
            if prev_day is None or first_day != prev_day + np.timedelta64(1, "D") or not segments:
                segments.append([start, start])
            runs.append((k, int(run[0]), int(run[-1]) + 1))
            segments[-1][1] = start + len(run)
            last = dates[run[-1]]
            prev_day = np.datetime64(f"{last[:4]}-{last[4:6]}-{last[6:8]}")
            day0 = np.array([np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:8]}T00:00") for d in dates[run[0] : run[-1] + 1]])
            slots = np.array([int(d[8:]) - 1 for d in dates[run[0] : run[-1] + 1]])
            times.append(day0 + slots * np.timedelta64(30, "m"))
    n = sum(b - a for _, a, b in runs)
    test_len = TAXIBJ_TEST_DAYS * TAXIBJ_SLOTS
    gap = max(cfg.total_length, cfg.test_length)
    test = (n - test_len, n)
    val = (test[0] - gap - test_len, test[0] - gap)
    train = (0, val[0] - gap)
    if train[1] <= 0:
        raise FramecastError(
            f"{root}: {n} complete half hours, too few for 28 test days, 28 validation days and training"
        )
    spans = {"train": [train], "val": [val], "test": [test]}
    return Series(
        sources,
        runs,
        [tuple(s) for s in segments],
        np.concatenate(times),
        spans,
        name=f"TaxiBJ ({len(files)} files)",
    )


# --------------------------------------------------------------------------- WeatherBench


class _Stacked:
    """Sources of one year (one per variable) side by side as channels."""

    def __init__(self, sources: list[ArraySource]) -> None:
        self.sources = sources
        first = sources[0]
        for s in sources[1:]:
            if s.lead_shape != first.lead_shape or s.hw != first.hw:
                raise FramecastError(
                    f"{s.path}: {s.lead_shape[0]} steps on {s.hw[0]}x{s.hw[1]}, but {first.path.name} has "
                    f"{first.lead_shape[0]} on {first.hw[0]}x{first.hw[1]}"
                )
        self.path, self.lead_shape, self.hw, self.times, self.lat = (
            first.path,
            first.lead_shape,
            first.hw,
            first.times,
            first.lat,
        )
        self.channels = [c for s in sources for c in s.channels]
        coords = dict(first.coords)
        coords["attrs"] = {k: v for s in sources for k, v in s.coords.get("attrs", {}).items()}
        coords["extra"] = {k: v for s in sources for k, v in s.coords.get("extra", {}).items()}
        self.coords = coords

    def read(self, index) -> np.ndarray:
        parts = [s.read(index) for s in self.sources]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def describe(self) -> str:
        return self.path.name


def open_weatherbench(cfg: DataConfig) -> Series:
    """The variable folders' yearly files of 2010-2018, joined along time."""
    root = _root(cfg, "WeatherBench <variable>/<variable>_<year>_5.625deg.nc")
    variables = cfg.variables or ["2m_temperature"]
    first, last = WEATHERBENCH_YEARS["train"][0], WEATHERBENCH_YEARS["test"][1]
    by_year: dict[int, list[Path]] = {}
    for var in variables:
        folder = root / var
        if not folder.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise FramecastError(
                f"{root}: no folder {var!r} (data.variables names WeatherBench's variable folders); found: "
                f"{', '.join(found) or 'none'}"
            )
        files = {}
        for p in folder.glob(f"{var}_*deg.nc"):
            m = WEATHERBENCH_FILE.search(p.name)
            if m:
                files.setdefault(m.group(2), {})[int(m.group(1))] = p
        if not files:
            raise FramecastError(f"{folder}: no files {var}_<year>_<resolution>deg.nc")
        res = "5.625" if "5.625" in files else sorted(files)[0]  # OpenSTL's 32 x 64 grid first
        missing = [y for y in range(first, last + 1) if y not in files[res]]
        if missing:
            raise FramecastError(
                f"{folder}: the protocol (train 2010-2015, val 2016, test 2017-2018) needs the years "
                f"{', '.join(map(str, missing))} at {res} deg, which are missing"
            )
        for y in range(first, last + 1):
            by_year.setdefault(y, []).append(files[res][y])
    years = sorted(by_year)
    stacks = []
    for y in years:
        sources = [ArraySource(p, None, "series", cfg.time_dim, cfg.y_dim, cfg.x_dim) for p in by_year[y]]
        stacks.append(_Stacked(sources))
    series = Series(stacks, name=f"WeatherBench {', '.join(variables)} ({first}-{last})")
    times = series.times
    if times is None or not np.issubdtype(np.asarray(times).dtype, np.datetime64):
        raise FramecastError(f"{root}: the WeatherBench files have no decodable time coordinate")
    spans = {}
    for split, (a, b) in WEATHERBENCH_YEARS.items():
        lo = int(np.searchsorted(times, np.datetime64(f"{a}-01-01")))
        hi = int(np.searchsorted(times, np.datetime64(f"{b + 1}-01-01")))
        spans[split] = [(lo, hi)]
    series.split_spans = spans
    return series


OPENERS = {"taxibj": open_taxibj, "weatherbench": open_weatherbench}
