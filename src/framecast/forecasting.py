"""Forecasting a user's own frames: the ``Forecaster`` (arrays, streaming) and ``forecast_video``
(a video file in, a GIF or MP4 of context, prediction and truth out)."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from framecast import metrics as M
from framecast.errors import FramecastError


def _as_frames(frames: Any, channels: int, size: int | None) -> Tensor:
    """(T, H, W), (T, H, W, C) or (T, C, H, W) uint8 or [0, 1] floats -> (T, C, H, W) float."""
    x = torch.as_tensor(np.asarray(frames))
    if x.dim() == 3:
        x = x[:, None]
    elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4:
        raise FramecastError(f"frames must be (T, H, W), (T, H, W, C) or (T, C, H, W), got shape {tuple(x.shape)}")
    x = x.float() / 255 if not torch.is_floating_point(x) else x.float()
    if x.shape[1] != channels:
        raise FramecastError(f"the model reads {channels}-channel frames, got {x.shape[1]} channels {tuple(x.shape)}")
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        raise FramecastError(
            f"the model reads {size}x{size} frames, got {x.shape[-2]}x{x.shape[-1]}; resize them first"
        )
    if x.min() < 0 or x.max() > 1:
        raise FramecastError("float frames must lie in [0, 1] (uint8 frames are divided by 255)")
    return x


class Forecaster:
    """Predict the frames that follow, from a trained model.

    >>> f = Forecaster(framecast.load_checkpoint("runs/x/checkpoints/best.ckpt"))
    >>> future = f.predict(context)          # (n_future, H, W, C) floats in [0, 1]
    >>> for frame in stream:                 # streaming, one frame at a time
    ...     future = f.push(frame)           # None until n_context frames were seen

    Recurrent models (``model.streams``: ConvLSTM, PredRNN) keep their state across ``push``
    calls: each new frame costs one step, and the forecast rolls forward from a copy of the
    state. Window models (MaxViT) predict from the last ``n_context`` frames.
    """

    def __init__(self, model: nn.Module, n_future: int | None = None, n_context: int | None = None) -> None:
        self.model = model.eval()
        cfg = model.config
        meta = getattr(model, "checkpoint_meta", {})  # the horizon the model was trained for
        self.n_context = n_context or getattr(cfg, "n_context", None) or meta.get("n_context", 10)
        self.n_future = n_future or getattr(cfg, "n_future", None) or meta.get("n_future", 10)
        self.channels = getattr(cfg, "channels", 1)
        self.size = getattr(cfg, "image_size", None)
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        self.reset()

    def reset(self) -> None:
        self._state: Any = None
        self._next: Tensor | None = None
        self._window: list[Tensor] = []
        self.seen = 0

    @torch.no_grad()
    def predict(self, context: Any, n_future: int | None = None) -> np.ndarray:
        """Frames after ``context`` (T >= 1 frames; see ``_as_frames`` for layouts)."""
        x = _as_frames(context, self.channels, self.size).to(self.device)
        n = n_future or self.n_future
        if not self.model.streams and x.shape[0] < self.n_context:
            raise FramecastError(f"the model reads {self.n_context} context frames, got {x.shape[0]}")
        y = self.model(x[None], n).future(n).clamp(0, 1)[0]
        return y.permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def push(self, frame: Any, n_future: int | None = None) -> np.ndarray | None:
        """Add one frame; returns the forecast of the next ``n_future`` frames once
        ``n_context`` frames have been seen (None before)."""
        x = _as_frames(np.asarray(frame)[None], self.channels, self.size).to(self.device)[0]
        n = n_future or self.n_future
        self.seen += 1
        if self.model.streams:
            self._next, self._state = self.model.frame_step(x[None], self._state)
            if self.seen < self.n_context:
                return None
            preds, nxt, state = [self._next], self._next, self._state
            for _ in range(n - 1):
                nxt, state = self.model.frame_step(nxt, state)
                preds.append(nxt)
            y = torch.stack(preds, dim=1)[0].clamp(0, 1)
        else:
            self._window = [*self._window, x][-self.n_context :]
            if len(self._window) < self.n_context:
                return None
            y = self.model(torch.stack(self._window)[None], n).future(n).clamp(0, 1)[0]
        return y.permute(0, 2, 3, 1).cpu().numpy()


def forecast_video(
    model: nn.Module,
    video: str | Path,
    out: str | Path,
    start: int = 0,
    start_time: float | None = None,
    n_future: int | None = None,
    fps: float | None = None,
    crop: str = "center",
) -> dict[str, Any]:
    """Forecast ``video`` from frame ``start`` (or ``start_time`` seconds) and write ``out``
    (.gif or .mp4): the video on the left, the forecast on the right. Returns per-frame MSE /
    SSIM against the truth where the video goes on."""
    from framecast.data.video import FrameOptions, read_frames, video_fps

    f = Forecaster(model, n_future)
    rate = video_fps(video)
    if start_time is not None:
        if rate is None:
            raise FramecastError(f"{video}: no frame rate known; give --start (a frame index) instead of --start-time")
        start = int(round(start_time * rate))
    opts = FrameOptions(image_size=f.size or 64, channels=f.channels, crop=crop)
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
    from framecast.io import atomic_write
    from framecast.visualize import _to_uint8

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
        img = np.concatenate(
            [_to_uint8(left[None])[0], np.full((h, 2, 3), 128, np.uint8), _to_uint8(right[None])[0]], 1
        )
        top = np.zeros((bar, img.shape[1], 3), np.uint8)
        top[:] = color
        tiles.append(np.concatenate([top, img], 0))
    scale = max(1, 256 // max(h, w))
    tiles = [np.kron(t, np.ones((scale, scale, 1), np.uint8)) for t in tiles]
    suffix = out.suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        imgs = [Image.fromarray(t) for t in tiles]
        atomic_write(
            out,
            lambda fh: imgs[0].save(
                fh, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0
            ),
        )
    elif suffix == ".mp4":
        _write_mp4(tiles, out, fps)
    else:
        raise FramecastError(f"{out}: write a .gif or an .mp4")
    return out


def _write_mp4(tiles: list[np.ndarray], out: Path, fps: float) -> None:
    import io
    from fractions import Fraction

    import av

    from framecast.io import atomic_write

    buf = io.BytesIO()
    h, w = (tiles[0].shape[0] // 2) * 2, (tiles[0].shape[1] // 2) * 2
    with av.open(buf, mode="w", format="mp4") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for t in tiles:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(t[:h, :w]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    atomic_write(out, lambda fh: fh.write(buf.getvalue()))
