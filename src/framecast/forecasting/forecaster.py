"""The ``Forecaster``: predict the frames that follow from a trained model, for arrays in memory
and streams (one frame at a time)."""

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from framecast import speed
from framecast.errors import FramecastError
from framecast.layers import as_hw


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
    bf16-mixed on this CPU, once per machine and model (cached; ``framecast.speed.precision``), and
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
    ``pack_weights``: running bf16-mixed on a CPU with oneDNN bf16, the Forecaster runs a copy of
    the model whose convolutions hold their weights in bf16, reordered for oneDNN once per input
    shape instead of on every call (``framecast.speed.packed``): the same forecast, the official
    PredRNN's clip at batch 1 1.7x as fast on an AMX Xeon. ``auto`` (default): only where the
    packed copy measures at least 1.2x as fast at batch 1 on this machine (cached); ``True``:
    always; ``False``: never. Also a snapshot of the weights.
    ``compile`` (``framecast.speed.compile``): compile the model's recurrent ``step`` (models
    without one: their forward pass) with ``torch.compile`` (inductor, with its C++ wrapper where
    it builds; needs a C++ compiler) when the Forecaster is built, on warm-up forecasts of zeros that take every path
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
        pack_weights: bool | str = "auto",
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
        # convolutions running on prepacked bf16 weights (framecast.speed.packed; auto: where they pay here)
        self.model, self.packed = speed.prepare_for_inference(
            self.model,
            self.precision,
            self.device,
            pack=pack_weights,
            n_context=self.n_context,
            n_future=self.n_future,
            image_size=self.size or 64,
        )
        self.compile_seconds = 0.0  # compiling and the compiled warm-up forecasts
        self.compile_options: dict = {}  # inductor's options that built it
        self.compiled = False
        self.reset()
        if compile:
            self.compiled = speed.compile_forecaster(self, model, log)

    def _autocast(self):
        return speed.autocast(self.precision, self.device.type)

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
    (framecast.speed.precision)."""
    accelerator = {"cpu": "cpu", "cuda": "cuda"}.get(device.type, device.type)
    return speed.resolve_precision(
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
