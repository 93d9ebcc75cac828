"""Training progress as plain lines, for output that is not a terminal (a log file, nohup, CI).

Lightning's progress bar redraws itself with carriage returns many times a second; written to
a file, a ten-minute run leaves megabytes of them. ``PlainProgress`` prints one line instead at
the first batch, then at most one every ``every`` seconds, at the end of every epoch and of
every validation, and when training stops (testing: every ``every`` seconds)::

    epoch 1 batch 120/625 train/loss 0.0213 val/mse 85.1 val/ssim 0.61 2.3 it/s 0:00:52
"""

import math
import sys
import time
from datetime import timedelta
from typing import IO, Any

from lightning.pytorch.callbacks import ProgressBar


def draws_on_a_terminal() -> bool:
    """Whether Lightning's own bar would draw on a terminal (it writes to stdout)."""
    stream = sys.stdout
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def _count(n: int | float) -> str:
    return "?" if n is None or (isinstance(n, float) and math.isinf(n)) else str(int(n))


def _value(v: Any) -> str:
    if hasattr(v, "item"):
        v = v.item()
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class PlainProgress(ProgressBar):
    """Plain progress lines on ``stream`` (default: stderr, looked up when printing)."""

    def __init__(self, every: float = 30.0, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.every = every
        self.stream = stream
        self._enabled = True
        self._start = self._last = 0.0
        self._n = self._n_last = 0  # batches seen, and at the last line
        self._where = ""

    # -------------------------------------------------------------- ProgressBar interface

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    # -------------------------------------------------------------- lines

    def _write(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def _metrics(self, trainer: Any, pl_module: Any, prefix: str = "") -> str:
        items = self.get_metrics(trainer, pl_module)
        return " ".join(f"{k} {_value(v)}" for k, v in items.items() if k != "v_num" and k.startswith(prefix))

    def _reset(self) -> None:
        self._start = self._last = time.monotonic()
        self._n = self._n_last = 0

    def _line(self, where: str, metrics: str) -> None:
        now = time.monotonic()
        rate = (self._n - self._n_last) / max(now - self._last, 1e-9)
        elapsed = timedelta(seconds=int(now - self._start))
        self._write(" ".join(x for x in (where, metrics, f"{rate:.3g} it/s", str(elapsed)) if x))
        self._last, self._n_last = now, self._n

    def _due(self, batch_idx: int, total: int | float) -> bool:
        last_of_epoch = not math.isinf(total) and batch_idx + 1 >= total
        return self._n == 1 or last_of_epoch or time.monotonic() - self._last >= self.every

    # -------------------------------------------------------------- training

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._n += 1
        self._where = f"epoch {trainer.current_epoch + 1} batch {batch_idx + 1}/{_count(self.total_train_batches)}"
        if self._enabled and self._due(batch_idx, self.total_train_batches):
            self._line(self._where, self._metrics(trainer, pl_module))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._enabled and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._write(f"epoch {trainer.current_epoch + 1} validation {self._metrics(trainer, pl_module, 'val')}")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._enabled and self._n > self._n_last:  # stopped inside an epoch (a step or time budget)
            self._line(self._where, self._metrics(trainer, pl_module))

    # -------------------------------------------------------------- test

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset()
        self._printed = False

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # A short test prints nothing (its scores follow at once); a long one a line every
        # ``every`` seconds, and one at its end.
        self._n += 1
        totals = trainer.num_test_batches
        total = totals[dataloader_idx] if dataloader_idx < len(totals) else math.inf
        last = not math.isinf(total) and batch_idx + 1 >= total
        due = time.monotonic() - self._last >= self.every or (last and self._printed)
        if self._enabled and due:
            self._line(f"test batch {batch_idx + 1}/{_count(total)}", "")
            self._printed = True
