"""PredBench's imperfect context: drop, duplicate and noise touch the context only, at the rate
asked, reproducibly from the seed whatever the batching."""

import pytest
import torch

from framecast.errors import ConfigError
from framecast.evaluation.robustness import corrupt_context


def clips(b=64, t=14, n_context=10):
    # every frame holds its own index: which frame a position shows is read off its value
    x = torch.arange(t, dtype=torch.float32)[None, :, None, None, None].expand(b, t, 1, 4, 4)
    return (x / t).contiguous(), n_context


def shown(out, t):
    return (out[:, :, 0, 0, 0] * t).round().long()  # (B, T) frame indices


@pytest.mark.parametrize("kind", ["drop", "duplicate"])
def test_frames_are_lost_or_repeated_at_the_rate_and_the_future_is_untouched(kind):
    x, nc = clips()
    out = corrupt_context(x, nc, kind, rate=0.3, seed=1)
    idx = shown(out, x.shape[1])
    assert torch.equal(out[:, nc:], x[:, nc:])  # the future a model is scored on stays the truth
    assert (idx[:, : nc - 1] <= idx[:, 1:nc]).all()  # never back in time
    repeats = (idx[:, 1:nc] == idx[:, : nc - 1]).float().mean().item()
    assert 0.15 < repeats < 0.45, repeats  # about the rate (64 clips x 9 transitions)
    if kind == "duplicate":
        assert (idx[:, nc - 1] == nc - 1).all()  # the newest frame stays last, aligned with the future
    else:
        assert (idx[:, 0] == 0).all()  # the first frame always arrives
    clean = corrupt_context(x, nc, kind, rate=0.0, seed=1)
    assert torch.equal(clean, x)


def test_noise_has_the_asked_deviation_and_stays_in_range():
    x = torch.full((8, 12, 1, 16, 16), 0.5)
    out = corrupt_context(x, 10, "noise", rate=0.1, seed=0)
    delta = out[:, :10] - x[:, :10]
    assert 0.09 < delta.std().item() < 0.11 and torch.equal(out[:, 10:], x[:, 10:])
    edge = corrupt_context(torch.ones(2, 12, 1, 8, 8), 10, "noise", rate=0.5, seed=0)
    assert edge.max() <= 1.0 and edge.min() >= 0.0
    arrays = corrupt_context(torch.ones(2, 12, 1, 8, 8), 10, "noise", rate=0.5, seed=0, value_range=None)
    assert arrays.max() > 1.0  # physical units: not clipped


def test_the_same_seed_gives_the_same_corruption_whatever_the_batching():
    x, nc = clips(b=10)
    whole = corrupt_context(x, nc, "duplicate", 0.4, seed=7)
    parts = torch.cat(
        [
            corrupt_context(x[:4], nc, "duplicate", 0.4, seed=7),
            corrupt_context(x[4:], nc, "duplicate", 0.4, seed=7, first_index=4),
        ]
    )
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, corrupt_context(x, nc, "duplicate", 0.4, seed=8))


def test_bad_settings_are_one_line():
    x, nc = clips(b=2)
    with pytest.raises(ConfigError, match="unknown corruption 'blur'; choose from drop, duplicate, noise"):
        corrupt_context(x, nc, "blur", 0.1, 0)
    with pytest.raises(ConfigError, match="a drop rate is a probability in .0, 1., got 1.5"):
        corrupt_context(x, nc, "drop", 1.5, 0)


def test_every_process_corrupts_its_clips_as_one_process_would():
    """Under DDP rank r of w scores test clips r, r + w, ... (ShardSampler): each clip keeps the
    corruption it gets in one process."""
    from types import SimpleNamespace

    from framecast.training.task import FrameTask

    x, nc = clips(b=8)
    whole = corrupt_context(x, nc, "noise", 0.3, seed=1)
    assert torch.equal(whole[1::2], corrupt_context(x[1::2], nc, "noise", 0.3, seed=1, first_index=1, stride=2))

    task = FrameTask("copy_last", {}, nc, x.shape[1] - nc, {})
    task.corruption = ("noise", 0.3, 1)
    task._trainer = SimpleNamespace(world_size=2, global_rank=1)
    seen = []
    task._score = lambda metrics, batch: seen.append(batch)
    mine = x[1::2]  # rank 1's clips 1, 3, 5, 7 in batches of two
    task.test_step(mine[:2], 0)
    task.test_step(mine[2:], 1)
    assert torch.equal(torch.cat(seen), whole[1::2])
