"""Forecasting gridded arrays in physical units (NumPy, NetCDF, Zarr) from an array checkpoint."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from framecast.errors import FramecastError
from framecast.forecasting.forecaster import Forecaster
from framecast.forecasting.plots import forecast_gif, plot_forecast

ARRAY_OUTPUTS = (".npy", ".nc", ".zarr")


def _array_options(model: nn.Module, path: str | Path):
    """The ``array`` DataConfig that reads ``path`` the way the checkpoint's training data was
    read (its variables, layout and dimension names when it was a plain array dataset)."""
    from framecast.config import DataConfig

    meta = getattr(model, "checkpoint_meta", None) or {}
    array = meta.get("array")
    if not array:
        raise FramecastError(
            f"{path}: an array file, but the checkpoint was not trained on arrays (it stores no normalisation); "
            f"train one with data.name: array"
        )
    run = (meta.get("run_config") or {}).get("data") or {}
    keep = ("time_dim", "y_dim", "x_dim", "resize") + (("variables", "layout") if run.get("name") == "array" else ())
    values = {k: run[k] for k in keep if run.get(k) is not None}
    return DataConfig(name="array", path=str(path), nan=array.get("nan", "refuse"), **values), array


def forecast_array(
    model: nn.Module,
    path: str | Path,
    out: str | Path,
    start: int | None = None,
    n_future: int | None = None,
    channels: list[str] | None = None,
    cmap: str = "viridis",
    fps: float | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Forecast the array file ``path`` and write ``out``: ``.npy`` (n_future, C, H, W) in
    physical units, or ``.nc`` / ``.zarr`` (xarray: the input's variables, grid coordinates and
    attributes, along a ``time`` axis of forecast times with ``lead`` steps), plus a PNG and a
    GIF of ``channels`` (names or indices; default: the first four) with a colour map and bar.

    The context is the last ``n_context`` steps of a series (or steps ``start ..`` of it; clips:
    the first steps of clip ``start``, default the last); where the data goes on after the
    context, per-step RMSE against it is returned. ``precision`` as the ``Forecaster``'s
    (``auto``: measured, may pick bf16-mixed; ``32`` keeps every step in fp32).
    """
    from framecast.data.array import Normalizer, nan_error, open_array, resample

    cfg, meta = _array_options(model, path)
    data = open_array(cfg)
    nc_ = getattr(model.config, "n_context", None) or model.checkpoint_meta.get("n_context", 10)
    n = n_future or getattr(model.config, "n_future", None) or model.checkpoint_meta.get("n_future", 10)
    if len(data.channels) != len(meta["channels"]):
        raise FramecastError(
            f"{path}: {len(data.channels)} channels ({', '.join(data.channels)}), but the checkpoint was trained on "
            f"{len(meta['channels'])} ({', '.join(meta['channels'])})"
        )
    if data.layout == "clips":
        clip = data.n - 1 if start is None else start
        if not 0 <= clip < data.n:
            raise FramecastError(f"{path}: --start {clip}: the file holds clips 0 to {data.n - 1}")
        if data.steps < nc_:
            raise FramecastError(f"{path}: clips of {data.steps} steps, the model needs {nc_} context steps")
        frames, lead, first = data.read(clip, min(data.steps, nc_ + n)), clip, 0
    else:
        first = data.n - nc_ if start is None else start
        if first < 0 or first + nc_ > data.n:
            raise FramecastError(
                f"{path}: {data.n} steps; the model reads {nc_} context steps"
                + (f", which --start {start} does not leave" if start is not None else "")
            )
        frames, lead = data.read(first, min(data.n - first, nc_ + n)), first
    finite = np.isfinite(frames)
    if not finite.all() and (meta.get("nan") != "mask" or np.isinf(frames).any()):
        raise nan_error(data, lead, frames)
    norm = Normalizer.from_dict(meta)
    x = torch.from_numpy(np.ascontiguousarray(norm.apply(frames), dtype=np.float32))
    h, w = meta.get("frame_size") or data.hw
    if tuple(x.shape[-2:]) != (h, w):
        x = resample(x, (h, w))
    x = x.nan_to_num(0.0)
    f = Forecaster(model, n, nc_, precision=precision)  # its precision, layout and packed weights
    with torch.no_grad(), f._autocast():  # not predict(): normalised values are not clamped to [0, 1]
        y = f.model(x[None, :nc_].to(f.device), n).future(n).float().cpu()[0]  # (n, C, h, w) normalised
    scale, shift = (torch.tensor(meta[k], dtype=torch.float32).view(-1, 1, 1) for k in ("scale", "shift"))
    pred = (y * scale + shift).numpy()
    context = frames[:nc_]
    truth = frames[nc_:] if tuple(frames.shape[-2:]) == (h, w) else np.zeros((0, *pred.shape[1:]), np.float32)
    scores = []
    for k in range(len(truth)):
        err = (pred[k] - truth[k]) ** 2
        scores.append(
            {"step": k + 1, **{ch: float(np.sqrt(np.nanmean(err[i]))) for i, ch in enumerate(meta["channels"])}}
        )
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".npy":
        from framecast.io import atomic_write

        atomic_write(out, lambda f: np.save(f, pred.astype(np.float32), allow_pickle=False))
    elif suffix in (".nc", ".zarr"):
        _write_xarray(data, pred, first + nc_ - 1 if data.layout == "series" else None, out, model, path)
    else:
        raise FramecastError(f"{out}: write forecasts of arrays as {', '.join(ARRAY_OUTPUTS)}")
    picked = _pick_channels(channels, meta["channels"])
    figure = out.with_suffix(".png") if suffix != ".zarr" else out.parent / f"{out.stem}.png"
    plot_forecast(context, pred, truth, picked, meta["channels"], figure, cmap)
    gif = figure.with_suffix(".gif")
    forecast_gif(context, pred, truth, picked, meta["channels"], gif, cmap, fps or 2.0)
    return {
        "layout": data.layout,
        "start": first if data.layout == "series" else lead,
        "n_context": nc_,
        "n_future": n,
        "truth_steps": len(truth),
        "channels": list(meta["channels"]),
        "scores": scores,
        "files": [str(out), str(figure), str(gif)],
    }


def _pick_channels(wanted: list[str] | None, names: list[str]) -> list[int]:
    if not wanted:
        return list(range(min(4, len(names))))
    out = []
    for w in wanted:
        if w in names:
            out.append(names.index(w))
        elif str(w).lstrip("-").isdigit() and -len(names) <= int(w) < len(names):
            out.append(int(w) % len(names))
        else:
            from framecast.errors import unknown_choice

            raise FramecastError(f"--channels: {unknown_choice('channel', str(w), names)}")
    return out


def _write_xarray(data, pred: np.ndarray, last: int | None, out: Path, model: nn.Module, src: str | Path) -> None:
    """``pred`` (n, C, H, W) as an xarray Dataset: each input variable back on its own dimensions
    (extra ones such as ``level`` included), the grid's coordinates and attributes, a ``time``
    axis of forecast times (the context's step after its last time) and ``lead`` (steps ahead)."""
    from framecast.data.array import _needs

    xr = _needs("xarray", "writing NetCDF or Zarr forecasts")
    n = len(pred)
    coords = data.coords or {}
    time_name = coords.get("time", "time")
    times = data.times
    if last is not None and times is not None and np.issubdtype(np.asarray(times).dtype, np.datetime64) and last >= 1:
        step = times[last] - times[last - 1]
        valid = np.asarray([times[last] + step * (k + 1) for k in range(n)])
        init = times[last]
    else:
        valid, init = np.arange(n) + (last + 1 if last is not None else 0), None
    h, w = pred.shape[-2:]

    def grid(key: str, default: str):
        name, values, attrs = coords.get(key, (default, None, {}))
        if values is None:
            return name, np.arange(h if key == "y" else w), attrs
        if len(values) != (h if key == "y" else w):  # resampled: the coordinates follow
            values = np.interp(np.linspace(0, len(values) - 1, h if key == "y" else w), np.arange(len(values)), values)
        return name, values, attrs

    (yn, yv, ya), (xn, xv, xa) = grid("y", "y"), grid("x", "x")
    base = {time_name: valid, "lead": (time_name, np.arange(1, n + 1)), yn: (yn, yv, ya), xn: (xn, xv, xa)}
    variables, c = {}, 0
    extra, attrs = coords.get("extra"), coords.get("attrs", {})
    if extra:  # xarray input: its variables again
        for var, dims in extra.items():
            sizes = [len(v) for _, v in dims]
            k = int(np.prod(sizes)) if sizes else 1
            values = pred[:, c : c + k].reshape(n, *sizes, h, w)
            dim_names = [time_name, *[d for d, _ in dims], yn, xn]
            variables[var] = xr.Variable(dim_names, values, attrs.get(var, {}))
            for d, vals in dims:
                base[d] = vals
            c += k
    else:
        names = list(data.channels)
        base["channel"] = names
        variables["forecast"] = xr.Variable([time_name, "channel", yn, xn], pred)
    ds = xr.Dataset(variables, coords=base)
    ds.attrs.update(
        {
            "title": "framecast forecast",
            "source": str(src),
            "model": getattr(model, "model_name", ""),
            **({"init_time": str(np.datetime_as_string(init, unit="s"))} if init is not None else {}),
        }
    )
    import os
    import shutil

    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    if out.suffix.lower() == ".nc":
        ds.to_netcdf(tmp)
    else:
        ds.to_zarr(tmp, mode="w")
    if out.is_dir():
        shutil.rmtree(out)
    os.replace(tmp, out)
