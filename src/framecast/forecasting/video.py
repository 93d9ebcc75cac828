"""Forecasting a video file: context, forecast and truth side by side, as a GIF or an MP4."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from framecast.errors import FramecastError
from framecast.evaluation import metrics as M
from framecast.forecasting.forecaster import Forecaster
from framecast.layers import as_hw, show_size
from framecast.media import to_uint8, write_animation


def forecast_video(
    model: nn.Module,
    video: str | Path,
    out: str | Path,
    start: int = 0,
    start_time: float | None = None,
    n_future: int | None = None,
    fps: float | None = None,
    crop: str = "center",
    precision: str = "auto",
) -> dict[str, Any]:
    """Forecast ``video`` from frame ``start`` (or ``start_time`` seconds) and write ``out``
    (.gif or .mp4): the video on the left, the forecast on the right. Returns per-frame MSE /
    SSIM against the truth where the video goes on."""
    from framecast.data.video import FrameOptions, read_frames, video_fps

    f = Forecaster(model, n_future, precision=precision)
    rate = video_fps(video)
    if start_time is not None:
        if rate is None:
            raise FramecastError(f"{video}: no frame rate known; give --start (a frame index) instead of --start-time")
        start = int(round(start_time * rate))
    if f.size is not None and as_hw(f.size)[0] != as_hw(f.size)[1]:
        raise FramecastError(f"the model reads {show_size(f.size)} frames: video forecasts need a square-frame model")
    opts = FrameOptions(image_size=as_hw(f.size)[0] if f.size is not None else 64, channels=f.channels, crop=crop)
    frames = read_frames(video, opts, start=start, count=f.n_context + f.n_future, strict=False)
    if len(frames) < f.n_context:
        raise FramecastError(
            f"{video}: only {len(frames)} frames from frame {start}, the model needs {f.n_context} context frames"
        )
    clip = torch.from_numpy(frames).float() / 255  # (T, C, H, W)
    context, truth = clip[: f.n_context], clip[f.n_context :]
    pred = torch.from_numpy(f.predict(context)).permute(0, 3, 1, 2)  # (N, C, H, W)
    scores = []
    if len(truth):
        k = len(truth)
        per = M.per_frame(pred[None, :k], truth[None])
        scores = [{"frame": i + 1, "mse": float(per["mse"][0, i]), "ssim": float(per["ssim"][0, i])} for i in range(k)]
    write_forecast(context, pred, truth, out, fps or rate or 4.0)
    return {
        "start": start,
        "n_context": f.n_context,
        "n_future": f.n_future,
        "truth_frames": len(truth),
        "scores": scores,
    }


def write_forecast(context: Tensor, pred: Tensor, truth: Tensor, out: str | Path, fps: float) -> Path:
    """Side-by-side frames: left the video (context, then truth while it lasts), right the
    forecast; a green bar marks context frames, red marks predicted ones."""

    out = Path(out)
    h, w = context.shape[-2:]
    bar = max(2, h // 16)
    tiles = []
    blank = torch.zeros_like(context[0])
    for t in range(len(context) + len(pred)):
        if t < len(context):
            left, right, color = context[t], context[t], (0, 200, 0)
        else:
            i = t - len(context)
            left = truth[i] if i < len(truth) else blank
            right, color = pred[i], (220, 0, 0)
        img = np.concatenate([to_uint8(left[None])[0], np.full((h, 2, 3), 128, np.uint8), to_uint8(right[None])[0]], 1)
        top = np.zeros((bar, img.shape[1], 3), np.uint8)
        top[:] = color
        tiles.append(np.concatenate([top, img], 0))
    scale = max(1, 256 // max(h, w))
    tiles = [np.kron(t, np.ones((scale, scale, 1), np.uint8)) for t in tiles]
    return write_animation(tiles, out, fps)
