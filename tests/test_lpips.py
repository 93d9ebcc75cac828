"""LPIPS: a clear line when its weights are missing, and a working metric when present.

No AlexNet weights can be downloaded here, so the test writes a randomly initialised
torchvision AlexNet state dict: the loading path and the metric's basic properties are real,
the absolute values are not the published ones.
"""

import pytest
import torch

from framecast.errors import FramecastError

lpips = pytest.importorskip("lpips", reason="the optional lpips extra is not installed")


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    from framecast.evaluation.lpips_metric import LPIPS, try_lpips

    monkeypatch.setenv("FRAMECAST_ALEXNET", str(tmp_path / "alexnet-owt-7be5be79.pth"))
    with pytest.raises(FramecastError, match=r"alexnet-owt-7be5be79.pth is missing; put .* there"):
        LPIPS()
    lines = []
    assert try_lpips(lines.append) is None and "LPIPS skipped" in lines[0]


def test_lpips_with_local_weights(tmp_path, monkeypatch):
    import torchvision

    from framecast.evaluation import metrics
    from framecast.evaluation.lpips_metric import LPIPS

    torch.manual_seed(0)
    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    monkeypatch.setenv("FRAMECAST_ALEXNET", str(path))
    scorer = LPIPS()
    target = torch.rand(2, 3, 1, 64, 64)
    near = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    far = torch.rand_like(target)
    same = scorer(target, target)
    assert same.shape == (2, 3) and same.abs().max() < 1e-6
    assert (scorer(near, target) < scorer(far, target)).all()
    res = metrics.compute(near, target, lpips=scorer)
    assert "lpips" in res and res["lpips"] > 0
    # a file that is not AlexNet weights is named
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(FramecastError, match="not torchvision AlexNet weights"):
        LPIPS()
