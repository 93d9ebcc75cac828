"""Frame metrics on the future frames, batched in torch, per horizon step.

Conventions (PredRNN's official evaluation; OpenSTL's MSE/MAE are the same):

* predictions are clipped to [0, 1] first;
* ``mse`` / ``mae``: per-frame SUM over pixels and channels on the [0, 1] scale, averaged over
  frames and clips ("MSE per frame" in the papers);
* ``mse_pixel`` / ``mae_pixel``: per-pixel means on the [0, 1] scale;
* ``ssim``: frames to uint8 by truncation (``np.uint8(x * 255)`` as the official code does),
  then SSIM as ``skimage.metrics.structural_similarity`` with its defaults (7x7 uniform window,
  sample covariance, K1 0.01, K2 0.03, data range 255, mean over the window-valid region),
  per clip and frame, averaged over channels;
* ``psnr``: on the same uint8 frames, ``20 log10(255) - 10 log10(mse_per_pixel)`` per frame.
* ``lpips`` (optional): AlexNet LPIPS on [-1, 1] frames, see ``framecast.lpips_metric``.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = ("mse", "mae", "mse_pixel", "mae_pixel", "ssim", "psnr")


def to_uint8_levels(x: Tensor) -> Tensor:
    """[0, 1] frames to uint8 levels (as float64), truncating as ``np.uint8(x * 255)`` does."""
    return torch.floor(x.clamp(0, 1).double() * 255)


def ssim_frames(pred: Tensor, target: Tensor, win_size: int = 7, data_range: float = 255.0) -> Tensor:
    """SSIM of (N, C, H, W) frames on the uint8 scale, as skimage computes it; returns (N,)."""
    if min(pred.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs frames of at least {win_size}x{win_size}, got {tuple(pred.shape[-2:])}")
    n, c, h, w = pred.shape
    x = pred.reshape(n * c, 1, h, w).double()
    y = target.reshape(n * c, 1, h, w).double()
    # skimage filters with reflect padding and then crops (win_size-1)/2 pixels from each side,
    # so only windows wholly inside the image count: a 'valid' mean filter gives the same.
    mean = lambda z: F.avg_pool2d(z, win_size, stride=1)  # noqa: E731
    npix = win_size**2
    cov_norm = npix / (npix - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(n, c).mean(dim=1)


def per_frame(
    pred: Tensor, target: Tensor, lpips: Callable[[Tensor, Tensor], Tensor] | None = None
) -> dict[str, Tensor]:
    """Every metric for every clip and horizon step: name -> (B, T) float64.

    Args:
        pred: (B, T, C, H, W) predicted future frames (clipped to [0, 1] here).
        target: (B, T, C, H, W) true future frames in [0, 1].
        lpips: an optional LPIPS scorer (``framecast.lpips_metric.LPIPS``) adding ``lpips``.
    """
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(
            f"pred and target must be equal (B, T, C, H, W) shapes, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    b, t = pred.shape[:2]
    p = pred.detach().clamp(0, 1).double()
    y = target.detach().double()
    err = p - y
    dims = (2, 3, 4)
    out = {
        "mse": err.pow(2).sum(dims),
        "mae": err.abs().sum(dims),
        "mse_pixel": err.pow(2).mean(dims),
        "mae_pixel": err.abs().mean(dims),
    }
    p8, y8 = to_uint8_levels(p), to_uint8_levels(y)
    mse8 = (p8 - y8).pow(2).mean(dims).clamp_min(1e-10)  # identical frames: capped, not infinite
    out["psnr"] = 20 * math.log10(255.0) - 10 * torch.log10(mse8)
    out["ssim"] = ssim_frames(p8.flatten(0, 1), y8.flatten(0, 1)).reshape(b, t)
    if lpips is not None:
        out["lpips"] = lpips(pred, target)
    return out


def compute(pred: Tensor, target: Tensor, lpips: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict[str, float]:
    """Metrics averaged over clips and horizon steps, e.g. ``{"mse": 23.9, "ssim": 0.94, ...}``."""
    return {k: v.mean().item() for k, v in per_frame(pred, target, lpips).items()}
