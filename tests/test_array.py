"""Gridded arrays as first-class data: .npy / .npz / HDF5 / NetCDF / Zarr read lazily, split by
time or by clip, normalised per channel on the training split, any channels on non-square grids
through fit -> test -> forecast, metrics in physical units, NaNs and bad input as one line."""

import json
import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch

import framecast
from framecast.cli import main
from framecast.config import DataConfig, build_dataclass, build_run_config
from framecast.data import array as A
from framecast.data import build_datasets
from framecast.errors import ConfigError, FramecastError
from framecast.evaluation import metrics as M
from framecast.resolve import resolve_data, resolve_run
from framecast.training.checks import check_model_fits
from framecast.training.runner import fit
from framecast.training.testing import test_model as score

xr = pytest.importorskip("xarray")
h5py = pytest.importorskip("h5py")

FAST = {"precision": "32", "channels_last": False, "enable_progress_bar": False, "log_every_n_steps": 1}
TINY = {"name": "convlstm", "num_hidden": [8, 8], "filter_size": 3, "patch_size": 2}


def series(t=90, c=2, h=8, w=16, seed=0):
    """A moving pattern in physical-looking units: channel k around 100 * (k + 1)."""
    rng = np.random.default_rng(seed)
    tt = np.arange(t)[:, None, None, None]
    ch = np.arange(c)[None, :, None, None]
    yy, xx = np.arange(h)[None, None, :, None], np.arange(w)[None, None, None, :]
    x = 100.0 * (ch + 1) + (ch + 1) * 5 * np.sin(tt / 3 + xx / 2 + yy / 4) + rng.normal(0, 0.1, (t, c, h, w))
    return x.astype(np.float32)


def data_cfg(path, **kw):
    """An array data config as a run's entry resolves it (its shape read from the file)."""
    values = {"name": "array", "path": str(path), "n_context": 3, "n_future": 2, "batch_size": 4, **kw}
    return resolve_data(build_dataclass(DataConfig, values, prefix="data."))


def run_values(tmp_path, path, model=None, **data):
    return {
        "model": model or TINY,
        "data": {"name": "array", "path": str(path), "n_context": 3, "n_future": 2, "batch_size": 4, **data},
        "trainer": {"max_epochs": 1, "limit_train_batches": 3, **FAST},
        "train": {"image_every_n_steps": 1},
        "out_dir": str(tmp_path / "run"),
    }


def weather_nc(path, t=60, h=8, w=16, nan_at=None):
    """A NetCDF series on a latitude-longitude grid: t2m (K) and z on two levels."""
    import pandas as pd

    x = series(t, 3, h, w)
    if nan_at is not None:
        x[nan_at] = np.nan
    lat = np.linspace(-78.75, 78.75, h)
    ds = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), x[:, 0] + 180, {"units": "K"}),
            "z": (("time", "level", "lat", "lon"), x[:, 1:] * 10, {"units": "m2 s-2"}),
        },
        coords={
            "time": pd.date_range("2017-01-01", periods=t, freq="h"),
            "lat": lat,
            "lon": np.arange(w) * 22.5,
            "level": [500, 850],
        },
    )
    ds.to_netcdf(path)
    return ds


# --------------------------------------------------------------------------- the round trip


def test_npy_series_round_trip_through_the_cli(tmp_path, capsys, monkeypatch):
    """Two float channels on an 8 x 16 grid (non-square, not [0, 1]): fit -> test -> forecast
    through the command line; scores and forecasts are in the data's own units."""
    x = series(90, 2, 8, 16)
    np.save(tmp_path / "s.npy", x)
    v = run_values(tmp_path, tmp_path / "s.npy")
    d = [f"--data.{k}={json.dumps(val) if not isinstance(val, str) else val}" for k, val in v["data"].items()]
    common = ["--trainer.precision", "32", "--trainer.channels_last", "false", "--trainer.enable_progress_bar", "false"]
    args = ["fit", "--model.name", "convlstm", "--model.num_hidden", "[8,8]", "--model.filter_size", "3"]
    args += ["--model.patch_size", "2", *d, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    assert main([*args, *common, "--out_dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    split = [line for line in err.splitlines() if "split by time" in line]
    assert len(split) == 1 and "s.npy (npy): 90 steps of 2 x 8x16" in split[0]
    assert "train steps 0-" in split[0] and "val steps" in split[0] and "test steps" in split[0]

    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    model = framecast.load_checkpoint(ckpt)
    assert model.config.channels == 2 and model.config.image_size == (8, 16)
    stored = model.checkpoint_meta["array"]
    assert stored["normalize"] == "standard" and stored["channels"] == ["s[0]", "s[1]"]
    assert stored["shift"] == pytest.approx([100, 200], abs=1.0)  # fitted means, in the data's units

    assert main(["test", "--checkpoint", str(ckpt), "--lpips", "off", *common]) == 0
    metrics = json.loads((tmp_path / "run" / "checkpoints" / "best.test" / "metrics.json").read_text())
    mean = metrics["mean"]
    assert {"mse", "mae", "rmse", "mse_norm", "mse/s[0]", "rmse/s[1]"} <= set(mean)
    assert "ssim" not in mean and "psnr" not in mean and "not computed" in metrics["metrics"]["ssim, psnr"]
    # physical units: channel 1 varies twice as much as channel 0, so its untrained error is larger
    assert mean["rmse/s[1]"] > mean["rmse/s[0]"] > 0.5
    assert metrics["data"]["image_size"] == [8, 16] and metrics["data"]["channels"] == 2

    out = tmp_path / "f.npy"
    assert main(["forecast", str(tmp_path / "s.npy"), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    pred = np.load(out)
    assert pred.shape == (2, 2, 8, 16) and pred.dtype == np.float32
    assert abs(pred[:, 0].mean() - 100) < 10 and abs(pred[:, 1].mean() - 200) < 20  # undone normalisation
    assert (tmp_path / "f.png").stat().st_size > 1000 and (tmp_path / "f.gif").stat().st_size > 1000
    assert "steps 87..89 of" in capsys.readouterr().out  # the last n_context steps by default
    # an explicit precision is obeyed: bf16-mixed forecasts the same within bf16 rounding of
    # normalised values (standard scores), undone into the data's units
    monkeypatch.setenv("FRAMECAST_CACHE", str(tmp_path / "cache"))  # its layout probe: not the user's cache
    out16 = tmp_path / "f16.npy"
    args = ["forecast", str(tmp_path / "s.npy"), "--checkpoint", str(ckpt), "--out", str(out16)]
    assert main([*args, "--precision", "bf16-mixed"]) == 0
    pred16 = np.load(out16)
    scale = np.asarray(stored["scale"], dtype=np.float32)[None, :, None, None]
    assert pred16.dtype == np.float32 and not np.array_equal(pred16, pred)  # it did run in bf16
    assert np.abs((pred16 - pred) / scale).mean() < 0.02
    with pytest.raises(SystemExit):
        main([*args, "--precision", "fp16"])
    assert "--precision" in capsys.readouterr().err


def test_netcdf_round_trip_keeps_variables_coordinates_and_a_forecast_time_axis(tmp_path, capsys):
    ds = weather_nc(tmp_path / "w.nc")
    cfg = resolve_run(build_run_config(run_values(tmp_path, tmp_path / "w.nc", model={**TINY, "name": "predrnn"})))
    assert cfg.config.data.channels == 3 and cfg.config.data.image_size == (
        8,
        16,
    )  # t2m and z at two levels, from the file
    best = fit(cfg)["best_checkpoint"]
    model = framecast.load_checkpoint(best)
    assert model.checkpoint_meta["array"]["channels"] == ["t2m", "z[level=500]", "z[level=850]"]
    res = score(model, cfg)
    assert {"wrmse", "wrmse/t2m", "rmse/z[level=850]"} <= set(res["mean"])
    assert "cos(latitude)" in res["metrics"]["wrmse"]

    out = tmp_path / "f.nc"
    code = main(["forecast", str(tmp_path / "w.nc"), "--checkpoint", best, "--out", str(out), "--start", "40"])
    assert code == 0
    f = xr.open_dataset(out)
    assert f["t2m"].dims == ("time", "lat", "lon") and f["z"].dims == ("time", "level", "lat", "lon")
    assert f["t2m"].attrs["units"] == "K" and list(f["level"].values) == [500, 850]
    np.testing.assert_allclose(f["lat"].values, ds["lat"].values)
    # context: steps 40-42; the forecast's times are the two hours after step 42
    assert list(f["time"].values) == list(ds["time"].values[43:45]) and list(f["lead"].values) == [1, 2]
    assert abs(float(f["t2m"].mean()) - float(ds["t2m"].mean())) < 15
    text = capsys.readouterr().out
    assert "steps 40..42" in text and "2 with truth" in text and "RMSE t2m" in text


def test_zarr_hdf5_npz_and_npy_give_the_same_windows(tmp_path):
    x = series(80, 2, 8, 8)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "a.npz", frames=x)  # uncompressed: memory-mapped in place
    np.savez_compressed(tmp_path / "c.npz", frames=x)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = x
        f["date"] = np.zeros(80)
    xr.Dataset({"v": (("time", "c", "y", "x"), x)}).to_zarr(tmp_path / "a.zarr")
    want = build_datasets(data_cfg(tmp_path / "a.npy"))
    for name in ("a.npz", "c.npz", "a.h5", "a.zarr"):
        got = build_datasets(data_cfg(tmp_path / name))
        for split in ("train", "val", "test"):
            assert len(got[split]) == len(want[split]), name
            torch.testing.assert_close(got[split][1], want[split][1], rtol=1e-5, atol=1e-5)
    src = A.ArraySource(tmp_path / "a.npz")
    assert isinstance(src._open()[0].array, np.memmap)  # read in place, not loaded
    assert isinstance(A.ArraySource(tmp_path / "a.h5")._open()[0].array, h5py.Dataset)


def test_series_split_by_time_a_window_apart_and_clips_by_index(tmp_path, capsys):
    np.save(tmp_path / "s.npy", series(100, 1, 4, 4))
    ds = build_datasets(data_cfg(tmp_path / "s.npy"))  # windows of 5, stride 1
    frames = {s: {int(i) + k for i in d.index for k in range(d.length)} for s, d in ds.items()}
    assert max(frames["train"]) + 5 < min(frames["val"]) and max(frames["val"]) + 5 < min(frames["test"])
    assert max(frames["test"]) == 99 and min(frames["train"]) == 0
    assert "split by time, 5-step gaps, stride 1" in capsys.readouterr().err
    np.save(tmp_path / "c.npy", series(50, 1, 4, 4).reshape(10, 5, 1, 4, 4))  # (N, T, C, H, W)
    clips = build_datasets(data_cfg(tmp_path / "c.npy"))
    assert [list(clips[s].index) for s in ("train", "val", "test")] == [list(range(8)), [8], [9]]
    assert clips["train"][0].shape == (5, 1, 4, 4)
    assert "10 clips of 5 steps, 1 x 4x4, split by index: train 0-7 (8), val 8-8 (1), test 9-9 (1)" in (
        capsys.readouterr().err
    )


def test_normalisation_is_fitted_on_the_training_split_alone_and_streamed(tmp_path, monkeypatch):
    x = series(100, 2, 4, 6).astype(np.float64)
    x[60:] += 1000  # validation and test live elsewhere: they must not move the statistics
    np.save(tmp_path / "s.npy", x.astype(np.float32))
    monkeypatch.setattr(A, "CHUNK_BYTES", 4 * 2 * 4 * 6 * 8)  # 4 steps per chunk: many merges
    cfg = data_cfg(tmp_path / "s.npy")
    ds = build_datasets(cfg)
    a, b = ds["train"].data.segments[0][0], max(ds["train"].index) + ds["train"].length
    train = x[: int(0.8 * (100 - 10))]  # the train span: 80% of the steps left after two 5-step gaps
    assert b == len(train) and a == 0
    meta = ds["train"].meta
    np.testing.assert_allclose(meta["stats"]["mean"], train.mean((0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(meta["stats"]["std"], train.std((0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(ds["train"][0].mean((0, 2, 3)), 0, atol=0.5)  # standardised
    mm = build_datasets(data_cfg(tmp_path / "s.npy", normalize="minmax"))["train"]
    assert float(mm[0].min()) >= 0 and float(mm[0].max()) <= 1 and mm.meta["image_like"]
    assert float(mm.meta["scale"][0]) == pytest.approx(train[:, 0].max() - train[:, 0].min(), rel=1e-5)
    raw = build_datasets(data_cfg(tmp_path / "s.npy", normalize="none"))["train"]
    torch.testing.assert_close(raw[0], torch.from_numpy(x[:5].astype(np.float32)))


# --------------------------------------------------------------------------- models and the task


@pytest.mark.parametrize(
    "name, extra",
    [
        ("convlstm", {}),
        ("convlstm_seq2seq", {}),
        ("predrnn", {"layer_norm": True}),
        ("predrnn_v2", {}),
        ("maxvit", {"window_size": 2, "grid_size": 2}),
    ],
)
def test_every_model_takes_c_channels_on_a_non_square_grid(name, extra):
    pytest.importorskip("timm") if name == "maxvit" else None
    model = framecast.create_model(name, size="test", channels=5, image_size=(16, 32), **extra)
    nc = getattr(model.config, "n_context", 3)
    x = torch.randn(2, nc, 5, 16, 32) * 3 + 1  # normalised values, not [0, 1]
    out = model(x, 3).future(3)
    assert out.shape == (2, 3, 5, 16, 32)
    if extra.get("layer_norm"):
        with pytest.raises(framecast.errors.InputError, match="16x32"):
            model(torch.randn(1, nc, 5, 32, 16), 1)


def test_config_image_size_and_channels_for_arrays_and_videos(tmp_path):
    with pytest.raises(ConfigError, match=r"one number for kth \(square frames\); \[H, W\] is for arrays"):
        build_dataclass(DataConfig, {"name": "kth", "root": "x", "image_size": [32, 64]})
    with pytest.raises(ConfigError, match="data.channels must be 1 .grey. or 3 .RGB., got 2"):
        build_dataclass(DataConfig, {"name": "kth", "root": "x", "channels": 2})
    np.save(tmp_path / "s.npy", series(80, 4, 6, 10))
    cfg = data_cfg(tmp_path / "s.npy")
    assert (cfg.channels, cfg.image_size, cfg.frame_size) == (4, (6, 10), (6, 10))
    small = data_cfg(tmp_path / "s.npy", resize=[3, 5])
    assert small.image_size == (3, 5) and build_datasets(small)["val"][0].shape == (5, 4, 3, 5)
    with pytest.raises(ConfigError, match="data.normalize must be standard, minmax or none"):
        data_cfg(tmp_path / "s.npy", normalize="zscore")


def test_validation_never_opens_data_files(tmp_path, monkeypatch):
    """A config is checked without reading its data: the data's shape is read once, when the run
    is resolved at the entry (framecast.resolve)."""
    import framecast.data.array as array

    np.save(tmp_path / "s.npy", series(80, 4, 6, 10))

    def refuse(cfg):
        raise AssertionError("validation opened a data file")

    monkeypatch.setattr(array, "open_data", refuse)
    cfg = build_run_config(run_values(tmp_path, tmp_path / "s.npy"))
    assert (cfg.data.channels, cfg.data.image_size) == (1, 64)  # the defaults: nothing read yet
    monkeypatch.undo()
    run = resolve_run(cfg)
    assert (run.config.data.channels, run.config.data.image_size) == (4, (6, 10))
    assert (run.model["channels"], run.model["image_size"]) == (4, [6, 10])
    assert resolve_run(run) is run  # resolving happens once


def test_the_range_check_belongs_to_the_data(tmp_path):
    np.save(tmp_path / "s.npy", series(60, 1, 4, 4))
    cfg = build_run_config(run_values(tmp_path, tmp_path / "s.npy"))
    from framecast.data import FrameDataModule
    from framecast.training.runner import make_task

    task, data = make_task(cfg), FrameDataModule(cfg.data)
    data.setup()
    batch = torch.stack([data.datasets["train"][i] for i in range(2)])
    assert batch.min() < 0 and data.value_range is None
    with pytest.raises(FramecastError, match=r"clip values must lie in \[0, 1\]"):
        task._check_batch(batch)  # an image task refuses them
    task.use_array_data(data.array_meta)
    task._check_batch(batch)  # the array task takes them
    assert torch.isfinite(task.loss(batch, None)[0])


def test_a_sigmoid_model_is_refused_on_standardised_arrays(tmp_path):
    np.save(tmp_path / "s.npy", series(60, 1, 4, 4))
    values = run_values(tmp_path, tmp_path / "s.npy", model={"name": "convlstm_seq2seq", "size": "test"})
    with pytest.raises(FramecastError, match="ends in a sigmoid .* set data.normalize: minmax"):
        fit(build_run_config(values))


# --------------------------------------------------------------------------- metrics


def test_physical_metrics_undo_the_normalisation_per_channel():
    pred, target = torch.zeros(1, 2, 2, 4, 4), torch.zeros(1, 2, 2, 4, 4)
    pred[:, :, 0] += 0.5
    pred[:, :, 1] -= 0.25
    scale, shift = torch.tensor([2.0, 10.0]), torch.tensor([273.0, 5.0])
    out = M.per_frame_array(pred, target, shift, scale, ["t", "q"])
    assert torch.allclose(out["rmse/t"], torch.full((1, 2), 1.0, dtype=torch.float64))  # 0.5 * 2
    assert torch.allclose(out["mae/q"], torch.full((1, 2), 2.5, dtype=torch.float64))  # 0.25 * 10
    assert torch.allclose(out["mse"], torch.full((1, 2), (1.0 + 6.25) / 2, dtype=torch.float64))
    assert torch.allclose(out["mse_norm"], torch.full((1, 2), (0.25 + 0.0625) / 2, dtype=torch.float64))


def test_latitude_weighted_rmse_is_weatherbenchs():
    lat = np.array([-60.0, 0.0, 60.0])
    w = np.array(A.lat_weights(lat, 3))
    assert w.mean() == pytest.approx(1) and w[1] / w[0] == pytest.approx(2)  # cos 0 / cos 60
    pred, target = torch.zeros(1, 1, 1, 3, 4), torch.zeros(1, 1, 1, 3, 4)
    pred[..., 0, :] = 3.0  # errors only in the row at -60 degrees
    out = M.per_frame_array(pred, target, torch.zeros(1), torch.ones(1), ["v"], lat_weights=torch.tensor(w))
    assert float(out["wrmse/v"]) == pytest.approx(np.sqrt(w[0] * 9 / 3))  # weighted mean over rows
    assert float(out["rmse/v"]) == pytest.approx(np.sqrt(9 / 3))
    assert float(out["wrmse"]) < float(out["rmse"])  # high latitudes count less


# --------------------------------------------------------------------------- NaNs and errors


def test_a_nan_is_refused_naming_where_it_is(tmp_path):
    weather_nc(tmp_path / "w.nc", nan_at=(17, 2, 3, 5))
    with pytest.raises(FramecastError) as e:
        build_datasets(data_cfg(tmp_path / "w.nc"))
    assert str(e.value) == (
        "w.nc (netcdf): NaN at time step 17 (2017-01-01T17:00), channel 'z[level=850]', row 3, column 5 "
        "(in the training split); fix the data or set data.nan: mask to leave NaNs out of the loss and the metrics"
    )


def test_masked_nans_leave_loss_and_metrics(tmp_path):
    x = series(60, 1, 4, 4)
    x[:, :, 0, 0] = np.nan  # a pixel that never has data (a radar's blind spot)
    x[50:53, :, 2, 2] = np.nan
    np.save(tmp_path / "s.npy", x)
    cfg = build_run_config(run_values(tmp_path, tmp_path / "s.npy", nan="mask"))
    stats = fit(cfg)
    assert stats["val_mse"] is not None and np.isfinite(stats["val_mse"])
    res = score(framecast.load_checkpoint(stats["best_checkpoint"]), cfg)
    assert all(np.isfinite(v) for v in res["mean"].values()) and "masked" in res["metrics"]["nan"]
    # a masked pixel changes no metric, whatever the prediction there
    pred, target = torch.zeros(1, 1, 1, 2, 2), torch.zeros(1, 1, 1, 2, 2)
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[..., 0, 0] = False
    pred[..., 0, 0] = 1e6
    assert float(M.per_frame_array(pred, target, torch.zeros(1), torch.ones(1), ["v"], valid)["mse"]) == 0


def test_bad_input_is_one_line_naming_what_exists(tmp_path):
    weather_nc(tmp_path / "w.nc")
    with pytest.raises(FramecastError, match=r"data.variables: unknown variable 'tp'; choose from: t2m, z"):
        data_cfg(tmp_path / "w.nc", variables=["tp"])
    with pytest.raises(FramecastError, match=r"data.y_dim: no dimension 'rows'; its dimensions: time, lat, lon, level"):
        data_cfg(tmp_path / "w.nc", y_dim="rows")
    np.save(tmp_path / "short.npy", series(12, 1, 4, 4))
    with pytest.raises(FramecastError, match="the series has 12 steps; a window of 5 steps .* at least 60 steps"):
        build_datasets(data_cfg(tmp_path / "short.npy"))
    np.savez(tmp_path / "two.npz", a=series(12, 1, 4, 4), b=series(12, 1, 4, 4))
    with pytest.raises(
        FramecastError, match=r"holds several arrays \(a, b\); name the ones to read with data.variables"
    ):
        data_cfg(tmp_path / "two.npz")
    with pytest.raises(FramecastError, match="data.path is missing"):
        build_dataclass(DataConfig, {"name": "array"})
    with pytest.raises(FramecastError, match="nowhere.npy: file not found"):
        build_datasets(data_cfg(tmp_path / "nowhere.npy"))


def test_a_checkpoint_on_other_channels_or_normalisation_is_refused(tmp_path):
    np.save(tmp_path / "s.npy", series(60, 2, 4, 4))
    np.save(tmp_path / "t.npy", series(60, 2, 4, 4))
    model = framecast.create_model("convlstm", size="test", channels=2, image_size=4, patch_size=2)
    model.checkpoint_meta = {
        "array": {"dataset": "array", "channels": ["s[0]", "s[1]"], "normalize": "standard", "shift": [0, 0]}
    }
    check_model_fits(model, data_cfg(tmp_path / "s.npy"))
    with pytest.raises(FramecastError, match=r"trained on channels s\[0\], s\[1\], but the data has t\[0\], t\[1\]"):
        check_model_fits(model, data_cfg(tmp_path / "t.npy"))
    with pytest.raises(FramecastError, match="trained on data.normalize standard, not minmax"):
        check_model_fits(model, data_cfg(tmp_path / "s.npy", normalize="minmax"))
    with pytest.raises(FramecastError, match="trained on gridded arrays .* not on moving_mnist images"):
        check_model_fits(model, DataConfig(channels=1))


# --------------------------------------------------------------------------- larger than memory


def _rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_a_large_memory_mapped_file_is_streamed_with_bounded_memory(tmp_path):
    """A 256 MB float32 .npy (4096 steps of 4 x 64 x 64): fitting the statistics and reading
    windows touches it through the memory map; the process's own memory grows by a few chunks."""
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(4096, 4, 64, 64))
    for t in range(0, 4096, 512):
        big[t : t + 512] = np.arange(t, t + 512, dtype=np.float32)[:, None, None, None] % 97
    big.flush()
    del big
    peak, stop = [_rss_anon_mb()], threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(_rss_anon_mb())
            time.sleep(0.005)

    base = peak[0]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    tracemalloc.start()
    try:
        ds = build_datasets(data_cfg(path, n_context=10, n_future=10))
        clip = ds["train"][len(ds["train"]) // 2]
        _, traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stop.set()
        watcher.join()
    assert clip.shape == (20, 4, 64, 64)
    assert ds["train"].meta["stats"]["count"][0] > 3000 * 64 * 64  # it did read the training steps
    assert traced < 80 * 2**20, f"numpy allocated {traced / 2**20:.0f} MB at peak for a 256 MB file"
    assert max(peak) - base < 150, f"anonymous memory grew {max(peak) - base:.0f} MB for a 256 MB file"


def test_compare_report_on_a_multi_variable_grid(tmp_path):
    """One report for models and baselines on a 2-variable 8 x 16 grid: per-variable RMSE in
    physical units, no SSIM/PSNR/LPIPS for standardised data, and pictures of a channel."""
    from framecast.evaluation.compare import build_compare_config, compare

    path = tmp_path / "grid.npy"
    np.save(path, series())
    values = {
        "models": {"convlstm": {k: v for k, v in TINY.items() if k != "name"}},
        "baselines": ["copy_last", "blank"],
        "data": {"name": "array", "path": str(path), "n_context": 3, "n_future": 2, "batch_size": 4},
        "trainer": {"max_epochs": 1, "limit_train_batches": 3, **FAST},
        "train": {"image_every_n_steps": 0},
        "out_dir": str(tmp_path / "report"),
        "n_examples": 2,
        "speed_batch": 2,
        "lpips": "off",
    }
    compare(build_compare_config(values), log=lambda *_: None)
    out = tmp_path / "report"
    results = json.loads((out / "results.json").read_text())
    means = {label: r["test"]["mean"] for label, r in results["results"].items()}
    assert set(means) == {"convlstm", "copy_last", "blank"}
    for m in means.values():
        assert "ssim" not in m and "lpips" not in m
    # physical units: `blank` predicts zeros of the normalised scale, i.e. each channel's training
    # mean, so its RMSE is about each channel's spread: 5 / sqrt(2) for channel 0, twice that for 1
    blank = means["blank"]
    per_channel = sorted(k for k in blank if k.startswith("rmse/"))
    assert per_channel == ["rmse/grid[0]", "rmse/grid[1]"]
    assert 2 < blank[per_channel[0]] < 6 and 1.6 < blank[per_channel[1]] / blank[per_channel[0]] < 2.4
    report = (out / "report.md").read_text()
    assert "rmse" in report.lower() and "convlstm" in report
    assert "RMSE [95% interval]" in report and "The test clips overlap" in report  # windows 1 step apart
    assert (out / "examples.png").is_file() and (out / "examples.gif").is_file()
