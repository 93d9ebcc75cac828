"""The frame-feedback rollout of the PredRNN family (and the stacked ConvLSTM benchmark).

At step ``t`` the network reads one frame and predicts frame ``t+1``. Step 0 reads the true
first frame; later steps read a mix of the true frame and the previous prediction,

    input_t = mask_t * true_t + (1 - mask_t) * prediction_{t}     (unclipped)

where ``mask`` is drawn by the training policy (schedules.py). With no mask (test time) the
context steps read true frames and the future steps read predictions.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

StepFn = Callable[[Tensor, Any], tuple[Tensor, Any]]


def feedback_rollout(
    step: StepFn,
    context: Tensor,
    n_future: int,
    future: Tensor | None = None,
    mask: Tensor | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Tensor:
    """Run ``step`` over the clip and return the T-1 next-frame predictions.

    Args:
        step: ``(frame (B, C, H, W), state) -> (next_frame (B, C, H, W), state)``; ``state``
            starts as ``None``.
        context: (B, Tc, C, H, W) true context frames.
        n_future: frames to predict after the context.
        future: (B, n_future, C, H, W) true future frames; needed only when ``mask`` is given.
        mask: (B, T-2) probabilities of reading the true frame at input steps 1..T-2.
        memory_format: layout of the per-step tensors (channels_last runs faster on CPUs).

    Returns:
        (B, T-1, C, H, W): predictions of frames 1..T-1 of the clip, T = Tc + n_future.
    """
    n_context = context.shape[1]
    total = n_context + n_future
    if mask is not None:
        if future is None:
            raise ValueError("a teacher-forcing mask needs the true future frames")
        if mask.shape != (context.shape[0], total - 2):
            raise ValueError(
                f"mask must have shape (B, T-2) = {(context.shape[0], total - 2)}, got {tuple(mask.shape)}"
            )
    frames = context if future is None else torch.cat([context, future], dim=1)  # (B, T', C, H, W)
    # One contiguous (B, C, H, W) tensor per step, made once, outside the loop.
    steps = [frames[:, t].contiguous(memory_format=memory_format) for t in range(frames.shape[1])]
    mask = None if mask is None else mask.to(frames.dtype)[:, :, None, None, None]  # (B, T-2, 1, 1, 1)

    preds: list[Tensor] = []
    state: Any = None
    for t in range(total - 1):
        if t == 0:
            x = steps[0]
        elif mask is not None:
            m = mask[:, t - 1]
            x = m * steps[t] + (1 - m) * preds[-1]
        elif t < n_context:
            x = steps[t]
        else:
            x = preds[-1]
        x_next, state = step(x, state)
        preds.append(x_next)
    return torch.stack(preds, dim=1)  # (B, T-1, C, H, W)
