import gzip

import numpy as np
import pytest
import torch

from framecast.config import DataConfig
from framecast.data import build_datasets, generate, mnist_digits, trajectories
from framecast.data.moving_mnist import load_test_file, read_idx_images, shipped_digits
from framecast.errors import FramecastError


def test_shipped_digits_are_mnist_like_and_disjoint():
    train, test = shipped_digits("train"), shipped_digits("test")
    assert train.shape == (4000, 28, 28) and test.shape == (1000, 28, 28)
    assert train.dtype == np.uint8
    assert abs(train.mean() / 255 - 0.131) < 0.005  # MNIST's mean intensity
    # no test digit appears among the training digits
    train_set = {d.tobytes() for d in train}
    assert not any(d.tobytes() in train_set for d in test)


def test_trajectories_speed_and_bounce():
    rng = np.random.default_rng(0)
    pos = trajectories(rng, 500, 40, 0.1)  # (T, N, 2)
    assert pos.min() >= 0 and pos.max() <= 1
    step = np.linalg.norm(np.diff(pos, axis=0), axis=-1)  # (T-1, N)
    inside = (pos[1:] > 0).all(-1) & (pos[1:] < 1).all(-1) & (pos[:-1] > 0).all(-1) & (pos[:-1] < 1).all(-1)
    # away from the walls every digit moves exactly 0.1 of the unit range per frame
    np.testing.assert_allclose(step[inside], 0.1, rtol=1e-9)
    # bounces happen, and after one the velocity component is reversed
    assert ((pos == 0) | (pos == 1)).any()
    v = np.diff(pos, axis=0)
    hit = np.argwhere(pos[1:-1, :, 0] == 1.0)
    for t, n in hit[:20]:
        assert v[t, n, 0] > 0 and v[t + 1, n, 0] < 0


def test_generator_places_and_max_combines_digits():
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, :, :] = 100
    digits[1, :, :] = 200
    clips = generate(np.random.default_rng(1), digits, 50, length=5, num_digits=2)
    assert clips.shape == (50, 5, 64, 64) and clips.dtype == np.uint8
    # combined with max, never summed: no pixel exceeds the brightest digit
    assert clips.max() <= 200
    assert set(np.unique(clips)) <= {0, 100, 200}
    # each frame holds two 28x28 squares: the covered area is between 28^2 and 2*28^2
    area = (clips > 0).sum(axis=(2, 3))
    assert area.min() >= 28 * 28 and area.max() <= 2 * 28 * 28


def test_moving_digit_speed_in_pixels():
    digits = np.zeros((1, 28, 28), np.uint8)
    digits[0, 13:15, 13:15] = 255
    clips = generate(np.random.default_rng(3), digits, 200, length=20, num_digits=1)
    ys, xs = [], []
    for t in range(20):
        idx = clips[:, t].reshape(200, -1).argmax(1)
        ys.append(idx // 64)
        xs.append(idx % 64)
    d = np.hypot(np.diff(ys, axis=0), np.diff(xs, axis=0))
    assert 3.0 < np.median(d) < 4.2  # 0.1 * 36 px = 3.6 px per frame


def test_datasets_are_seeded_and_shaped():
    cfg = DataConfig(train_size=4, val_size=2, test_size=3, n_context=3, n_future=2)
    a, b = build_datasets(cfg), build_datasets(cfg)
    assert a["train"][0].shape == (5, 1, 64, 64)
    torch.testing.assert_close(a["train"][7], b["train"][7])
    torch.testing.assert_close(a["test"][2], b["test"][2])
    assert not torch.equal(a["train"][0], a["train"][1])
    assert 0 <= a["test"][0].min() and a["test"][0].max() <= 1
    other = build_datasets(DataConfig(train_size=4, val_size=2, test_size=3, n_context=3, n_future=2, seed=1))
    assert not torch.equal(a["test"][0], other["test"][0])


def test_real_mnist_idx_and_test_file(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    header = (2051).to_bytes(4, "big") + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + imgs.tobytes())
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + imgs.tobytes())
    np.testing.assert_array_equal(mnist_digits(str(tmp_path), "train"), imgs)
    np.testing.assert_array_equal(mnist_digits(str(tmp_path), "test"), imgs)
    (tmp_path / "bad").write_bytes(b"nonsense")
    with pytest.raises(FramecastError, match="not an MNIST idx3"):
        read_idx_images(tmp_path / "bad")
    seq = np.random.default_rng(0).integers(0, 255, (20, 7, 64, 64), dtype=np.uint8)  # (T, N, H, W)
    np.save(tmp_path / "mnist_test_seq.npy", seq)
    clips = load_test_file(tmp_path / "mnist_test_seq.npy", 20, 64)
    np.testing.assert_array_equal(clips[3], seq[:, 3])
    ds = build_datasets(
        DataConfig(
            mnist_path=str(tmp_path),
            test_file=str(tmp_path / "mnist_test_seq.npy"),
            test_size=0,
            val_size=1,
            train_size=1,
        )
    )
    assert len(ds["test"]) == 7
    with pytest.raises(FramecastError, match="file not found"):
        load_test_file(tmp_path / "missing.npy", 20, 64)
