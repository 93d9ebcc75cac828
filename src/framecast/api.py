"""Forecasting with a trained model: the library's one-call entry point."""

import torch
from torch import Tensor, nn

from framecast.errors import InputError
from framecast.models.base import Predictor


@torch.no_grad()
def forecast(model: nn.Module, context: Tensor, n_future: int) -> Tensor:
    """Predict the ``n_future`` frames after ``context`` with the model's test-time policy.

    Args:
        model: a framecast model (``create_model`` or ``load_checkpoint``).
        context: (B, T, C, H, W) frames in [0, 1]; a single clip (T, C, H, W) is accepted too.
        n_future: number of frames to predict.

    Returns:
        (B, n_future, C, H, W) frames clipped to [0, 1] (same leading shape as ``context``).
    """
    if not isinstance(model, Predictor):
        raise TypeError(f"forecast needs a framecast model, got {type(model).__name__}")
    if not isinstance(context, Tensor):
        raise TypeError(f"context must be a torch.Tensor (B, T, C, H, W), got {type(context).__name__}")
    if n_future < 1:
        raise InputError(f"n_future must be at least 1, got {n_future}")
    single = context.dim() == 4
    x = context[None] if single else context
    if x.dim() == 5 and torch.is_floating_point(x) and (x.min() < 0 or x.max() > 1):
        raise InputError(
            f"context frames must lie in [0, 1], got values from {x.min().item():.3g} to {x.max().item():.3g}"
        )
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    x = x.to(param.device if param is not None else x.device, torch.float32)
    try:
        out = model(x, n_future).future(n_future).float().clamp(0, 1)
    finally:
        model.train(was_training)
    return out[0] if single else out
