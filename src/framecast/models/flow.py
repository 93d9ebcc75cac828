"""``flow``: optical-flow extrapolation, the nowcasting baseline, trained on nothing.

Motion is estimated on the last context frames, then the last frame is advected along it,
semi-Lagrangian (backward in time from every target pixel), steady motion assumed:

* ``dis``: OpenCV's Dense Inverse Search flow (Kroeger et al. 2016, "Fast Optical Flow using
  Dense Inverse Search", https://arxiv.org/abs/1603.03590) on uint8 frames, one field per
  frame pair from the channel mean, averaged over the pairs: for video;
* ``lucaskanade``: pysteps' dense Lucas-Kanade (sparse Lucas-Kanade tracking of Shi-Tomasi
  features, interpolated to a dense field; Pulkkinen et al. 2019, "Pysteps: an open-source
  Python library for probabilistic precipitation nowcasting", https://doi.org/10.5194/gmd-12-4185-2019),
  per channel: for gridded fields in physical units;
* ``darts``: pysteps' DARTS (Ruzanski et al. 2011, "Scaled and Translated Image Fitting...",
  https://doi.org/10.1175/2011JTECHA1563.1), a Fourier-domain global fit, per channel;
* ``auto``: ``dis`` where the context lies in [0, 1] (video frames) or pysteps is not installed,
  ``lucaskanade`` otherwise.

Advection is pysteps' semi-Lagrangian scheme (``pysteps.extrapolation.semilagrangian``,
Germann & Zawadzki 2002, https://doi.org/10.1175/1520-0493(2002)130<2859:SDOTPO>2.0.CO;2)
where pysteps is installed, else backward warping with ``cv2.remap`` at k times the motion. Where the
trace leaves the domain the last frame's own value stays (persistence at inflow boundaries).
Needs the ``baselines`` extra: ``pip install framecast[baselines]`` (OpenCV and pysteps).
"""

import contextlib
import functools
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from framecast.errors import ConfigError, FramecastError
from framecast.models.base import Prediction, Predictor
from framecast.registry import register_model

METHODS = ("auto", "dis", "lucaskanade", "darts")
ADVECTION = ("auto", "pysteps", "remap")
EXTRA = "pip install framecast[baselines]"


def _cv2():
    try:
        import cv2
    except ImportError:
        raise FramecastError(f"flow: OpenCV is not installed; {EXTRA}") from None
    return cv2


def _pysteps(what: str):
    """pysteps' ``motion`` and ``extrapolation`` modules (its import banner silenced)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from pysteps import extrapolation, motion
    except ImportError as e:
        if getattr(e, "name", None) in (None, "pysteps") or str(e) == "pysteps":
            raise FramecastError(f"flow: {what} needs pysteps, which is not installed; {EXTRA}") from None
        raise FramecastError(f"flow: pysteps does not import ({e}); {EXTRA} installs a version that does") from None
    return motion, extrapolation


@functools.cache
def has_pysteps() -> bool:
    try:
        _pysteps("")
    except FramecastError:
        return False
    return True


def unavailable() -> str | None:
    """Why ``flow`` cannot run here (one line naming the extra), or None: it needs OpenCV at least."""
    try:
        _cv2()
    except FramecastError as e:
        return str(e)
    return None


@dataclass
class FlowConfig:
    channels: int = 1  # frame channels (follows data.channels)
    method: str = "auto"  # auto | dis | lucaskanade | darts (module docstring)
    n_frames: int = 3  # last context frames the motion is estimated on (at least 2)
    advection: str = "auto"  # auto (pysteps where installed) | pysteps | remap (OpenCV)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"model.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.advection not in ADVECTION:
            raise ConfigError(f"model.advection must be one of {', '.join(ADVECTION)}, got {self.advection!r}")
        if self.n_frames < 2:
            raise ConfigError(f"model.n_frames: motion needs at least 2 frames, got {self.n_frames}")


def dis_motion(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) frames in any units -> (2, H, W) motion (x, y) in pixels per frame: OpenCV's DIS
    flow of each consecutive pair on uint8 frames (the frames' joint range mapped to 0..255),
    averaged."""
    cv2 = _cv2()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    lo, span = float(frames.min()), float(np.ptp(frames))
    u8 = ((frames - lo) / max(span, 1e-12) * 255).round().astype(np.uint8)
    flows = [dis.calc(u8[i], u8[i + 1], None) for i in range(len(u8) - 1)]  # (H, W, 2): x, y
    return np.mean(flows, axis=0).transpose(2, 0, 1)


def pysteps_motion(frames: np.ndarray, method: str) -> np.ndarray:
    """(T, H, W) fields in any units -> (2, H, W) motion (x, y) in pixels per frame, by pysteps'
    ``lucaskanade`` or ``darts``; where it finds no motion (flat fields), zeros."""
    motion, _ = _pysteps(f"method {method}")
    if method == "lucaskanade":
        _cv2()  # pysteps' Lucas-Kanade runs on OpenCV
    estimate = motion.get_method("LK" if method == "lucaskanade" else "darts")
    if float(np.ptp(frames)) < 1e-12:
        return np.zeros((2, *frames.shape[1:]))
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # pysteps warns from its outlier filter when few features are tracked
        if method == "lucaskanade":
            v = estimate(frames.astype(np.float64), verbose=False)
        elif len(frames) < 3:
            raise ConfigError(f"flow: method darts needs at least 3 frames (model.n_frames), got {len(frames)}")
        else:  # DARTS fits N_t temporal, N_x, N_y spatial Fourier modes: N_t < T - 1; an eighth of the grid
            h, w = frames.shape[1:]
            n_t = max(1, min(4, len(frames) - 2))
            v = estimate(frames.astype(np.float64), N_t=n_t, N_x=min(50, w // 8), N_y=min(50, h // 8), verbose=False)
    return np.nan_to_num(np.asarray(v, dtype=np.float64))


def advect(last: np.ndarray, velocity: np.ndarray, n_future: int, use_pysteps: bool) -> np.ndarray:
    """(H, W) field moved along the steady (2, H, W) motion for 1..n_future frames -> (n_future, H, W).
    Values traced in from outside the domain keep the last frame's value there."""
    if use_pysteps:
        _, extrapolation = _pysteps("advection")
        out = extrapolation.get_method("semilagrangian")(
            last.astype(np.float64), velocity, n_future, outval=np.nan, allow_nonfinite_values=True
        )
    else:
        cv2 = _cv2()
        h, w = last.shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        vx, vy = velocity.astype(np.float32)
        src = last.astype(np.float32)
        out = np.stack(
            [
                cv2.remap(
                    src, gx - k * vx, gy - k * vy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan
                )
                for k in range(1, n_future + 1)
            ]
        )
    return np.where(np.isnan(out), last[None], out)


@register_model(
    "flow",
    FlowConfig,
    trainable=False,
    description="optical-flow extrapolation of the last frame (OpenCV / pysteps)",
    paper="https://doi.org/10.5194/gmd-12-4185-2019",
)
class Flow(Predictor):
    """Moves the last context frame along the motion seen in the context (module docstring)."""

    unavailable = staticmethod(unavailable)

    def method_for(self, context: Tensor) -> str:
        m = self.config.method
        if m != "auto":
            return m
        lo, hi = torch.aminmax(context)
        return "dis" if (lo >= 0 and hi <= 1) or not has_pysteps() else "lucaskanade"

    def predict(self, context: Tensor, n_future: int, future: Tensor | None, mask: Tensor | None) -> Prediction:
        cfg = self.config
        method = self.method_for(context)
        use_pysteps = cfg.advection == "pysteps" or (cfg.advection == "auto" and has_pysteps())
        x = context[:, -min(cfg.n_frames, context.shape[1]) :].detach().double().cpu().numpy()  # (B, T, C, H, W)
        b, _, c, h, w = x.shape
        out = np.empty((b, n_future, c, h, w))
        for i in range(b):
            if method == "dis":  # one field per clip, from the channel mean
                v = dis_motion(x[i].mean(axis=1))
            for j in range(c):
                if method != "dis":
                    v = pysteps_motion(x[i, :, j], method)
                out[i, :, j] = advect(x[i, -1, j], v, n_future, use_pysteps)
        return Prediction(torch.from_numpy(out).to(dtype=context.dtype, device=context.device))
