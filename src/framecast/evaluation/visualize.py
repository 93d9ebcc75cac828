"""Pictures people would rather see than read: GIFs, frame strips and metric plots."""

from pathlib import Path

import matplotlib
import numpy as np
from torch import Tensor

from framecast.io import atomic_write
from framecast.media import to_uint8, write_animation

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

GAP = 2  # pixels between panels


def _tile(panels: list[list[np.ndarray]], bg: int = 128) -> np.ndarray:
    """Rows of (H, W, 3) images -> one image with GAP-pixel grey gutters."""
    h, w = panels[0][0].shape[:2]
    rows, cols = len(panels), max(len(r) for r in panels)
    out = np.full((rows * (h + GAP) + GAP, cols * (w + GAP) + GAP, 3), bg, dtype=np.uint8)
    for i, row in enumerate(panels):
        for j, img in enumerate(row):
            y, x = GAP + i * (h + GAP), GAP + j * (w + GAP)
            out[y : y + h, x : x + w] = img
    return out


def _mark(img: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """A 1-pixel coloured border: green for context frames, red for predicted ones."""
    img = img.copy()
    img[0, :], img[-1, :], img[:, 0], img[:, -1] = color, color, color, color
    return img


GREEN, RED, WHITE = (40, 200, 40), (220, 40, 40), (230, 230, 230)


def comparison_gif(
    clips: Tensor, preds: dict[str, Tensor], n_context: int, path: str | Path, fps: int = 4, scale: int = 2
) -> Path:
    """An animated GIF: one row per clip, columns truth | each model's prediction.

    Context frames (green border) are the same in every column; future frames (red border in
    the model columns) show each model's prediction next to the truth.

    Args:
        clips: (N, T, C, H, W) true clips.
        preds: label -> (N, n_future, C, H, W) predictions.
    """
    truth = to_uint8(clips)
    pred = {k: to_uint8(v) for k, v in preds.items()}
    frames = []
    for t in range(truth.shape[1]):
        rows = []
        for i in range(truth.shape[0]):
            if t < n_context:
                row = [_mark(truth[i, t], GREEN)] * (1 + len(pred))
            else:
                row = [_mark(truth[i, t], WHITE)] + [_mark(p[i, t - n_context], RED) for p in pred.values()]
            rows.append(row)
        img = _tile(rows)
        frames.append(np.kron(img, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else img)
    return write_animation(frames, path, fps)


def strip_png(clip: Tensor, preds: dict[str, Tensor], n_context: int, path: str | Path, scale: int = 2) -> Path:
    """A still strip for one clip: row of context, row of truth, then one row per model."""
    ctx = to_uint8(clip[:n_context])
    truth = to_uint8(clip[n_context:])
    rows = [[_mark(f, GREEN) for f in ctx], [_mark(f, WHITE) for f in truth]]
    rows += [[_mark(f, RED) for f in to_uint8(p)] for p in preds.values()]
    img = _tile(rows)
    img = np.kron(img, np.ones((scale, scale, 1), dtype=np.uint8))
    fig_h = img.shape[0] / 100 + 0.2
    fig, ax = plt.subplots(figsize=(img.shape[1] / 100 + 1.6, fig_h), dpi=100)
    ax.imshow(img)
    ax.set_xticks([])
    h = (img.shape[0] - GAP * scale) / len(rows)
    ax.set_yticks([GAP * scale + h * (i + 0.5) for i in range(len(rows))], ["context", "truth", *preds.keys()])
    for side in ax.spines.values():
        side.set_visible(False)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format=Path(path).suffix[1:] or "png"))
    plt.close(fig)
    return Path(path)


BASELINES = ("copy_last", "blank", "linear", "flow")


def plot_per_horizon(
    values: dict[str, list[float]],
    metric: str,
    path: str | Path,
    ylabel: str | None = None,
    bands: dict[str, list[list[float]]] | None = None,
) -> Path:
    """One line per model: ``metric`` at every future step; ``bands``: label -> one [lo, hi]
    per step (the 95% bootstrap interval over test clips), drawn shaded around the line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, ys in values.items():
        style = "--" if label in BASELINES else "-"
        steps = range(1, len(ys) + 1)
        (line,) = ax.plot(steps, ys, style, marker="o", ms=3, label=label)
        band = (bands or {}).get(label)
        if band is not None and len(band) == len(ys):
            lo, hi = np.asarray(band, dtype=float).T
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.18, linewidth=0)
    ax.set_xlabel("future frame")
    ax.set_ylabel(ylabel or metric)
    ax.set_title(f"{metric} per predicted frame (test set{', 95% intervals shaded' if bands else ''})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_loss_curves(curves: dict[str, list[tuple[float, int, float]]], path: str | Path) -> Path:
    """Training loss against wall-clock seconds, one line per model (log scale)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, curve in curves.items():
        if curve:
            secs, _, loss = zip(*curve)
            ax.plot(np.asarray(secs) / 60, loss, label=label)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("training loss (per pixel)")
    ax.set_yscale("log")
    ax.set_title("training loss against wall-clock time")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)
