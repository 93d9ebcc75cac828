"""Scheduled sampling schedules as pure functions of the iteration.

``itr`` counts optimiser iterations from 1, as the official PredRNN loop does
(``for itr in range(1, max_iterations + 1)``); the task passes ``global_step + 1``.
"""

import math

import torch
from torch import Tensor


def scheduled_sampling_eta(itr: int, start: float = 1.0, changing_rate: float = 2e-5, stop_iter: int = 50_000) -> float:
    """PredRNN's probability of feeding the true future frame at iteration ``itr``.

    eta starts at ``start`` and is lowered by ``changing_rate`` every iteration before use;
    it is 0 from ``stop_iter`` on.
    """
    if itr >= stop_iter:
        return 0.0
    return max(0.0, start - changing_rate * itr)


def reverse_sampling_probs(
    itr: int, step_1: int = 25_000, step_2: int = 50_000, alpha: float = 2_500.0
) -> tuple[float, float]:
    """PredRNN-V2's reverse scheduled sampling: (encoder prob r_eta, decoder prob eta).

    The encoder's probability of reading the true frame rises from 0.5 to 1 exponentially
    between ``step_1`` and ``step_2``; the decoder's falls linearly from 0.5 to 0.
    """
    if itr < step_1:
        return 0.5, 0.5
    if itr < step_2:
        r_eta = 1.0 - 0.5 * math.exp(-float(itr - step_1) / alpha)
        eta = 0.5 - 0.5 * (itr - step_1) / (step_2 - step_1)
        return r_eta, eta
    return 1.0, 0.0


def sampling_mask(
    batch: int,
    n_context: int,
    n_future: int,
    encoder_prob: float,
    decoder_prob: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(B, T-2) 0/1 mask over input steps 1..T-2: 1 feeds the true frame, 0 the prediction.

    The first ``n_context - 1`` entries (context steps) are drawn with ``encoder_prob``, the
    rest (future steps) with ``decoder_prob``; one draw per clip and step, shared by all pixels.
    """
    total = n_context + n_future
    probs = torch.full((batch, total - 2), decoder_prob)
    probs[:, : n_context - 1] = encoder_prob
    return torch.bernoulli(probs, generator=generator).to(device)


def teacher_forcing_ratio(epoch: int, decay: float = 0.003) -> float:
    """PhyDNet's probability that a batch's future steps read the true frames at ``epoch``
    (counted from 0): ``max(0, 1 - decay * epoch)``, as OpenSTL's openstl/methods/phydnet.py
    and the official PhyDNet training loop decay it."""
    return max(0.0, 1.0 - decay * epoch)


def teacher_forcing_mask(
    batch: int,
    n_context: int,
    n_future: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """(B, T-2) 0/1 mask of PhyDNet's teacher forcing: the context steps read true frames; one
    draw for the whole batch decides whether every future step reads the true frame (with
    probability ``ratio``) or every one reads the prediction."""
    total = n_context + n_future
    mask = torch.ones(batch, total - 2)
    if torch.rand((), generator=generator).item() >= ratio:
        mask[:, n_context - 1 :] = 0.0
    return mask.to(device)


def onecycle_lr(
    progress: float, max_lr: float, pct_start: float = 0.1, div_factor: float = 25.0, final_div_factor: float = 1e4
) -> float:
    """One-cycle learning rate at ``progress`` in [0, 1] of the training budget.

    Rises linearly from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of
    the budget, then falls on a cosine to ``max_lr / div_factor / final_div_factor`` (the
    defaults of ``torch.optim.lr_scheduler.OneCycleLR``, whose linear warm-up differs only in
    shape). The budget may be steps or wall-clock time, so the schedule fits either.
    """
    progress = min(max(progress, 0.0), 1.0)
    start, end = max_lr / div_factor, max_lr / div_factor / final_div_factor
    if progress < pct_start:
        return start + (max_lr - start) * progress / pct_start
    frac = (progress - pct_start) / max(1e-12, 1 - pct_start)
    return end + (max_lr - end) * 0.5 * (1 + math.cos(math.pi * frac))
