"""Pictures of an array forecast: a still figure and an animated GIF per channel, with colour bars."""

from pathlib import Path

import numpy as np

from framecast.media import write_animation


def _rows(context: np.ndarray, pred: np.ndarray, truth: np.ndarray, c: int) -> tuple[float, float]:
    values = [context[:, c], pred[:, c]] + ([truth[:, c]] if len(truth) else [])
    both = np.concatenate([v.ravel() for v in values])
    both = both[np.isfinite(both)]
    return (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)


def plot_forecast(
    context: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray,
    picked: list[int],
    names: list[str],
    path: Path,
    cmap: str = "viridis",
    max_columns: int = 8,
) -> Path:
    """A PNG: per picked channel a row of the last context step and the forecast steps (evenly
    chosen, at most ``max_columns``) and, where known, a row of the truth, one colour scale and
    colour bar per channel."""
    from framecast.evaluation.visualize import plt
    from framecast.io import atomic_write_bytes

    n = len(pred)
    steps = np.unique(np.linspace(0, n - 1, min(n, max_columns - 1)).round().astype(int))
    rows = [(c, kind) for c in picked for kind in (("forecast", "truth") if len(truth) else ("forecast",))]
    h, w = pred.shape[-2:]
    fig, axes = plt.subplots(
        len(rows),
        len(steps) + 1,
        figsize=(1.6 * (len(steps) + 1) * max(1.0, w / h) + 1, 1.7 * len(rows)),
        squeeze=False,
    )
    for r, (c, kind) in enumerate(rows):
        lo, hi = _rows(context, pred, truth, c)
        im = axes[r, 0].imshow(context[-1, c], cmap=cmap, vmin=lo, vmax=hi)
        axes[r, 0].set_title("last context" if r == 0 else "", fontsize=8)
        axes[r, 0].set_ylabel(f"{names[c]}\n{kind}", fontsize=8)
        for j, k in enumerate(steps):
            ax = axes[r, j + 1]
            frames = pred if kind == "forecast" else truth
            if k < len(frames):
                ax.imshow(frames[k, c], cmap=cmap, vmin=lo, vmax=hi)
            if r == 0:
                ax.set_title(f"+{k + 1}", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=list(axes[r]), fraction=0.02, pad=0.01)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def forecast_gif(
    context: np.ndarray,
    pred: np.ndarray,
    truth: np.ndarray,
    picked: list[int],
    names: list[str],
    path: Path,
    cmap: str = "viridis",
    fps: float = 2.0,
) -> Path:
    """An animated GIF: the context steps, then each forecast step (and the truth beside it
    where known), per picked channel with its colour bar."""
    import io

    from PIL import Image

    from framecast.evaluation.visualize import plt

    h, w = pred.shape[-2:]
    cols = 2 if len(truth) else 1
    scales = {c: _rows(context, pred, truth, c) for c in picked}
    images = []
    for t in range(len(context) + len(pred)):
        fig, axes = plt.subplots(
            len(picked), cols, figsize=(2.6 * cols * max(1.0, w / h) + 0.8, 2.2 * len(picked)), squeeze=False
        )
        for r, c in enumerate(picked):
            lo, hi = scales[c]
            if t < len(context):
                panels = [(context[t], f"context {t - len(context) + 1}")] * cols
            else:
                k = t - len(context)
                panels = [(pred[k], f"forecast +{k + 1}")]
                if cols == 2:
                    panels.append((truth[k] if k < len(truth) else None, f"truth +{k + 1}"))
            for j, (frame, title) in enumerate(panels):
                ax = axes[r, j]
                if frame is not None:
                    im = ax.imshow(frame[c], cmap=cmap, vmin=lo, vmax=hi)
                ax.set_title(f"{names[c]}: {title}", fontsize=8, color="green" if t < len(context) else "red")
                ax.set_xticks([])
                ax.set_yticks([])
            fig.colorbar(im, ax=list(axes[r]), fraction=0.04, pad=0.02)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72)
        plt.close(fig)
        images.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return write_animation(images, path, fps)
