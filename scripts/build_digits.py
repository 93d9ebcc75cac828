"""Build the MNIST digit asset that framecast ships for its built-in Moving MNIST.

Source: ``mnist-digits-20px.png`` (OpenCV's ``digits.png`` sample, cut from the MNIST
database): 5,000 digits, 500 per class, as a 2000x1000 grey image of 20x20 cells; rows
``5k .. 5k+4`` hold digit ``k``. The cells are stored as they are (uint8, 20x20); the package
resizes them back to 28x28 (bilinear) when it loads them, which restores MNIST's mean
intensity (0.132 against MNIST's 0.131).

Split: in every row the first 80 columns are training digits and the last 20 are test digits,
so each class has 400 training and 100 test digits, disjoint.

Usage: python scripts/build_digits.py ../shared/data/mnist-digits-20px.png
"""

import hashlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

EXPECTED_SHA256 = "60c917758ef97cc090f35cd8e293e4de691ef942847da0ff80dedab33d57c662"
OUT = Path(__file__).resolve().parents[1] / "src/framecast/data/assets/mnist_digits_20px.npz"


def main(src: str) -> None:
    raw = Path(src).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EXPECTED_SHA256:
        raise SystemExit(f"{src}: sha256 {digest} is not the expected {EXPECTED_SHA256}")
    img = np.asarray(Image.open(src).convert("L"))  # (1000, 2000)
    if img.shape != (1000, 2000):
        raise SystemExit(f"{src}: expected a 2000x1000 image, got {img.shape[1]}x{img.shape[0]}")
    cells = img.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3)  # (row, col, 20, 20)
    labels = np.repeat(np.arange(10), 5)  # (row,)
    train = cells[:, :80].reshape(-1, 20, 20)
    test = cells[:, 80:].reshape(-1, 20, 20)
    train_labels = np.repeat(labels, 80)
    test_labels = np.repeat(labels, 20)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        train=train,
        train_labels=train_labels.astype(np.uint8),
        test=test,
        test_labels=test_labels.astype(np.uint8),
        source_sha256=np.frombuffer(bytes.fromhex(digest), dtype=np.uint8),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB): {len(train)} train, {len(test)} test")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist-digits-20px.png")
