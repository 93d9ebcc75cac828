"""FVD: the I3D network, its weights file, the embedder and its cache, the Fréchet distance and the
bootstrap over clips.

No I3D weights can be downloaded here, so the network tests use a random I3D (its batch-norm
statistics randomised too, so that loading them is tested): the shapes, the loading path and the
embedder's properties are real, the feature values are not Kinetics ones. Every frame is resized
to 224x224 whatever its size, so each embedded clip costs ~0.25 s: the tests embed few, short clips.
"""

import numpy as np
import pytest
import torch

from framecast.errors import FramecastError
from framecast.evaluation.fvd import (
    I3DFeatures,
    _resize_matrix,
    frechet_distance,
    fvd_with_ci,
    i3d_path,
    paired_fvd_test,
    resize,
)
from framecast.evaluation.i3d import I3D, _out_size, _same_pad, min_frames, min_size


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = I3D()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def embed(net):
    return I3DFeatures(net=net)


@pytest.fixture(scope="module")
def state(net):
    """The random I3D's state dict as a weights file holds it (contiguous tensors)."""
    return {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}


def clips(n: int, c: int = 1, t: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, t, c, 32, 32, generator=torch.Generator().manual_seed(seed))  # (B, T, C, H, W)


def test_minimum_clip_computed_from_the_strides():
    assert min_frames() == 9 and _out_size(9, 0) == 2 and _out_size(8, 0) == 1
    assert min_size() == 193 and _out_size(224, 1) == 7
    # TensorFlow SAME: ceil(size / stride) outputs, the odd padding cell after
    assert _same_pad(224, 7, 2) == (2, 3) and _same_pad(9, 3, 2) == (1, 1) and _same_pad(10, 2, 2) == (0, 0)


def test_parameter_names_are_those_of_the_converted_kinetics_weights(state):
    assert len(state) == 344  # 58 convolutions, 57 batch norms (5 tensors each), the logits' bias
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_2c_3x3.bn.running_mean"] == (192,)
    assert shapes["Mixed_3b.b0.conv3d.weight"] == (64, 192, 1, 1, 1)
    assert shapes["Mixed_4b.b2b.conv3d.weight"] == (48, 16, 3, 3, 3)  # 3x3x3 where Inception-v1 has 5x5
    assert shapes["Mixed_5c.b3b.conv3d.weight"] == (128, 832, 1, 1, 1)
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and shapes["logits.conv3d.bias"] == (400,)
    assert not any(k.startswith("logits.bn") for k in state)


def test_features_are_400_float64_per_clip(embed):
    x = clips(2)
    f = embed(x)
    assert f.shape == (2, 400) and f.dtype == torch.float64 and f.device.type == "cpu"
    assert torch.isfinite(f).all() and not torch.allclose(f[0], f[1])  # a random I3D still tells clips apart


def test_too_few_frames_is_one_line(embed, net):
    with pytest.raises(FramecastError) as e:
        embed(clips(1, t=4))
    assert str(e.value) == "FVD needs clips of at least 9 frames (I3D's temporal pooling); got 4"
    with pytest.raises(FramecastError, match="at least 9 frames of at least 193x193 pixels; got 8 frames of 224x224"):
        net(torch.zeros(1, 8, 3, 224, 224))
    with pytest.raises(FramecastError, match="1 or 3 channels, got shape"):
        embed(torch.zeros(1, 9, 2, 32, 32))


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FRAMECAST_I3D", raising=False)
    assert i3d_path().parent.name == "checkpoints" and i3d_path().name == "i3d_kinetics400_rgb.pt"
    path = tmp_path / "i3d.pt"
    monkeypatch.setenv("FRAMECAST_I3D", str(path))
    with pytest.raises(FramecastError) as e:
        I3DFeatures()
    msg = str(e.value)
    assert "\n" not in msg and f"{path} is missing" in msg
    assert "rgb_imagenet.pt" in msg and "pytorch-i3d" in msg and "FRAMECAST_I3D" in msg


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_saved_weights_give_the_same_features(embed, state, tmp_path, monkeypatch, suffix):
    path = tmp_path / f"i3d{suffix}"
    if suffix == ".pt":  # as a file saved by PyTorch 0.3: no num_batches_tracked
        torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    monkeypatch.setenv("FRAMECAST_I3D", str(path))
    loaded = I3DFeatures()
    x = clips(1, c=3, seed=1)
    assert torch.equal(loaded(x), embed.features(x, cache=True))  # the reference embedded once for both files


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda s: s.pop("Mixed_4d.b2b.bn.running_var"), "missing key Mixed_4d.b2b.bn.running_var"),
        (
            lambda s: s.update({"logits.conv3d.weight": torch.zeros(10, 1024, 1, 1, 1)}),
            r"logits.conv3d.weight has shape \(10, 1024, 1, 1, 1\), expected \(400, 1024, 1, 1, 1\)",
        ),
        (lambda s: s.update({"fc.weight": torch.zeros(1)}), "unexpected key fc.weight"),
    ],
)
def test_wrong_weights_are_refused_naming_the_key(state, tmp_path, monkeypatch, change, named):
    wrong = dict(state)
    change(wrong)
    path = tmp_path / "i3d.pt"
    torch.save(wrong, path)
    monkeypatch.setenv("FRAMECAST_I3D", str(path))
    with pytest.raises(FramecastError, match=f"not the Kinetics-400 RGB I3D \\({named}\\)"):
        I3DFeatures()


def test_unreadable_weights_are_one_line(tmp_path, monkeypatch):
    path = tmp_path / "i3d.pt"
    path.write_bytes(b"not a checkpoint\n" * 10)
    monkeypatch.setenv("FRAMECAST_I3D", str(path))
    with pytest.raises(FramecastError, match="not readable I3D weights") as e:
        I3DFeatures()
    assert "\n" not in str(e.value)


def test_grey_frames_count_as_rgb_repeated(embed):
    grey = clips(1, c=1, seed=2)
    torch.testing.assert_close(embed(grey), embed(grey.expand(-1, -1, 3, -1, -1)), rtol=0, atol=1e-9)


def test_cache_embeds_each_clip_once(net):
    calls = []
    hook = net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        embed = I3DFeatures(net=net, cache_clips=1)
        x = clips(2, seed=3)
        first = embed.features(x[:1], cache=True)
        assert calls == [1]
        assert torch.equal(embed.features(x[:1], cache=True), first) and calls == [1]
        # one clip seen, one new: only the new one runs; then only the most recent is kept
        both = embed.features(x, cache=True)
        assert calls == [1, 1] and torch.equal(both[0], first[0]) and len(embed._cache) == 1
        assert torch.equal(embed.features(x[1:], cache=True), both[1:]) and calls == [1, 1]
        embed.features(x[:1], cache=True)  # dropped as least recently used: embedded again
        assert calls == [1, 1, 1]
        assert torch.equal(embed(x[1:]), both[1:]) and calls == [1, 1, 1, 1]  # a plain call never caches
    finally:
        hook.remove()


def test_resize_is_tensorflow_1_bilinear():
    # output i reads input i * n_in / n_out (no half-pixel centres); the edge repeats
    expected = torch.tensor([[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
    torch.testing.assert_close(_resize_matrix(2, 4), expected)
    x = torch.rand(2, 3, 448, 448)
    torch.testing.assert_close(resize(x), x[..., ::2, ::2])  # halving reads every other pixel
    torch.testing.assert_close(resize(torch.full((1, 1, 64, 48), 0.3)), torch.full((1, 1, 224, 224), 0.3))


def _scipy_frechet(x, y):
    from scipy import linalg

    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(sx @ sy).real
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx + sy - 2 * root))


@pytest.mark.parametrize("n, m, d", [(60, 50, 8), (20, 30, 16), (6, 7, 16), (10, 30, 16)])  # (d, d), then (n, m) route
def test_frechet_distance_matches_scipy(n, m, d):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    y = 1.3 * rng.standard_normal((m, d)) @ rng.standard_normal((d, d)) + 0.2
    assert frechet_distance(x, y) == pytest.approx(_scipy_frechet(x, y), rel=1e-6)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)


def test_frechet_distance_known_cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-9)
    shift = np.array([1.0, -2.0, 0.0, 0.5, 3.0])
    assert frechet_distance(x, x + shift) == pytest.approx((shift**2).sum(), rel=1e-9)
    a, b = rng.normal(1.0, 2.0, (50, 1)), rng.normal(-0.5, 0.5, (70, 1))  # 1-d: (s1 - s2)^2 + (m1 - m2)^2
    closed = (a.std(ddof=1) - b.std(ddof=1)) ** 2 + (a.mean() - b.mean()) ** 2
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    with pytest.raises(ValueError, match="at least 2 clips; y has shape"):
        frechet_distance(x, x[:1])
    with pytest.raises(ValueError, match="features of one size, got 5 and 4"):
        frechet_distance(x, x[:, :4])


def test_fvd_interval_contains_the_value_and_follows_its_seed():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((60, 400))
    fake = real + 0.5 * rng.standard_normal((60, 400))
    res = fvd_with_ci(real, fake, n_boot=50, seed=3)
    assert res["value"] == pytest.approx(frechet_distance(real, fake))
    assert res["lo"] < res["value"] < res["hi"] and (res["n_boot"], res["seed"]) == (50, 3)
    assert fvd_with_ci(real, fake, n_boot=50, seed=3) == res
    assert fvd_with_ci(real, fake, n_boot=50, seed=4)["lo"] != res["lo"]
    # why the resamples are centred: the raw resampled FVDs all lie above the value here
    idx = np.random.default_rng(3).integers(0, 60, size=(50, 60))
    assert min(frechet_distance(real[i], fake[i]) for i in idx) > res["value"]


def test_paired_fvd_test_separates_a_clearly_worse_model_only():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((40, 16))
    good = real + 0.1 * rng.standard_normal((40, 16))
    bad = real + rng.standard_normal((40, 16)) + 0.5
    t = paired_fvd_test(real, good, bad, n_boot=100, seed=0)
    assert t["separable"] and t["diff"] < 0 and t["hi"] < 0 and t["p"] < 0.05
    assert t == paired_fvd_test(real, good, bad, n_boot=100, seed=0)
    same = paired_fvd_test(real, good, good, n_boot=100, seed=0)
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0, "separable": False}
    with pytest.raises(ValueError, match="the same clips"):
        paired_fvd_test(real, good, bad[:30])
