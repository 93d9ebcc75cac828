import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from framecast.data.moving_mnist import fixed_test_set, shipped_digits
from framecast.evaluation import metrics as M


def _skimage(pred, target):
    p = np.uint8(np.clip(pred.numpy(), 0, 1) * 255)
    t = np.uint8(target.numpy() * 255)
    ssim, psnr = [], []
    for b in range(p.shape[0]):
        for i in range(p.shape[1]):
            ssim.append(structural_similarity(t[b, i, 0], p[b, i, 0]))
            psnr.append(peak_signal_noise_ratio(t[b, i, 0], p[b, i, 0]))
    return np.mean(ssim), np.mean(psnr)


@pytest.mark.parametrize("kind", ["random", "real"])
def test_ssim_and_psnr_agree_with_skimage(kind):
    torch.manual_seed(0)
    if kind == "random":
        target = torch.rand(2, 3, 1, 64, 64)
    else:
        target = torch.from_numpy(fixed_test_set(shipped_digits("test"), 0, 2, length=3)).float().div(255)[:, :, None]
    pred = (target + 0.2 * torch.randn_like(target)).clamp(-0.1, 1.1)
    ours = M.compute(pred, target)
    ssim, psnr = _skimage(pred, target)
    assert abs(ours["ssim"] - ssim) < 1e-3
    assert abs(ours["psnr"] - psnr) < 1e-3


def test_rgb_ssim_averages_channels():
    torch.manual_seed(1)
    target = torch.rand(1, 1, 3, 32, 32)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    p = np.uint8(pred[0, 0].permute(1, 2, 0).numpy() * 255)
    t = np.uint8(target[0, 0].permute(1, 2, 0).numpy() * 255)
    assert abs(M.compute(pred, target)["ssim"] - structural_similarity(t, p, channel_axis=2)) < 1e-3


def test_mse_conventions_and_per_horizon():
    target = torch.zeros(2, 3, 1, 8, 8)
    pred = torch.zeros(2, 3, 1, 8, 8)
    pred[:, 1] = 0.5  # only the second future frame is wrong
    pf = M.per_frame(pred, target)
    assert pf["mse"].shape == (2, 3)
    np.testing.assert_allclose(pf["mse"][:, 1], 64 * 0.25)  # sum over 64 pixels
    np.testing.assert_allclose(pf["mse_pixel"][:, 1], 0.25)
    np.testing.assert_allclose(pf["mae"][:, 1], 64 * 0.5)
    assert pf["mse"][:, 0].sum() == 0
    m = M.compute(pred, target)
    assert m["mse"] == pytest.approx(64 * 0.25 / 3)
    # predictions are clipped to [0, 1] before scoring
    assert M.compute(-torch.ones(1, 1, 1, 8, 8), torch.zeros(1, 1, 1, 8, 8))["mse"] == 0
    with pytest.raises(ValueError, match="equal"):
        M.compute(torch.zeros(1, 2, 1, 8, 8), torch.zeros(1, 3, 1, 8, 8))


def test_training_flops_of_grouped_convolutions_are_three_forwards():
    """torch's counter counts a grouped conv's weight gradient as dense; framecast's does not."""
    from torch.utils.flop_counter import FlopCounterMode

    from framecast.evaluation.compare import flop_counter

    def train_flops(conv, counter):
        x = torch.randn(2, 16, 12, 12, requires_grad=True)
        with counter as fc:
            conv(x).sum().backward()
        return fc.get_total_flops()

    dense, depthwise = (
        torch.nn.Conv2d(16, 32, 5, padding=2),
        torch.nn.Conv2d(16, 16, 7, padding=9, dilation=3, groups=16),
    )
    assert train_flops(dense, flop_counter()) == train_flops(dense, FlopCounterMode(display=False))
    forward = 2 * 2 * 16 * 1 * 7 * 7 * 12 * 12  # batch x out channels x in/groups x kernel x output pixels
    assert train_flops(depthwise, flop_counter()) == 3 * forward
    assert train_flops(depthwise, FlopCounterMode(display=False)) > 3 * forward  # torch's dense count
