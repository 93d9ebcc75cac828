"""What every framecast model is: a pure ``nn.Module`` from context frames to future frames.

Models never see the run config, the step counter or the optimiser. The training task hands
them the true future frames and a teacher-forcing mask as plain arguments.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from framecast.errors import ConfigError, InputError
from framecast.layers import as_hw, feedback_rollout, patchify, unpatchify


def check_cells(
    model: str, num_hidden: Any, filter_size: int, *, least: int = 1, least_why: str = "", shared: str = ""
) -> None:
    """The config checks a recurrent stack shares: at least ``least`` positive widths (why:
    ``least_why``), one width for every cell where a state passes through all of them (why:
    ``shared``; empty: widths may differ), and an odd, positive gate-convolution kernel."""
    hidden = tuple(num_hidden)
    if len(hidden) < least or (hidden and min(hidden) < 1):
        count = "one positive width" if least == 1 else f"{least} positive widths"
        raise ConfigError(f"{model}: num_hidden must list at least {count}{least_why}, got {hidden}")
    if shared and len(set(hidden)) != 1:
        raise ConfigError(
            f"{model}: num_hidden: cells share one width ({shared}), got {hidden}; use e.g. {(hidden[0],) * len(hidden)}"
        )
    if filter_size < 1 or filter_size % 2 == 0:
        raise ConfigError(f"{model}: filter_size must be odd and positive, got {filter_size}")


@dataclass
class Prediction:
    """A model's output.

    Attributes:
        frames: (B, K, C, H, W) predictions of the last K frames of the clip
            ``cat([context, future])``; K >= n_future. Recurrent models with frame feedback
            return K = T-1 (every next-frame prediction), the others K = n_future.
        losses: extra loss terms, already weighted, that the task adds to the frame MSE
            (e.g. PredRNN-V2's memory decoupling loss).
    """

    frames: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)

    def future(self, n_future: int) -> Tensor:
        """(B, n_future, C, H, W): the predicted future frames."""
        return self.frames[:, -n_future:]


class Predictor(nn.Module):
    """Base class: checks inputs at the boundary; subclasses implement ``predict``.

    Class attributes:
        uses_mask: the model reads its own predictions back and honours a teacher-forcing mask.
    """

    uses_mask: bool = False

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def forward(
        self,
        context: Tensor,
        n_future: int,
        future: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Prediction:
        """Predict ``n_future`` frames after ``context``.

        Args:
            context: (B, Tc, C, H, W) frames: in [0, 1] for images, normalised values for arrays.
            n_future: number of frames to predict.
            future: (B, n_future, C, H, W) true future frames (training only).
            mask: (B, Tc + n_future - 2) teacher-forcing probabilities (training only).
        """
        self.check_input(context)
        if future is not None and (
            future.shape[0] != context.shape[0] or future.shape[1] != n_future or future.shape[2:] != context.shape[2:]
        ):
            raise ValueError(
                f"future frames must have shape (B, n_future, C, H, W) = "
                f"{(context.shape[0], n_future, *context.shape[2:])}, got {tuple(future.shape)}"
            )
        return self.predict(context, n_future, future, mask)

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        raise NotImplementedError

    def check_input(self, context: Tensor) -> None:
        """Raise ``InputError`` (a ``ValueError``) naming expected and actual shapes for a wrong input."""
        cfg = self.config
        if not isinstance(context, Tensor) or context.dim() != 5:
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise InputError(f"context must be a (B, T, C, H, W) tensor, got {shape}")
        channels = getattr(cfg, "channels", None)
        if channels is not None and context.shape[2] != channels:
            raise InputError(
                f"context has {context.shape[2]} channels but the model expects {channels} (B, T, C, H, W); got {tuple(context.shape)}"
            )
        size = getattr(cfg, "image_size", None)
        if size is not None and self.fixed_size and tuple(context.shape[-2:]) != as_hw(size):
            h, w = as_hw(size)
            got = f"{context.shape[-2]}x{context.shape[-1]}"
            raise InputError(f"context frames are {got} but the model expects {h}x{w}")
        patch = getattr(cfg, "patch_size", 1)
        if context.shape[-1] % patch or context.shape[-2] % patch:
            raise InputError(
                f"frame size {context.shape[-2]}x{context.shape[-1]} is not divisible by patch_size {patch}"
            )
        if not torch.is_floating_point(context):
            raise InputError(f"context must be float frames in [0, 1], got dtype {context.dtype}")

    @classmethod
    def from_openstl(
        cls, state: dict[str, Tensor], channels: int = 1
    ) -> tuple[dict[str, Any], dict[str, Tensor], list[str]]:
        """Read OpenSTL weights (wrapping prefixes such as ``model.`` already removed).

        Returns the config values read off the weight shapes, the weights renamed to this
        model's ``state_dict`` names, and notes (one line each) on what was dropped or assumed,
        e.g. weights OpenSTL builds but never uses in its forward pass. ``framecast convert
        --from openstl`` calls it; models without it cannot be converted.
        """
        raise NotImplementedError(f"{cls.__name__} has no OpenSTL conversion")

    # Models whose parameters depend on the frame size (layer norm, attention) set this.
    fixed_size: bool = False
    # Models whose frames come out of a sigmoid (values in [0, 1] only) say so: they cannot
    # predict data normalised outside [0, 1] (standardised arrays).
    bounded_output: bool = False
    # Frame-by-frame recurrent models set this; they have ``step(x, state) -> (next, state)`` on
    # patchified frames (the step that ``feedback_rollout`` runs) and a ``patch_size``.
    streams: bool = False

    def frame_step(self, frame: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Read one (B, C, H, W) frame; return the prediction of the next frame and the new
        state (``state`` starts as None). Streaming forecasts use it to keep the recurrent state."""
        if not self.streams:
            raise NotImplementedError(f"{type(self).__name__} predicts from a window of frames, not frame by frame")
        p = self.config.patch_size
        x = patchify(frame[:, None], p)[:, 0].contiguous(memory_format=self.memory_format)
        y, state = self.step(x, state)
        return unpatchify(y[:, None], p)[:, 0], state

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout the recurrent loop runs in: that of the model's spatial conv weights.

        ``model.to(memory_format=torch.channels_last)`` switches the whole loop to channels-last,
        which runs faster on CPUs; no layout copy then happens inside the loop.
        """
        for p in self.parameters():
            if p.dim() != 4 or p.shape[-1] * p.shape[-2] == 1:
                continue
            cl, plain = p.is_contiguous(memory_format=torch.channels_last), p.is_contiguous()
            if cl and plain:  # e.g. a conv reading one grey channel: both layouts at once, look on
                continue
            return torch.channels_last if cl else torch.contiguous_format
        return torch.contiguous_format


class FeedbackPredictor(Predictor):
    """A frame-by-frame recurrent model with frame feedback (ConvLSTM, PredRNN++, MIM, MAU):
    subclasses define ``step(x, state) -> (next, state)`` on patchified frames and a
    ``config.patch_size``; ``predict`` rolls it with ``feedback_rollout`` over the clip and
    returns the T-1 next-frame predictions, honouring the teacher-forcing mask."""

    uses_mask = True
    streams = True  # frame_step (Predictor) runs self.step frame by frame

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        p = self.config.patch_size
        fut = None if future is None else patchify(future, p)
        frames = feedback_rollout(
            self.step, patchify(context, p), n_future, fut, mask, memory_format=self.memory_format
        )
        return Prediction(unpatchify(frames, p))  # (B, T-1, C, H, W)
