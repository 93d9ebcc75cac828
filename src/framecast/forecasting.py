"""Forecasting a user's own frames: the ``Forecaster`` (arrays, streaming) and ``forecast_video``
(a video file in, a GIF or MP4 of context, prediction and truth out)."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from framecast import metrics as M
from framecast.errors import FramecastError
from framecast.layers import as_hw, show_size


def _as_frames(frames: Any, channels: int, size: int | tuple[int, int] | None) -> Tensor:
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
    if size is not None and tuple(x.shape[-2:]) != as_hw(size):
        h, w = as_hw(size)
        raise FramecastError(f"the model reads {h}x{w} frames, got {x.shape[-2]}x{x.shape[-1]}; resize them first")
    if x.min() < 0 or x.max() > 1:
        raise FramecastError("float frames must lie in [0, 1] (uint8 frames are divided by 255)")
    return x.contiguous()  # one layout whatever came in: a compiled step is built for its strides


class Forecaster:
    """Predict the frames that follow, from a trained model.

    >>> f = Forecaster(framecast.load_checkpoint("runs/x/checkpoints/best.ckpt"))
    >>> future = f.predict(context)          # (n_future, H, W, C) floats in [0, 1]
    >>> for frame in stream:                 # streaming, one frame at a time
    ...     future = f.push(frame)           # None until n_context frames were seen

    Recurrent models (``model.streams``: ConvLSTM, PredRNN) keep their state across ``push``
    calls: each new frame costs one step, and the forecast rolls forward from a copy of the
    state. Window models (MaxViT) predict from the last ``n_context`` frames.

    ``precision``: ``auto`` (default) measures the model's forward pass at batch 1 in fp32 and
    bf16-mixed on this CPU, once per machine and model (cached; ``framecast.precision``), and
    keeps the faster (on a GPU: bf16-mixed where supported); ``32`` or ``bf16-mixed`` is obeyed.
    ``channels_last``: ``auto`` (default) measures both memory layouts in the same probe (also
    with an explicit ``precision``); where the other layout than the model's is faster, the
    Forecaster runs a copy of the model in it: the caller's weights are never moved, and the copy
    is a snapshot (build a new Forecaster after loading other weights). Where nothing is measured
    (``$FRAMECAST_PRECISION`` pinned, a GPU) the model's layout is kept. At batch 1 the layout
    matters more than a training run's probe says (the official PredRNN, README "Benchmarks").
    ``True`` / ``False`` is obeyed (a copy where it differs from the model's).
    A bf16-mixed forecast of 10 frames stays within 0.005 mean absolute difference per pixel,
    [0, 1] scale, of the fp32 one, and its MSE within 1% of fp32's (MaxViT, whose chunks feed back
    bf16 context: 0.03 and 10%; ``tests/test_precision.py``).
    ``pack_weights`` (default): running bf16-mixed on a CPU, the Forecaster runs a copy of the
    model whose convolutions hold their weights in bf16, reordered for oneDNN once per input
    shape instead of on every call (``framecast.packed``): the same forecast, the official
    PredRNN's clip at batch 1 1.7x as fast here. Also a snapshot of the weights.
    ``compile``: compile the model's recurrent ``step`` (models without one: their forward
    pass) with ``torch.compile`` (inductor, with its C++ wrapper where it builds; needs a C++
    compiler) when the Forecaster is built, on warm-up forecasts of zeros that take every path
    ``predict`` and ``push`` take. It fuses each step's gate arithmetic into a few kernels: the
    official PredRNN's clip at batch 1 ran 1.4-1.8x as fast here after 21-31 s of compiling
    (``benchmarks/batch1.py``, README "Benchmarks"), so it pays for long streams or many clips, not
    for one. Off by default. Where compiling fails (now, or later for a new frame size) the
    Forecaster says why in one line and runs eagerly (``compiled`` then False). Forecasts
    differ from eager ones by rounding (fused arithmetic; tested). A new input shape
    recompiles (seconds); past torch's recompile limit (8 graphs per model class, the warm-up
    excepted) dynamo runs that shape eagerly.
    ``log`` receives the one-line choice of ``auto`` and what compiling did (default: stderr;
    None: silent).
    """

    def __init__(
        self,
        model: nn.Module,
        n_future: int | None = None,
        n_context: int | None = None,
        precision: str = "auto",
        log: Any = "stderr",
        channels_last: bool | str = "auto",
        pack_weights: bool = True,
        compile: bool = False,
    ) -> None:
        cfg = model.config
        meta = getattr(model, "checkpoint_meta", {})  # the horizon the model was trained for
        self.n_context = n_context or getattr(cfg, "n_context", None) or meta.get("n_context", 10)
        self.n_future = n_future or getattr(cfg, "n_future", None) or meta.get("n_future", 10)
        self.channels = getattr(cfg, "channels", 1)
        self.size = getattr(cfg, "image_size", None)
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        log = _logger(log)
        self.choice = _resolve_choice(
            model, precision, channels_last, self.device, self.n_context, self.n_future, self.size, log
        )
        self.precision = self.choice.precision
        self.model = _in_layout(model.eval(), self.choice.channels_last)
        self.packed = 0  # convolutions running on prepacked bf16 weights (framecast.packed)
        if pack_weights and self.precision == "bf16-mixed" and self.device.type == "cpu":
            from framecast.packed import pack_convolutions

            self.model, self.packed = pack_convolutions(self.model)
        self.compile_seconds = 0.0  # compiling and the compiled warm-up forecasts
        self.compile_options: dict = {}  # inductor's options that built it
        self.compiled = False
        self.reset()
        if compile:
            self.compiled = self._compile(model, log)

    def _compile(self, caller: nn.Module, log) -> bool:
        """Compile a copy's ``step`` (or ``forward``) and build it on warm-up forecasts of zeros
        through ``predict`` and ``push``; eager again, with one line saying why, where that
        fails. Whether it compiled."""
        import copy
        import time

        if self.model is caller:  # never touch the caller's model
            self.model = copy.deepcopy(caller)
        name = "step" if callable(getattr(self.model, "step", None)) else "forward"
        # eager first: a model that fails fails here, as itself; packed convolutions fit their
        # weights to these shapes (what the compiled graphs will trace)
        self._warm_up()
        eager, why = getattr(self.model, name), ""
        t0 = time.perf_counter()
        # inductor's C++ wrapper calls the kernels with less overhead (the official PredRNN's clip
        # ~8% faster here, compiling ~6 s longer); where it cannot be built, its Python one
        for options in ({"cpp_wrapper": True}, {}):
            try:
                compiled = torch.compile(eager, options=options)
                setattr(self.model, name, compiled)
                with _recompile_limit_fails():  # a graph dynamo gives up on is a failure, not silent eager
                    self._warm_up()
            except Exception as e:  # no C++ compiler, an op inductor does not take, ...
                vars(self.model).pop(name, None)  # the class's own method again
                why = _reason(e)
                continue
            self.compile_seconds = time.perf_counter() - t0
            self.compile_options = options
            setattr(self.model, name, self._guarded(compiled, eager, name, log))
            if log:
                wrapper = "C++" if options.get("cpp_wrapper") else "Python"
                log(
                    f"compile: the model's {name} compiled (torch.compile, inductor, {wrapper} wrapper) "
                    f"in {self.compile_seconds:.1f} s"
                )
            return True
        if log:
            log(f"compile: torch.compile of the model's {name} failed, forecasting eagerly ({why})")
        return False

    def _warm_up(self) -> None:
        """Forecasts of zeros through ``predict`` and ``push`` (n_context frames, the last with
        its forecast), as a user's calls make them; then a fresh stream."""
        h, w = as_hw(self.size or 64)
        zeros = np.zeros((self.n_context, self.channels, h, w), np.float32)  # (T, C, H, W): any C
        self.predict(zeros)
        for frame in zeros:
            self.push(frame)
        self.reset()

    def _guarded(self, compiled, eager, name: str, log):
        """``compiled``; where a call of it fails (a recompilation, e.g. for a new frame size,
        that inductor cannot build) and the eager step does not, eager from then on, said in one
        line. An error eager raises too is the caller's: raised, compiling kept."""
        failed = False

        def call(*args, **kwargs):
            nonlocal failed
            if failed:  # a rollout that took this wrapper before it failed keeps calling it
                return eager(*args, **kwargs)
            try:
                return compiled(*args, **kwargs)
            except FramecastError:
                raise
            except Exception as e:
                out = eager(*args, **kwargs)  # raises the caller's own error, if that is what it was
                failed = True
                vars(self.model).pop(name, None)
                self.compiled = False
                if log:
                    log(f"compile: recompiling the model's {name} failed, forecasting eagerly ({_reason(e)})")
                return out

        return call

    def _autocast(self):
        from framecast.precision import autocast

        return autocast(self.precision, self.device.type)

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
        with self._autocast():
            y = self.model(x[None], n).future(n).float().clamp(0, 1)[0]
        return y.permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def push(self, frame: Any, n_future: int | None = None) -> np.ndarray | None:
        """Add one frame; returns the forecast of the next ``n_future`` frames once
        ``n_context`` frames have been seen (None before)."""
        x = _as_frames(np.asarray(frame)[None], self.channels, self.size).to(self.device)[0]
        n = n_future or self.n_future
        self.seen += 1
        if self.model.streams:
            with self._autocast():
                self._next, self._state = self.model.frame_step(x[None], self._state)
            if self.seen < self.n_context:
                return None
            preds, nxt, state = [self._next], self._next, self._state
            with self._autocast():
                for _ in range(n - 1):
                    nxt, state = self.model.frame_step(nxt, state)
                    preds.append(nxt)
            y = torch.stack(preds, dim=1)[0].float().clamp(0, 1)
        else:
            self._window = [*self._window, x][-self.n_context :]
            if len(self._window) < self.n_context:
                return None
            with self._autocast():
                y = self.model(torch.stack(self._window)[None], n).future(n).float().clamp(0, 1)[0]
        return y.permute(0, 2, 3, 1).cpu().numpy()


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's weights are stored channels-last (``Predictor.memory_format``)."""
    return getattr(model, "memory_format", torch.contiguous_format) == torch.channels_last


def _in_layout(model: nn.Module, channels_last: bool) -> nn.Module:
    """``model`` itself where it is in the layout already, else a copy converted to it (a
    snapshot: later changes to the caller's model do not reach the copy)."""
    if is_channels_last(model) == channels_last or not any(p.dim() == 4 for p in model.parameters()):
        return model
    import copy

    twin = copy.deepcopy(model)
    return twin.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _recompile_limit_fails():
    """Within: room for this Forecaster's graphs (dynamo keeps the graphs of every instance of a
    model class under one function, 8 by default), and dynamo raises where it would still give
    up compiling and run eagerly without a word."""
    import contextlib

    import torch._dynamo.config as dynamo_config

    wanted = {"fail_on_recompile_limit_hit": True, "recompile_limit": max(64, dynamo_config.recompile_limit)}
    settings = {k: v for k, v in wanted.items() if hasattr(dynamo_config, k)}
    return dynamo_config.patch(**settings) if settings else contextlib.nullcontext()


def _reason(e: BaseException) -> str:
    """The cause of a compile failure in one line (dynamo wraps inductor's in BackendCompilerFailed)."""
    inner = getattr(e, "inner_exception", None)
    inner = e if inner is None else inner
    first = (str(inner).splitlines() or [""])[0]
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


def _logger(log):
    """``"stderr"`` -> a function printing ``framecast: <msg>`` there; a function or None as is."""
    if log != "stderr":
        return log
    import sys

    def to_stderr(msg: str) -> None:
        print(f"framecast: {msg}", file=sys.stderr)

    return to_stderr


def _resolve_choice(
    model: nn.Module, precision: str, channels_last, device: torch.device, n_context, n_future, size, log
):
    """The Forecaster's precision and layout: ``auto`` measured at batch 1 for inference
    (framecast.precision)."""
    from framecast.precision import resolve

    accelerator = {"cpu": "cpu", "cuda": "cuda"}.get(device.type, device.type)
    return resolve(
        model,
        precision,
        channels_last,
        accelerator=accelerator,
        kind="infer",
        batch=1,
        n_context=n_context,
        n_future=n_future,
        image_size=size or 64,
        unprobed_layout=is_channels_last(model),  # pinned, a GPU: nothing measured, nothing moved
        log=log,
    )


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


# --------------------------------------------------------------------------- gridded arrays

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


def _rows(context: np.ndarray, pred: np.ndarray, truth: np.ndarray, c: int) -> tuple[float, float]:
    values = [context[:, c], pred[:, c]] + ([truth[:, c]] if len(truth) else [])
    both = np.concatenate([v.ravel() for v in values])
    both = both[np.isfinite(both)]
    return (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)


def plot_forecast(
    context: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray,
    picked: list[int],
    names: list[str],
    path: Path,
    cmap: str = "viridis",
    max_columns: int = 8,
) -> Path:
    """A PNG: per picked channel a row of the last context step and the forecast steps (evenly
    chosen, at most ``max_columns``) and, where known, a row of the truth, one colour scale and
    colour bar per channel."""
    from framecast.io import atomic_write_bytes
    from framecast.visualize import plt

    n = len(pred)
    steps = np.unique(np.linspace(0, n - 1, min(n, max_columns - 1)).round().astype(int))
    rows = [(c, kind) for c in picked for kind in (("forecast", "truth") if len(truth) else ("forecast",))]
    h, w = pred.shape[-2:]
    fig, axes = plt.subplots(
        len(rows),
        len(steps) + 1,
        figsize=(1.6 * (len(steps) + 1) * max(1.0, w / h) + 1, 1.7 * len(rows)),
        squeeze=False,
    )
    for r, (c, kind) in enumerate(rows):
        lo, hi = _rows(context, pred, truth, c)
        im = axes[r, 0].imshow(context[-1, c], cmap=cmap, vmin=lo, vmax=hi)
        axes[r, 0].set_title("last context" if r == 0 else "", fontsize=8)
        axes[r, 0].set_ylabel(f"{names[c]}\n{kind}", fontsize=8)
        for j, k in enumerate(steps):
            ax = axes[r, j + 1]
            frames = pred if kind == "forecast" else truth
            if k < len(frames):
                ax.imshow(frames[k, c], cmap=cmap, vmin=lo, vmax=hi)
            if r == 0:
                ax.set_title(f"+{k + 1}", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=list(axes[r]), fraction=0.02, pad=0.01)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def forecast_gif(
    context: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray,
    picked: list[int],
    names: list[str],
    path: Path,
    cmap: str = "viridis",
    fps: float = 2.0,
) -> Path:
    """An animated GIF: the context steps, then each forecast step (and the truth beside it
    where known), per picked channel with its colour bar."""
    import io

    from PIL import Image

    from framecast.io import atomic_write
    from framecast.visualize import plt

    h, w = pred.shape[-2:]
    cols = 2 if len(truth) else 1
    scales = {c: _rows(context, pred, truth, c) for c in picked}
    images = []
    for t in range(len(context) + len(pred)):
        fig, axes = plt.subplots(
            len(picked), cols, figsize=(2.6 * cols * max(1.0, w / h) + 0.8, 2.2 * len(picked)), squeeze=False
        )
        for r, c in enumerate(picked):
            lo, hi = scales[c]
            if t < len(context):
                panels = [(context[t], f"context {t - len(context) + 1}")] * cols
            else:
                k = t - len(context)
                panels = [(pred[k], f"forecast +{k + 1}")]
                if cols == 2:
                    panels.append((truth[k] if k < len(truth) else None, f"truth +{k + 1}"))
            for j, (frame, title) in enumerate(panels):
                ax = axes[r, j]
                if frame is not None:
                    im = ax.imshow(frame[c], cmap=cmap, vmin=lo, vmax=hi)
                ax.set_title(f"{names[c]}: {title}", fontsize=8, color="green" if t < len(context) else "red")
                ax.set_xticks([])
                ax.set_yticks([])
            fig.colorbar(im, ax=list(axes[r]), fraction=0.04, pad=0.02)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        plt.close(fig)
        images.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    atomic_write(
        path,
        lambda fh: images[0].save(
            fh, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        ),
    )
    return path
