"""TaxiBJ and WeatherBench read from files laid out as their distributors publish them (small
ones, built here), with OpenSTL's protocols, and the shipped configs that point at them."""

from pathlib import Path

import numpy as np
import pytest

from framecast import create_model
from framecast.config import build_run_config, load_yaml, merge
from framecast.data import build_datasets
from framecast.errors import FramecastError
from framecast.resolve import resolve_run
from framecast.training.testing import test_model as score

h5py = pytest.importorskip("h5py")
xr = pytest.importorskip("xarray")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAST = {"precision": "32", "channels_last": False, "enable_progress_bar": False}


def taxibj_file(path: Path, first_day: str, days: int, drop: tuple[int, int] | None = None, seed: int = 0) -> None:
    """``days`` days of half-hourly inflow / outflow from ``first_day``, as BJ*_M32x32_T30_InOut.h5
    stores them; ``drop`` = (day, slot) leaves one slot out (an incomplete day)."""
    start = np.datetime64(first_day)
    dates, frames = [], []
    rng = np.random.default_rng(seed)
    for d in range(days):
        day = str(start + np.timedelta64(d, "D")).replace("-", "")
        for slot in range(1, 49):
            if drop == (d, slot):
                continue
            dates.append(f"{day}{slot:02d}".encode())
    n = len(dates)
    t = np.arange(n)[:, None, None, None]
    frames = 50 + 40 * np.sin(2 * np.pi * t / 48) * np.array([1.0, 0.8])[None, :, None, None]
    frames = np.abs(frames + rng.normal(0, 2, (n, 2, 32, 32)))
    with h5py.File(path, "w") as f:
        f["data"] = frames.astype(np.float32)
        f["date"] = np.array(dates)


@pytest.fixture(scope="module")
def taxibj(tmp_path_factory):
    root = tmp_path_factory.mktemp("TaxiBJ")
    taxibj_file(root / "BJ13_M32x32_T30_InOut.h5", "2013-07-01", 4, drop=(1, 20))  # day 2 incomplete
    taxibj_file(root / "BJ14_M32x32_T30_InOut.h5", "2014-03-01", 3)
    taxibj_file(root / "BJ16_M32x32_T30_InOut.h5", "2016-01-01", 60)  # 28 test + 28 val days + more
    (root / "BJ_Meteorology.h5").write_bytes(b"")  # beside them in the download; never read
    return root


def test_taxibj_follows_openstls_protocol(taxibj, capsys):
    values = merge(load_yaml(CONFIGS / "taxibj.yaml"), {"data": {"root": str(taxibj)}})
    cfg = resolve_run(build_run_config(values)).config  # the data's shape read from its files, once
    assert (cfg.data.n_context, cfg.data.n_future, cfg.data.channels, cfg.data.image_size) == (4, 4, 2, 32)
    ds = build_datasets(cfg.data)
    data = ds["test"].data
    assert data.channels == ["inflow", "outflow"]
    assert data.n == (4 - 1 + 3 + 60) * 48  # the incomplete day is left out
    times = data.times
    test_steps = {int(i) + k for i in ds["test"].index for k in range(8)}
    assert min(test_steps) == data.n - 28 * 48 and max(test_steps) == data.n - 1  # the last 28 days
    assert str(times[min(test_steps)]) == "2016-02-02T00:00"
    val_steps = {int(i) + k for i in ds["val"].index for k in range(8)}
    assert max(val_steps) + 8 < min(test_steps)  # a window apart
    train = ds["train"].index
    assert max(train) + 8 < min(int(i) for i in ds["val"].index)
    # no training window spans the missing day or the gaps between the files
    for s in train:
        span = times[s : s + 8]
        assert (np.diff(span) == np.timedelta64(30, "m")).all()
    assert "split by the dataset's protocol" in capsys.readouterr().err
    assert ds["train"].meta["normalize"] == "minmax" and ds["train"].meta["image_like"]


def test_taxibj_scores_flows_and_the_image_metrics_of_openstl(taxibj):
    values = merge(load_yaml(CONFIGS / "taxibj.yaml"), {"data": {"root": str(taxibj), "test_size": 8}})
    values["trainer"] = FAST
    cfg = build_run_config(merge(values, {"model": {"name": "copy_last"}}))
    model = create_model("copy_last", channels=2)
    res = score(model, cfg)
    assert {"ssim", "psnr", "rmse/inflow", "mae/outflow"} <= set(res["mean"]) and res["n_clips"] == 8
    assert 0 < res["mean"]["ssim"] <= 1 and res["mean"]["rmse/inflow"] > 1  # flows, not [0, 1]


def test_taxibj_without_its_files_is_one_line(tmp_path):
    values = merge(load_yaml(CONFIGS / "taxibj.yaml"), {"data": {"root": str(tmp_path)}})
    with pytest.raises(FramecastError, match="no TaxiBJ files .BJ13_M32x32_T30_InOut.h5"):
        build_datasets(build_run_config(values).data)


def weatherbench(root: Path, years=(2010, 2018), steps: int = 30, var: str = "2m_temperature") -> None:
    """WeatherBench's layout: <variable>/<variable>_<year>_5.625deg.nc, hourly, 32 x 64, for the
    ``years`` first to last."""
    import pandas as pd

    folder = root / var
    folder.mkdir(parents=True, exist_ok=True)
    lat = np.linspace(-87.1875, 87.1875, 32)
    lon = np.arange(64) * 5.625
    for y in range(years[0], years[1] + 1):
        t = np.arange(steps)[:, None, None]
        values = 250 + 30 * np.cos(np.deg2rad(lat))[None, :, None] + np.sin(t / 5 + lon[None, None, :] / 40)
        ds = xr.Dataset(
            {"t2m": (("time", "lat", "lon"), values.astype(np.float32), {"units": "K"})},
            coords={"time": pd.date_range(f"{y}-01-01", periods=steps, freq="h"), "lat": lat, "lon": lon},
        )
        ds.to_netcdf(folder / f"{var}_{y}_5.625deg.nc")


def test_weatherbench_follows_openstls_t2m_protocol(tmp_path, capsys):
    weatherbench(tmp_path, years=(2008, 2018))  # 2008-2009 lie in the folder too: never read
    values = merge(load_yaml(CONFIGS / "weatherbench_t2m.yaml"), {"data": {"root": str(tmp_path)}})
    cfg = resolve_run(build_run_config(values)).config  # the data's shape read from its files, once
    assert (cfg.data.n_context, cfg.data.n_future, cfg.data.image_size, cfg.data.channels) == (12, 12, (32, 64), 1)
    ds = build_datasets(cfg.data)
    data = ds["train"].data
    assert data.n == 9 * 30 and len(data.sources) == 9  # 2010-2018
    years = {s: {int(str(data.times[i])[:4]) for i in d.index} for s, d in ds.items()}
    assert years == {"train": set(range(2010, 2016)), "val": {2016}, "test": {2017, 2018}}
    for s, d in ds.items():  # every window ends inside its split's years too
        assert {int(str(data.times[i + 23])[:4]) for i in d.index} <= years[s]
    assert len(ds["val"]) == 30 - 24 + 1  # every hour a window start
    assert ds["train"][0].shape == (24, 1, 32, 64)
    w = np.array(ds["train"].meta["lat_weights"])
    assert w.shape == (32,) and w.mean() == pytest.approx(1) and w[0] < w[15]
    assert "2010-01-01..2015-01-02" in capsys.readouterr().err


def test_weatherbench_scores_the_latitude_weighted_rmse(tmp_path):
    weatherbench(tmp_path)
    values = merge(load_yaml(CONFIGS / "weatherbench_t2m.yaml"), {"data": {"root": str(tmp_path), "test_size": 4}})
    values["trainer"] = FAST
    cfg = build_run_config(merge(values, {"model": {"name": "copy_last"}}))
    res = score(create_model("copy_last"), cfg)
    assert {"wrmse", "wrmse/t2m", "rmse/t2m"} <= set(res["mean"]) and "ssim" not in res["mean"]
    assert 0 < res["mean"]["wrmse/t2m"] < 5  # kelvin


def test_weatherbench_missing_years_or_variables_are_named(tmp_path):
    weatherbench(tmp_path, years=(2010, 2016))
    values = merge(load_yaml(CONFIGS / "weatherbench_t2m.yaml"), {"data": {"root": str(tmp_path)}})
    with pytest.raises(FramecastError, match="needs the years 2017, 2018 at 5.625 deg, which are missing"):
        resolve_run(build_run_config(values))
    with pytest.raises(FramecastError, match="no folder 'geopotential_500' .* found: 2m_temperature"):
        resolve_run(build_run_config(merge(values, {"data": {"variables": ["geopotential_500"]}})))
