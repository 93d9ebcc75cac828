"""A run's metric logs (TensorBoard in ``tb/``, CSV in ``csv/metrics.csv``), kept across a resume.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts, so a killed run that
resumed kept only the rows logged after the resume. Here a resumed run keeps the rows up to the
step of the checkpoint it resumes from and appends after them; the rows a killed run logged
after that checkpoint are dropped, since the resumed run logs those steps again. TensorBoard
gets the same cut through its writer's ``purge_step``. A fresh run (or ``--no-resume``) starts
both logs over, as before.
"""

import csv
import io
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment

from framecast.io import atomic_write_text


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return float("nan")


class _KeptRowsWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, but an existing ``metrics.csv`` keeps its rows up to
    ``keep_until_step`` (and its header) instead of being deleted."""

    def __init__(self, log_dir: str, keep_until_step: int | None) -> None:
        self._keep_until_step = keep_until_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._keep_until_step is None or not path.is_file():
            return super()._check_log_dir_exists()  # a fresh run: the old file goes
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if _step(r) <= self._keep_until_step]
        if not keys:
            path.unlink()
            return
        keys = sorted(keys)  # Lightning appends rows in its own (sorted) key order: the header must match
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, text.getvalue())  # a kill now leaves the old file or the cut one
        self.metrics_keys = keys


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (rows up to ``keep_until_step``)."""

    def __init__(self, *args, keep_until_step: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._keep_until_step = keep_until_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _KeptRowsWriter(self.log_dir, self._keep_until_step)
        return self._experiment


def run_loggers(out: Path, resume_step: int | None = None) -> list[Logger]:
    """TensorBoard and CSV loggers of the run folder ``out``; ``resume_step``: the global step of
    the checkpoint being resumed (None: a fresh run)."""
    tb_kwargs = {} if resume_step is None else {"purge_step": resume_step + 1}
    return [
        TensorBoardLogger(out, name="tb", version="", **tb_kwargs),
        ResumableCSVLogger(out, name="csv", version="", keep_until_step=resume_step),
    ]
