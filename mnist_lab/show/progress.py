"""Live progress: a rich bar on a terminal, plain log lines at each evaluation everywhere."""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from mnist_lab.core.console import console
from mnist_lab.rundir.results import EvalRecord

log = logging.getLogger("mnist_lab.train")

# Redraw at most this often: reading the loss forces a sync, so not on every step.
REFRESH_SECONDS = 0.25


class Progress:
    """Shows step, loss, validation precision, examples/s and ETA (called by the step clock)."""

    def __init__(self, total_steps: int, batch_size: int, start_step: int = 0) -> None:
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.start_step = start_step
        self._started = time.perf_counter()
        self._last_draw = 0.0
        self._val = "-"
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def begin(self) -> None:
        self._started = time.perf_counter()
        if console.is_terminal:
            self._bar = RichProgress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  {task.fields[rate]}"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self._task = self._bar.add_task(
                "train",
                total=self.total_steps,
                completed=self.start_step,
                loss="-",
                val="-",
                rate="",
            )
            self._bar.start()

    def update(self, step: int, logs: dict[str, Any]) -> None:
        """After each compiled call: redraw the bar, at most every REFRESH_SECONDS."""
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last_draw < REFRESH_SECONDS:
            return
        self._last_draw = now
        self._bar.update(
            self._task,  # type: ignore[arg-type]  # set with the bar
            completed=step,
            loss=f"{logs.get('loss', float('nan')):.4f}",
            val=self._val,
            rate=f"{self._rate(step, now):,.0f} ex/s",
        )

    def close(self) -> None:
        """Stop the bar (idempotent): also called when training raises."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def on_evaluation(self, record: EvalRecord) -> None:
        precision = record.validation.precision
        self._val = "-" if precision is None else f"{precision:.4f}"
        log.info(
            "step %d/%d: loss %.4f, train precision %.4f, validation precision %s, "
            "lr %.3g, %s ex/s",
            record.step,
            self.total_steps,
            record.train_loss,
            record.train_precision,
            self._val,
            record.learning_rate,
            f"{self._rate(record.step, time.perf_counter()):,.0f}",
        )

    def _rate(self, step: int, now: float) -> float:
        return (step - self.start_step) * self.batch_size / max(now - self._started, 1e-9)
