"""The parameter-free baselines ``flow`` and ``linear`` on synthetic clips: video in [0, 1] and
float fields in physical units."""

import importlib.util

import numpy as np
import pytest
import torch

from framecast.errors import ConfigError, FramecastError
from framecast.registry import create_model, get_entry

needs_cv2 = pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="needs OpenCV (framecast[baselines])")
needs_pysteps = pytest.mark.skipif(
    importlib.util.find_spec("pysteps") is None, reason="needs pysteps (framecast[baselines])"
)


def blob_clip(b=2, t=12, c=1, size=48, v=(1.5, 1.0), scale=1.0, offset=0.0, seed=0) -> torch.Tensor:
    """(B, T, C, H, W) Gaussian blobs translating at ``v`` (x, y) pixels per frame, values
    ``offset + scale * blob`` (video: offset 0, scale 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = np.zeros((b, t, c, size, size))
    for i in range(b):
        x0, y0 = rng.uniform(12, 18, size=2)
        for k in range(t):
            cx, cy = x0 + v[0] * k, y0 + v[1] * k
            for j in range(c):
                out[i, k, j] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (4.0 + j) ** 2))
    return torch.from_numpy(offset + scale * out).float()


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).pow(2).mean())


def scores(name: str, clip: torch.Tensor, n_context: int = 6, **cfg) -> tuple[float, float]:
    """(MSE of ``name``, MSE of copy_last) on the future of ``clip``."""
    c = clip.shape[2]
    nf = clip.shape[1] - n_context
    context, future = clip[:, :n_context], clip[:, n_context:]
    with torch.no_grad():
        pred = create_model(name, channels=c, **cfg)(context, nf).future(nf)
        last = create_model("copy_last", channels=c)(context, nf).future(nf)
    assert pred.shape == future.shape and pred.dtype == clip.dtype
    return mse(pred, future), mse(last, future)


def test_registered_untrained():
    for name in ("flow", "linear"):
        assert not get_entry(name).trainable


@needs_cv2
@pytest.mark.parametrize("channels", [1, 3])
def test_flow_dis_beats_copy_last_on_a_moving_blob(channels):
    clip = blob_clip(c=channels)
    ours, last = scores("flow", clip, method="dis")
    assert ours < 0.3 * last, (ours, last)
    auto, _ = scores("flow", clip)  # video in [0, 1]: auto picks DIS
    assert auto == pytest.approx(ours)


@needs_cv2
def test_flow_remap_advection_without_pysteps():
    ours, last = scores("flow", blob_clip(), method="dis", advection="remap")
    assert ours < 0.3 * last, (ours, last)


@needs_pysteps
@needs_cv2
@pytest.mark.parametrize("method", ["auto", "lucaskanade", "darts"])
def test_flow_on_a_field_in_physical_units(method):
    # a 2-channel field around 280 K with 15 K anomalies, normalised as (x - 280) / 10
    clip = (blob_clip(c=2, scale=15.0, offset=280.0) - 280.0) / 10.0
    ours, last = scores("flow", clip, method=method)
    # DARTS' global Fourier fit finds only part of one small blob's motion on a 48x48 grid
    assert ours < (0.9 if method == "darts" else 0.5) * last, (method, ours, last)


@needs_pysteps
def test_flow_still_field_stays_still():
    clip = torch.full((1, 8, 1, 32, 32), 3.5)
    ours, _ = scores("flow", clip, method="lucaskanade")
    assert ours == pytest.approx(0.0, abs=1e-10)


def test_flow_config_errors():
    with pytest.raises(ConfigError, match="method"):
        create_model("flow", method="farneback")
    with pytest.raises(ConfigError, match="n_frames"):
        create_model("flow", n_frames=1)


def test_flow_names_the_extra_when_a_library_is_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2" or name.startswith("pysteps"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(FramecastError, match=r"pip install framecast\[baselines\]"):
        scores("flow", blob_clip(), method="dis")


@pytest.mark.parametrize("channels", [1, 3])
def test_linear_on_a_ramp_is_near_exact_and_clipped(channels):
    t = torch.arange(12, dtype=torch.float64).view(1, -1, 1, 1, 1)
    w = torch.linspace(0, 1, 16, dtype=torch.float64).view(1, 1, 1, 1, -1)
    ramp = (0.05 + 0.01 * t + 0.5 * w).expand(2, 12, channels, 16, 16).float()  # in [0.05, 0.66]
    context, future = ramp[:, :8], ramp[:, 8:]
    with torch.no_grad():
        pred = create_model("linear", channels=channels)(context, 4).future(4)
    assert pred.shape == future.shape
    seen_max = float(context.max())
    inside = future <= seen_max
    assert inside.any() and (~inside).any()
    assert torch.allclose(pred[inside], future[inside], atol=1e-5)  # exact where the future stays in range
    assert torch.allclose(pred[~inside], torch.tensor(seen_max))  # clipped to the context's range elsewhere
    with torch.no_grad():
        free = create_model("linear", channels=channels, value_range=(0.0, 1.0))(context, 4).future(4)
    assert torch.allclose(free, future, atol=1e-5)


def test_linear_on_a_field_in_physical_units_and_fewer_frames():
    t = torch.arange(10, dtype=torch.float32).view(1, -1, 1, 1, 1)
    field = (-3.0 + 0.2 * t + torch.randn(1, 1, 2, 8, 8)).expand(3, 10, 2, 8, 8)  # normalised, beyond [0, 1]
    ours, last = scores("linear", field, n_context=6, value_range=(-100.0, 100.0), n_frames=3)
    assert ours < 1e-8 < last
    with pytest.raises(ConfigError, match="n_frames"):
        create_model("linear", n_frames=1)
    with pytest.raises(ConfigError, match="value_range"):
        create_model("linear", value_range=(1.0, 0.0))


def test_compare_scores_linear_and_flow_and_skips_flow_without_opencv(tmp_path, monkeypatch):
    import json

    from framecast.evaluation.compare import build_compare_config, compare
    from framecast.models.flow import Flow

    values = {
        "models": {"copy_last_again": {"name": "copy_last"}},
        "data": {"n_context": 4, "n_future": 3, "batch_size": 4, "train_size": 8, "val_size": 4, "test_size": 6},
        "trainer": {"enable_progress_bar": False},
        "out_dir": str(tmp_path / "report"),
        "n_examples": 2,
        "speed_batch": 2,
        "lpips": "off",
    }
    if importlib.util.find_spec("cv2") is not None:
        results = compare(build_compare_config(values), log=lambda *_: None)
        assert {"linear", "flow"} <= set(results)
        # the same model twice: same clips, same scores, no difference holds
        pairs = json.loads((tmp_path / "report" / "results.json").read_text())["uncertainty"]["pairwise"]["mse"]
        twin = next(p for p in pairs if {p["a"], p["b"]} == {"copy_last", "copy_last_again"})
        assert twin["diff"] == 0 and twin["better"] is None
    monkeypatch.setattr(Flow, "unavailable", staticmethod(lambda: "flow: OpenCV is not installed; pip install x"))
    values["out_dir"] = str(tmp_path / "without")
    lines = []
    results = compare(build_compare_config(values), log=lines.append)
    assert "flow" not in results and "linear" in results
    assert "[flow] skipped: flow: OpenCV is not installed; pip install x" in lines
    assert "Not scored: `flow`" in (tmp_path / "without" / "report.md").read_text()
