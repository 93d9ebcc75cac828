"""Reading gridded arrays lazily: one source file (npy, npz, HDF5, NetCDF, Zarr) as channels of
(time, y, x), series and clips views over it. ``framecast.data.array`` turns these into split,
normalised training windows; ``framecast.data.gridded`` reads TaxiBJ and WeatherBench with them."""

import functools
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from framecast.errors import FramecastError, unknown_choice, warn

NPY, NPZ = (".npy",), (".npz",)
HDF5 = (".h5", ".hdf5", ".hdf", ".he5")
NETCDF = (".nc", ".nc4", ".netcdf", ".cdf")
ZARR = (".zarr",)
ARRAY_SUFFIXES = NPY + NPZ + HDF5 + NETCDF + ZARR
Y_NAMES = ("lat", "latitude", "y")
X_NAMES = ("lon", "longitude", "x")
LAT_NAMES = ("lat", "latitude")
CHUNK_BYTES = 16 * 2**20  # statistics are streamed in chunks of about this many bytes (float64)


class SourceMissing(FramecastError):
    """The data's file or folder does not exist (a config may name data of another machine)."""


def is_array_path(path: str | Path) -> bool:
    """Whether ``path`` names an array source (by suffix, or a Zarr folder by its metadata)."""
    p = Path(path)
    if p.suffix.lower() in ARRAY_SUFFIXES:
        return True
    return p.is_dir() and any((p / m).exists() for m in (".zgroup", ".zarray", "zarr.json"))


def _needs(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FramecastError(f"{what} needs the {module} package: pip install 'framecast[arrays]'") from None


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


# --------------------------------------------------------------------------- one source


class _XVar:
    """An xarray variable read as (time, *extra, y, x), one ``isel`` per read."""

    def __init__(self, da, dims: tuple[str, ...]) -> None:
        self.da, self.dims = da, dims

    def __getitem__(self, index: tuple) -> np.ndarray:
        sel = dict(zip(self.dims, index))
        return np.asarray(self.da.isel(sel).transpose(*self.dims).values)


@dataclass
class _Part:
    """One array of a source: ``array[lead index]`` -> (lead..., *channel dims, H, W)."""

    name: str
    array: Any
    channels: int
    extra: list[tuple[str, list]] = field(default_factory=list)  # xarray: extra dims and their values


class ArraySource:
    """The frames of one file (or Zarr store), opened lazily in whichever process reads them.

    ``layout`` ``series``: ``read(slice(t0, t1))`` -> (t1 - t0, C, H, W) float32; ``clips``:
    ``read(n, slice(0, T))``. Metadata (``shape``, ``channels``, ``hw``, ``times``, ``lat``,
    ``coords``) is read once, at construction.
    """

    def __init__(
        self,
        path: str | Path,
        variables: Sequence[str] | None = None,
        layout: str = "auto",
        time_dim: str = "time",
        y_dim: str | None = None,
        x_dim: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.variables = list(variables) if variables else None
        self.layout, self.time_dim, self.y_dim, self.x_dim = layout, time_dim, y_dim, x_dim
        if not self.path.exists():
            raise SourceMissing(f"{self.path}: file not found")
        self.kind = self._kind()
        self._pid: int | None = None
        self._parts: list[_Part] | None = None
        self._handle: Any = None
        self.times: np.ndarray | None = None
        self.lat: np.ndarray | None = None
        self.coords: dict[str, Any] = {}
        parts = self._open()
        lead = 2 if self.layout == "clips" else 1
        shapes = {tuple(_shape(p.array)[:lead]) for p in parts}
        hws = {tuple(_shape(p.array)[-2:]) for p in parts}
        if len(shapes) > 1 or len(hws) > 1:
            raise FramecastError(
                f"{self.path}: the arrays {', '.join(p.name for p in parts)} do not share one shape "
                f"({', '.join(str(_shape(p.array)) for p in parts)}); pick those that do with data.variables"
            )
        self.lead_shape, self.hw = shapes.pop(), hws.pop()
        self.channels = [name for p in parts for name in _channel_names(p)]
        self.dtype = np.result_type(*(_dtype(p.array) for p in parts))

    # ------------------------------------------------------------------ opening

    def _kind(self) -> str:
        suffix = self.path.suffix.lower()
        if self.path.is_dir():
            return "zarr"
        for kind, suffixes in (("npy", NPY), ("npz", NPZ), ("hdf5", HDF5), ("netcdf", NETCDF), ("zarr", ZARR)):
            if suffix in suffixes:
                return kind
        raise FramecastError(
            f"{self.path}: not an array file: data.path takes {', '.join(ARRAY_SUFFIXES)} files or a Zarr folder"
        )

    def _open(self) -> list[_Part]:
        """The parts, opened in this process (again after a fork: h5py and xarray handles are not
        shared between processes)."""
        if self._parts is not None and self._pid == os.getpid():
            return self._parts
        try:
            parts = getattr(self, f"_open_{self.kind}")()
        except FramecastError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FramecastError(f"{self.path}: not a readable {self.kind} array ({_reason(e)})") from None
        self._parts, self._pid = parts, os.getpid()
        return parts

    def _layout_of(self, ndim: int, name: str) -> str:
        if self.layout != "auto":
            return self.layout
        if ndim in (3, 4):
            return "series"
        if ndim == 5:
            return "clips"
        raise FramecastError(
            f"{self.path}: {name} has {ndim} dimensions; arrays are (T, H, W) or (T, C, H, W) series "
            f"or (N, T, C, H, W) clips"
        )

    def _raw_parts(self, named: list[tuple[str, Any]]) -> list[_Part]:
        """Plain arrays (npy, npz, HDF5, zarr): the layout from the number of dimensions."""
        parts = []
        for name, arr in named:
            shape = _shape(arr)
            layout = self._layout_of(len(shape), name)
            if self.layout == "auto":
                self.layout = layout
            lead = 2 if layout == "clips" else 1
            if len(shape) not in (lead + 2, lead + 3):
                want = "(N, T, [C,] H, W) clips" if layout == "clips" else "(T, [C,] H, W) series"
                raise FramecastError(f"{self.path}: {name} has shape {shape}, not {want} (data.layout: {layout})")
            if not np.issubdtype(_dtype(arr), np.number) or np.issubdtype(_dtype(arr), np.complexfloating):
                raise FramecastError(f"{self.path}: {name} holds {_dtype(arr)}, not real numbers")
            channels = shape[lead] if len(shape) == lead + 3 else 1
            parts.append(_Part(name, arr, channels))
        return parts

    def _select(self, available: list[str], what: str, default: list[str] | None) -> list[str]:
        if self.variables:
            for v in self.variables:
                if v not in available:
                    raise FramecastError(f"{self.path}: data.variables: {unknown_choice(what, v, available)}")
            return list(self.variables)
        if default is not None:
            return default
        return available

    def _open_npy(self) -> list[_Part]:
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise FramecastError(f"{self.path}: not a .npy array of numbers ({_reason(e)})") from None
        return self._raw_parts([(self.path.stem, arr)])

    def _open_npz(self) -> list[_Part]:
        members = _npz_members(self.path)
        keys = list(members)
        if not keys:
            raise FramecastError(f"{self.path}: an empty .npz")
        default = keys if len(keys) == 1 else None
        if default is None and not self.variables:
            raise FramecastError(
                f"{self.path}: holds several arrays ({', '.join(keys)}); name the ones to read with data.variables"
            )
        chosen = self._select(keys, "array", default)
        return self._raw_parts([(k, members[k]()) for k in chosen])

    def _open_hdf5(self) -> list[_Part]:
        h5py = _needs("h5py", "reading HDF5 files")
        self._handle = h5py.File(self.path, "r")
        found: list[str] = []
        self._handle.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.ndim >= 3 else None)
        if not found:
            raise FramecastError(f"{self.path}: no HDF5 dataset with 3 or more dimensions (T, [C,] H, W)")
        default = ["data"] if "data" in found else (found if len(found) == 1 else None)
        if default is None and not self.variables:
            raise FramecastError(
                f"{self.path}: holds several datasets ({', '.join(found)}); name the ones to read with data.variables"
            )
        chosen = self._select(found, "dataset", default)
        return self._raw_parts([(k, self._handle[k]) for k in chosen])

    def _open_zarr(self) -> list[_Part]:
        xr = _needs("xarray", "reading Zarr stores")
        try:
            ds = xr.open_zarr(self.path, chunks=None, consolidated=None)
        except Exception:  # not an xarray store: plain zarr arrays
            ds = None
        if ds is not None and ds.data_vars:
            return self._xarray_parts(ds)
        zarr = _needs("zarr", "reading Zarr stores")
        try:
            root = zarr.open(str(self.path), mode="r")
        except Exception as e:
            raise FramecastError(f"{self.path}: not a readable Zarr store ({_reason(e)})") from None
        if hasattr(root, "shape"):
            return self._raw_parts([(self.path.stem, root)])
        found = [k for k, a in root.arrays() if len(a.shape) >= 3]
        if not found:
            raise FramecastError(f"{self.path}: no Zarr array with 3 or more dimensions (T, [C,] H, W)")
        default = found if len(found) == 1 else None
        if default is None and not self.variables:
            raise FramecastError(
                f"{self.path}: holds several arrays ({', '.join(found)}); name the ones to read with data.variables"
            )
        chosen = self._select(found, "array", default)
        return self._raw_parts([(k, root[k]) for k in chosen])

    def _open_netcdf(self) -> list[_Part]:
        xr = _needs("xarray", "reading NetCDF files")
        try:
            ds = xr.open_dataset(self.path, chunks=None, cache=False)
        except ValueError as e:
            raise FramecastError(
                f"{self.path}: xarray cannot open it ({_reason(e)}); NetCDF4 files need h5netcdf "
                f"(pip install 'framecast[arrays]'), classic NetCDF3 files scipy or netCDF4"
            ) from None
        self._handle = ds
        return self._xarray_parts(ds)

    def _xarray_parts(self, ds) -> list[_Part]:
        if self.layout == "clips":
            raise FramecastError(f"{self.path}: xarray data is read as one series along {self.time_dim!r}")
        self.layout = "series"
        dims = list(ds.dims)
        if self.time_dim not in dims:
            raise FramecastError(
                f"{self.path}: data.time_dim: no dimension {self.time_dim!r}; its dimensions: {', '.join(map(str, dims))}"
            )
        y, x = self._grid_dim(dims, self.y_dim, Y_NAMES, "y_dim"), self._grid_dim(dims, self.x_dim, X_NAMES, "x_dim")
        on_grid = [str(v) for v, da in ds.data_vars.items() if {self.time_dim, y, x} <= set(da.dims)]
        if self.variables:
            names = [str(v) for v in ds.data_vars]
            chosen = self._select(names, "variable", None)
            for v in chosen:
                if v not in on_grid:
                    raise FramecastError(
                        f"{self.path}: variable {v!r} has dimensions {ds[v].dims}, not ({self.time_dim}, ..., {y}, {x})"
                    )
        else:
            if not on_grid:
                raise FramecastError(
                    f"{self.path}: no variable on ({self.time_dim}, {y}, {x}); variables: "
                    f"{', '.join(f'{v}{tuple(ds[v].dims)}' for v in ds.data_vars)}"
                )
            chosen = on_grid
        parts = []
        for v in chosen:
            da = ds[v]
            extra = [d for d in da.dims if d not in (self.time_dim, y, x)]
            order = (self.time_dim, *extra, y, x)
            values = [(str(d), ds[d].values.tolist() if d in ds.coords else list(range(da.sizes[d]))) for d in extra]
            channels = int(np.prod([da.sizes[d] for d in extra])) if extra else 1
            parts.append(_Part(v, _XVar(da, order), channels, values))
        self.y_dim, self.x_dim = y, x
        if self.time_dim in ds.coords:
            self.times = ds[self.time_dim].values
        if y in ds.coords and (y in LAT_NAMES or ds[y].attrs.get("units") in ("degrees_north", "degree_north")):
            self.lat = np.asarray(ds[y].values, dtype=np.float64)  # latitude-weighted metrics need it
        self.coords = {
            "y": (y, ds[y].values if y in ds.coords else None, dict(ds[y].attrs) if y in ds.coords else {}),
            "x": (x, ds[x].values if x in ds.coords else None, dict(ds[x].attrs) if x in ds.coords else {}),
            "time": self.time_dim,
            "attrs": {v: dict(ds[v].attrs) for v in chosen},
            "extra": {p.name: p.extra for p in parts},
        }
        return parts

    def _grid_dim(self, dims: list, given: str | None, names: tuple[str, ...], key: str) -> str:
        if given is not None:
            if given not in dims:
                raise FramecastError(
                    f"{self.path}: data.{key}: no dimension {given!r}; its dimensions: {', '.join(map(str, dims))}"
                )
            return given
        for n in names:
            if n in dims:
                return n
        raise FramecastError(
            f"{self.path}: no grid dimension named {' or '.join(names)}; its dimensions: {', '.join(map(str, dims))}; "
            f"name it with data.{key}"
        )

    # ------------------------------------------------------------------ reading

    def read(self, *index) -> np.ndarray:
        """Frames at the leading ``index`` (series: one slice of time; clips: a clip number and a
        slice of time) as (L, C, H, W) float32."""
        out = []
        for p in self._open():
            a = np.asarray(p.array[index])
            out.append(a.reshape(a.shape[0], -1, *a.shape[-2:]))
        x = out[0] if len(out) == 1 else np.concatenate(out, axis=1)
        return x.astype(np.float32, copy=False)

    def __getstate__(self) -> dict:  # never pickle open handles into DataLoader workers
        return {**self.__dict__, "_parts": None, "_handle": None, "_pid": None}

    def close(self) -> None:
        if self._handle is not None and hasattr(self._handle, "close"):
            self._handle.close()
        self._parts, self._handle = None, None

    def describe(self) -> str:
        return f"{self.path.name} ({self.kind})"


def _shape(arr) -> tuple[int, ...]:
    if isinstance(arr, _XVar):
        return tuple(int(arr.da.sizes[d]) for d in arr.dims)
    return tuple(int(s) for s in arr.shape)


def _dtype(arr) -> np.dtype:
    return np.dtype(arr.da.dtype if isinstance(arr, _XVar) else arr.dtype)


def _channel_names(p: _Part) -> list[str]:
    if p.extra:
        import itertools

        combos = itertools.product(*[[f"{d}={v}" for v in vals] for d, vals in p.extra])
        return [f"{p.name}[{','.join(c)}]" for c in combos]
    return [p.name] if p.channels == 1 else [f"{p.name}[{i}]" for i in range(p.channels)]


def _npz_members(path: Path) -> dict[str, Any]:
    """key -> a function returning the member's array: memory-mapped in place when it is stored
    uncompressed, else decompressed into memory."""
    out: dict[str, Any] = {}
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise FramecastError(f"{path}: not a readable .npz ({_reason(e)})") from None
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            if info.compress_type == zipfile.ZIP_STORED:
                out[key] = functools.partial(_npz_memmap, path, info.header_offset)
            else:
                out[key] = functools.partial(_npz_load, path, key, info.file_size)
    return out


def _npz_memmap(path: Path, header_offset: int) -> np.ndarray:
    with open(path, "rb") as f:
        f.seek(header_offset)
        local = f.read(30)
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            raise FramecastError(f"{path}: holds Python objects, not numbers")
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _npz_load(path: Path, key: str, size: int) -> np.ndarray:
    if size > 2**30:
        warn(
            f"{path}: {key} is compressed ({size / 2**30:.1f} GiB unpacked) and is read into memory whole; "
            f"save it with np.savez or as .npy to read it lazily"
        )
    with np.load(path, allow_pickle=False) as z:
        return z[key]


# --------------------------------------------------------------------------- series and clips


class Series:
    """One long record (T, C, H, W) across one or more sources joined along time.

    ``runs``: ``(source, first, end)`` pieces in time order (default: each source whole);
    ``segments``: the ``[a, b)`` ranges of the joined timeline within which steps follow each
    other in time (default: all of it): windows never cross a segment's end. ``split_spans``: a
    dataset's protocol (split -> list of ``[a, b)``), else ``data.split_fractions`` decide.
    """

    layout = "series"

    def __init__(
        self,
        sources: Sequence[ArraySource],
        runs: Sequence[tuple[int, int, int]] | None = None,
        segments: Sequence[tuple[int, int]] | None = None,
        times: np.ndarray | None = None,
        split_spans: dict[str, list[tuple[int, int]]] | None = None,
        name: str | None = None,
    ) -> None:
        self.sources = list(sources)
        first = self.sources[0]
        for s in self.sources[1:]:
            if s.channels != first.channels or s.hw != first.hw:
                raise FramecastError(
                    f"{s.path}: channels {s.channels} on {s.hw[0]}x{s.hw[1]} differ from {first.path.name}'s "
                    f"{first.channels} on {first.hw[0]}x{first.hw[1]}"
                )
        self.runs = list(runs) if runs is not None else [(i, 0, s.lead_shape[0]) for i, s in enumerate(self.sources)]
        self.offsets = np.cumsum([0] + [b - a for _, a, b in self.runs])
        self.n = int(self.offsets[-1])
        self.segments = list(segments) if segments is not None else [(0, self.n)]
        self.channels, self.hw, self.lat, self.coords = first.channels, first.hw, first.lat, first.coords
        if times is None and all(s.times is not None for s in self.sources):
            times = np.concatenate([self.sources[i].times[a:b] for i, a, b in self.runs])
        self.times = times
        self.split_spans = split_spans
        self.name = name or (first.describe() if len(self.sources) == 1 else f"{len(self.sources)} files")

    def read(self, start: int, length: int) -> np.ndarray:
        """Steps ``start .. start + length - 1`` of the joined timeline, (length, C, H, W)."""
        out, t, end = [], start, start + length
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while t < end:
            src, a, b = self.runs[k]
            lo = a + t - int(self.offsets[k])
            hi = min(b, lo + end - t)
            out.append(self.sources[src].read(slice(lo, hi)))
            t += hi - lo
            k += 1
        return out[0] if len(out) == 1 else np.concatenate(out)

    def where(self, t: int) -> str:
        """Step ``t`` for people: its index, and its time where the data has times."""
        when = f" ({np.datetime_as_string(self.times[t], unit='m')})" if _is_datetime(self.times) else ""
        return f"time step {t}{when}"


class Clips:
    """(N, T, C, H, W) clips of one source."""

    layout = "clips"

    def __init__(self, source: ArraySource) -> None:
        self.source = source
        self.n, self.steps = source.lead_shape
        self.channels, self.hw, self.lat, self.coords = source.channels, source.hw, source.lat, source.coords
        self.times, self.split_spans, self.name = None, None, source.describe()

    def read(self, index: int, length: int) -> np.ndarray:
        return self.source.read(index, slice(0, length))

    def where(self, n: int) -> str:
        return f"clip {n}"


def _is_datetime(times) -> bool:
    return times is not None and np.issubdtype(np.asarray(times).dtype, np.datetime64)
