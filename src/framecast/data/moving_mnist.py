"""Moving MNIST, faithful to the original generator (Srivastava et al. 2015,
https://arxiv.org/abs/1502.04681).

Each digit starts at a position uniform in [0, 1)^2 of the free range (canvas - digit
pixels), moves in a direction uniform in [0, 2 pi) by ``step_length`` of the unit range per
frame, and bounces: when a coordinate leaves [0, 1] it is clamped and that velocity component
flips. The position is advanced one step before the first frame is written. The top-left
corner in pixels is ``int(free_range * position)``; digits are combined with an element-wise
maximum.

Digits: by default the MNIST digits that framecast ships (``assets/mnist_digits_20px.npz``,
real MNIST digits from OpenCV's ``digits.png``, resized back to 28x28), disjoint for training
and test. With ``mnist_path`` the real MNIST idx files are used (train images for training,
t10k for test), and ``test_file`` reads the standard ``mnist_test_seq.npy``.
"""

import gzip
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from framecast.errors import FramecastError

DIGIT_SIZE = 28


# --------------------------------------------------------------------------- digits


@lru_cache(maxsize=4)
def shipped_digits(split: str) -> np.ndarray:
    """(N, 28, 28) uint8 MNIST digits of ``split`` ("train" or "test") shipped with framecast."""
    with resources.files("framecast.data.assets").joinpath("mnist_digits_20px.npz").open("rb") as f:
        cells = np.load(f)[split]  # (N, 20, 20) uint8
    # Bilinear back to MNIST's 28x28 restores its stroke weight (mean 0.132 vs MNIST's 0.131).
    x = torch.from_numpy(cells).float()[:, None]
    x = F.interpolate(x, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def read_idx_images(path: str | Path) -> np.ndarray:
    """Read an MNIST idx3 image file (plain or .gz) as (N, rows, cols) uint8."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise FramecastError(f"{path}: cannot read MNIST idx file ({e})") from None
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 2051:
        raise FramecastError(f"{path}: not an MNIST idx3 image file (magic number 2051 missing)")
    n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    if len(raw) != 16 + n * rows * cols:
        raise FramecastError(f"{path}: truncated idx file ({len(raw)} bytes, expected {16 + n * rows * cols})")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def mnist_digits(mnist_path: str | None, split: str) -> np.ndarray:
    """Digits for ``split`` from the real MNIST idx files in ``mnist_path``, or the shipped set."""
    if mnist_path is None:
        return shipped_digits(split)
    prefix = "train" if split == "train" else "t10k"
    folder = Path(mnist_path)
    if not folder.is_dir():
        raise FramecastError(f"data.mnist_path: folder not found: {folder}")
    for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return read_idx_images(candidate)
    raise FramecastError(f"data.mnist_path: no {prefix}-images-idx3-ubyte(.gz) in {folder}")


# --------------------------------------------------------------------------- the generator


def trajectories(rng: np.random.Generator, n: int, length: int, step_length: float) -> np.ndarray:
    """(length, n, 2) positions in [0, 1]^2 (y, x) of n bouncing digits."""
    pos = rng.random((n, 2))  # (n, [y, x])
    theta = rng.random(n) * 2 * np.pi
    vel = np.stack([np.sin(theta), np.cos(theta)], axis=1)  # (n, [vy, vx])
    out = np.empty((length, n, 2))
    for t in range(length):
        pos = pos + vel * step_length
        low, high = pos <= 0, pos >= 1
        vel = np.where(low | high, -vel, vel)
        pos = np.clip(pos, 0.0, 1.0)
        out[t] = pos
    return out


def generate(
    rng: np.random.Generator,
    digits: np.ndarray,
    n_sequences: int,
    length: int = 20,
    image_size: int = 64,
    num_digits: int = 2,
    step_length: float = 0.1,
) -> np.ndarray:
    """Generate ``n_sequences`` Moving MNIST clips as (N, T, H, W) uint8."""
    size = digits.shape[-1]
    free = image_size - size
    if free < 0:
        raise FramecastError(f"data.image_size {image_size} is smaller than a digit ({size} px)")
    out = np.zeros((n_sequences, length, image_size, image_size), dtype=np.uint8)
    traj = trajectories(rng, n_sequences * num_digits, length, step_length)  # (T, N*D, 2)
    corners = (free * traj).astype(np.int64).reshape(length, n_sequences, num_digits, 2)
    picks = rng.integers(0, len(digits), size=(n_sequences, num_digits))
    for s in range(n_sequences):
        for d in range(num_digits):
            digit = digits[picks[s, d]]
            for t in range(length):
                y, x = corners[t, s, d]
                window = out[s, t, y : y + size, x : x + size]
                np.maximum(window, digit, out=window)
    return out


# --------------------------------------------------------------------------- datasets


class MovingMNIST(Dataset):
    """Moving MNIST clips as float tensors (T, 1, H, W) in [0, 1].

    Item ``i`` is generated from a random generator seeded with ``(seed, i)``, so the same index
    always gives the same clip, in any worker and after a resume. For training, ``FreshSampler``
    hands out new indices every epoch: the training stream never repeats.
    """

    fresh_stream = True  # any index is a valid clip; FreshSampler never repeats one

    def __init__(
        self,
        digits: np.ndarray,
        seed: int,
        size: int,
        length: int = 20,
        image_size: int = 64,
        num_digits: int = 2,
        step_length: float = 0.1,
    ) -> None:
        self.digits, self.seed, self.size = digits, seed, size
        self.kwargs = dict(length=length, image_size=image_size, num_digits=num_digits, step_length=step_length)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, int(index)])
        clip = generate(rng, self.digits, 1, **self.kwargs)[0]  # (T, H, W) uint8
        return torch.from_numpy(clip)[:, None].float().div_(255)  # (T, 1, H, W)


class FixedClips(Dataset):
    """A fixed array of clips, (N, T, H, W) or (N, T, C, H, W) uint8, served as float in [0, 1]."""

    def __init__(self, clips: np.ndarray) -> None:
        self.clips = clips if clips.ndim == 5 else clips[:, :, None]  # (N, T, C, H, W)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.clips[index])).float().div_(255)


def fixed_test_set(digits: np.ndarray, seed: int, size: int, **kwargs) -> np.ndarray:
    """The seeded test clips: the same array for the same digits, seed and options."""
    return generate(np.random.default_rng([seed, 2**31 - 1]), digits, size, **kwargs)


def load_test_file(path: str | Path, length: int, image_size: int) -> np.ndarray:
    """Read the standard ``mnist_test_seq.npy`` (T, N, 64, 64) uint8 as (N, T, H, W)."""
    path = Path(path)
    if not path.is_file():
        raise FramecastError(f"data.test_file: file not found: {path}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise FramecastError(f"{path}: not a .npy array ({e})") from None
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise FramecastError(
            f"{path}: expected uint8 (time, sequence, H, W) like mnist_test_seq.npy, got {arr.dtype} {arr.shape}"
        )
    if arr.shape[0] < length or arr.shape[2:] != (image_size, image_size):
        raise FramecastError(
            f"{path}: clips are {arr.shape[0]} frames of {arr.shape[2]}x{arr.shape[3]}, "
            f"but the config asks for {length} frames of {image_size}x{image_size}"
        )
    return np.ascontiguousarray(np.asarray(arr[:length]).transpose(1, 0, 2, 3))  # (N, T, H, W)
