"""Parameter-free baselines that every report includes: a model is only worth something where
it beats them. On built-in Moving MNIST, ``blank`` scores about 143 MSE per frame and
``copy_last`` about 223. ``linear`` (here) and ``flow`` (models/flow.py) extrapolate the
context's trend and motion."""

from dataclasses import dataclass

import torch
from torch import Tensor

from framecast.errors import ConfigError
from framecast.models.base import Prediction, Predictor
from framecast.registry import register_model


@dataclass
class BaselineConfig:
    channels: int = 1  # frame channels (follows data.channels)


@register_model("copy_last", BaselineConfig, trainable=False, description="repeat the last context frame")
class CopyLast(Predictor):
    """Predicts that nothing moves: every future frame is the last context frame."""

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        return Prediction(context[:, -1:].expand(-1, n_future, -1, -1, -1).clone())


@register_model("blank", BaselineConfig, trainable=False, description="predict empty (zero) frames")
class Blank(Predictor):
    """Predicts empty frames: on sparse data such as Moving MNIST a surprisingly strong baseline."""

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        b, _, c, h, w = context.shape
        return Prediction(context.new_zeros(b, n_future, c, h, w))


@dataclass
class LinearConfig:
    channels: int = 1  # frame channels (follows data.channels)
    n_frames: int = 0  # last context frames the trend is fitted on (0: all of them; at least 2)
    # clip predictions to [lo, hi]; None: to the range of the context (per clip and channel)
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.n_frames == 1 or self.n_frames < 0:
            raise ConfigError(f"model.n_frames: a trend needs at least 2 frames (0: all), got {self.n_frames}")
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            raise ConfigError(f"model.value_range must be [lo, hi] with lo < hi, got {list(self.value_range)}")


@register_model(
    "linear", LinearConfig, trainable=False, description="per-pixel linear trend of the context, clipped to its range"
)
class LinearTrend(Predictor):
    """Extrapolates every pixel's least-squares line through the last context frames, clipped
    to the range of values the context holds (``value_range``: a given one). Works on any scale:
    video frames in [0, 1] and normalised physical fields alike."""

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        n = context.shape[1] if self.config.n_frames == 0 else min(self.config.n_frames, context.shape[1])
        x = context[:, -n:].float()
        t = torch.arange(n, dtype=x.dtype, device=x.device) - (n - 1) / 2  # centred times: slope and mean decouple
        mean = x.mean(1, keepdim=True)
        slope = (t.view(1, -1, 1, 1, 1) * (x - mean)).sum(1, keepdim=True) / t.pow(2).sum().clamp_min(1e-12)
        ahead = (n - 1) / 2 + torch.arange(1, n_future + 1, dtype=x.dtype, device=x.device)
        pred = mean + slope * ahead.view(1, -1, 1, 1, 1)
        if self.config.value_range is not None:
            pred = pred.clamp(*self.config.value_range)
        else:
            seen = context.float()
            lo, hi = seen.amin(dim=(1, 3, 4), keepdim=True), seen.amax(dim=(1, 3, 4), keepdim=True)
            pred = torch.maximum(torch.minimum(pred, hi), lo)
        return Prediction(pred.to(context.dtype))
