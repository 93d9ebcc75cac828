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
* ``lpips`` (optional): AlexNet LPIPS on [-1, 1] frames, see ``framecast.evaluation.lpips_metric``.
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
        lpips: an optional LPIPS scorer (``framecast.evaluation.lpips_metric.LPIPS``) adding ``lpips``.
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


# --------------------------------------------------------------------------- gridded arrays
#
# Arrays are scored in physical units: predictions and truth are taken back from the
# normalised scale the model works on (x * scale + shift, per channel) first. Nothing is
# clipped. Per frame (clip and horizon step) and channel:
#
# * ``mse/<channel>``, ``mae/<channel>``: per-pixel means; ``rmse/<channel>``: the square root
#   of that frame's MSE (then averaged over frames and clips, as WeatherBench's RMSE);
# * ``wrmse/<channel>`` on latitude-longitude grids: the latitude-weighted RMSE of WeatherBench
#   (Rasp et al. 2020, eq. 1): squared errors weighted by cos(latitude) normalised to mean 1;
# * ``mse``, ``mae``, ``rmse``, ``wrmse``: the mean of the channels' values (in one channel:
#   that channel's); ``mse_norm``: MSE on the normalised scale, channels weighing alike;
# * ``ssim``, ``psnr``: only for image-like data (min-max normalised to [0, 1]), on that scale
#   clipped to [0, 1], as for images.
#
# Masked pixels (NaN in the data, ``data.nan: mask``) count in no metric; a frame with no valid
# pixel in a channel gives NaN there, which the averages leave out.


def array_metric_names(channels: list[str], lat_weights, image_like: bool) -> tuple[str, ...]:
    """The names ``per_frame_array`` returns for these channels."""
    names = ["mse", "mae", "rmse", "mse_norm"] + (["wrmse"] if lat_weights is not None else [])
    for ch in channels:
        names += [f"mse/{ch}", f"mae/{ch}", f"rmse/{ch}"] + ([f"wrmse/{ch}"] if lat_weights is not None else [])
    return tuple(names) + (("ssim", "psnr") if image_like else ())


def per_frame_array(
    pred: Tensor,
    target: Tensor,
    shift: Tensor,
    scale: Tensor,
    channels: list[str],
    valid: Tensor | None = None,
    lat_weights: Tensor | None = None,
    image_like: bool = False,
) -> dict[str, Tensor]:
    """Physical-unit metrics for every clip and horizon step: name -> (B, T) float64 (NaN where
    a frame has no valid pixel).

    Args:
        pred, target: (B, T, C, H, W) on the normalised scale (target without NaNs: masked
            pixels filled with any number and named by ``valid``).
        shift, scale: (C,) the normalisation, ``x_physical = x * scale + shift``.
        channels: the C channel names.
        valid: (B, T, C, H, W) bool, False at masked pixels (None: every pixel counts).
        lat_weights: (H,) cos(latitude) normalised to mean 1, for ``wrmse``.
        image_like: add ``ssim`` and ``psnr`` on the normalised scale clipped to [0, 1].
    """
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(
            f"pred and target must be equal (B, T, C, H, W) shapes, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    p, y = pred.detach().double(), target.detach().double()
    v = torch.ones_like(p) if valid is None else valid.to(p.dtype)
    err_n = (p - y) * v
    err = err_n * scale.to(p).view(1, 1, -1, 1, 1)  # physical: the shift cancels
    n = v.sum((3, 4))  # (B, T, C) valid pixels
    nan = torch.tensor(float("nan"), dtype=p.dtype, device=p.device)

    def mean_px(x: Tensor, count: Tensor = n) -> Tensor:
        return torch.where(count > 0, x / count.clamp_min(1e-12), nan)

    mse = mean_px(err.pow(2).sum((3, 4)))  # (B, T, C)
    mae = mean_px(err.abs().sum((3, 4)))
    rmse = mse.sqrt()
    out = {
        "mse": mse.nanmean(-1),
        "mae": mae.nanmean(-1),
        "rmse": rmse.nanmean(-1),
        "mse_norm": mean_px(err_n.pow(2).sum((3, 4))).nanmean(-1),
    }
    if lat_weights is not None:
        w = lat_weights.to(p).view(1, 1, 1, -1, 1)
        wrmse = mean_px((err.pow(2) * w).sum((3, 4)), (v * w).sum((3, 4))).sqrt()
        out["wrmse"] = wrmse.nanmean(-1)
    for i, ch in enumerate(channels):
        out[f"mse/{ch}"], out[f"mae/{ch}"], out[f"rmse/{ch}"] = mse[..., i], mae[..., i], rmse[..., i]
        if lat_weights is not None:
            out[f"wrmse/{ch}"] = wrmse[..., i]
    if image_like:
        b, t = p.shape[:2]
        p8, y8 = to_uint8_levels(p), to_uint8_levels(y)
        mse8 = (p8 - y8).pow(2).mean((2, 3, 4)).clamp_min(1e-10)
        out["psnr"] = 20 * math.log10(255.0) - 10 * torch.log10(mse8)
        out["ssim"] = ssim_frames(p8.flatten(0, 1), y8.flatten(0, 1)).reshape(b, t)
    return out


def describe_array_metrics(meta: dict) -> dict[str, str]:
    """What each array metric is, for metrics.json and reports (``meta``: the data's
    ``ArrayWindows.meta``)."""
    channels = ", ".join(meta["channels"])
    out = {
        "mse, mae, rmse": f"physical units of each channel ({channels}), per pixel; rmse per frame, then averaged; "
        "without a channel name: the mean over channels",
        "mse_norm": f"MSE on the model's normalised scale ({meta['normalize']}), channels weighing alike",
    }
    out["wrmse"] = (
        "latitude-weighted RMSE (WeatherBench): squared errors weighted by cos(latitude) normalised to mean 1"
        if meta.get("lat_weights") is not None
        else "not computed: the grid has no latitude coordinate"
    )
    out["ssim, psnr"] = (
        "on the min-max normalised [0, 1] scale, clipped, as for images"
        if meta.get("image_like")
        else f"not computed: SSIM and PSNR score images, and data normalised by {meta['normalize']} is not image-like "
        "(data.normalize: minmax scores them on [0, 1])"
    )
    out["lpips"] = "not computed: LPIPS compares photographs through an ImageNet network"
    if meta.get("nan") == "mask":
        out["nan"] = "NaN pixels of the data are masked: left out of the loss and of every metric"
    if meta.get("thresholds"):
        from framecast.evaluation.verification import Verification

        out.update(Verification(1, meta["channels"], meta["thresholds"], meta.get("fss_scales") or []).describe())
    return out
