import pytest
import torch

from framecast.training.schedules import reverse_sampling_probs, sampling_mask, scheduled_sampling_eta


def test_reverse_scheduled_sampling_mnist_values():
    r, eta = reverse_sampling_probs(30_000, 25_000, 50_000, 2_500)
    assert r == pytest.approx(0.932, abs=5e-4)
    assert eta == pytest.approx(0.40)
    assert reverse_sampling_probs(10, 25_000, 50_000, 2_500) == (0.5, 0.5)
    assert reverse_sampling_probs(50_000, 25_000, 50_000, 2_500) == (1.0, 0.0)


def test_scheduled_sampling_eta():
    assert scheduled_sampling_eta(1) == pytest.approx(1 - 2e-5)
    assert scheduled_sampling_eta(25_000) == pytest.approx(0.5)
    assert scheduled_sampling_eta(49_999) == pytest.approx(2e-5, abs=1e-9)
    assert scheduled_sampling_eta(50_000) == 0.0


def test_sampling_mask_shape_and_rates():
    g = torch.Generator().manual_seed(0)
    m = sampling_mask(4000, 10, 10, 1.0, 0.25, g)
    assert m.shape == (4000, 18)
    assert (m[:, :9] == 1).all()
    assert abs(m[:, 9:].mean().item() - 0.25) < 0.02
    assert set(m.unique().tolist()) <= {0.0, 1.0}


def test_phydnet_teacher_forcing_ratio_and_mask():
    from framecast.training.schedules import teacher_forcing_mask, teacher_forcing_ratio

    assert teacher_forcing_ratio(0) == 1.0
    assert teacher_forcing_ratio(100) == pytest.approx(0.7)
    assert teacher_forcing_ratio(400) == 0.0  # floored at 0
    g = torch.Generator().manual_seed(0)
    masks = [teacher_forcing_mask(3, 10, 10, 0.3, g) for _ in range(2000)]
    assert all(m.shape == (3, 18) and (m[:, :9] == 1).all() for m in masks)
    futures = torch.stack([m[:, 9:] for m in masks])  # one draw per batch: all ones or all zeros
    assert all(f.unique().numel() == 1 for f in futures)
    assert abs(futures[:, 0, 0].mean().item() - 0.3) < 0.03
