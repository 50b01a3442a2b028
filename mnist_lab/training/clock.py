"""The one place that knows the global step and the clock; the loop's periodic work hangs off it.

``StepClock`` is the only Keras callback of the loop. At the end of each compiled call (one
step, or ``trainer.steps_per_execution`` of them) it works out the global step once, then
runs what is due:

- ``each_call`` tasks (the divergence check, stop requests, the progress bar) every time;
- ``every(n, ...)`` tasks when the call crossed a multiple of ``n``, and at the last step.

Tasks time their own work with ``clock.timed(category)``; training throughput is the wall time
after the first compiled call (tracing is a one-off cost) minus that work, so every figure of
metrics.json and TensorBoard comes from this one account.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mnist_lab.core.backend import keras

# The categories of work kept out of the training throughput. ``loop_examples_per_second``
# leaves out evaluation only: summaries and checkpoints are the loop's own cost.
EVALUATION, SUMMARIES, CHECKPOINTS = "evaluation", "summaries", "checkpoints"

Task = Callable[[int, dict[str, Any]], None]  # (global step, Keras logs)


@dataclass
class Timings:
    """Seconds of timed work, by category, since training began."""

    seconds: dict[str, float] = field(default_factory=dict)

    def total(self, *categories: str) -> float:
        return sum(self.seconds.get(c, 0.0) for c in categories or self.seconds)


class StepClock(keras.callbacks.Callback):
    """Knows the step (``clock.step``), runs the due tasks, and keeps the time."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int) -> None:
        super().__init__()
        self.start_step = start_step
        self.total_steps = total_steps
        self.batch_size = batch_size
        self.step = start_step
        self.previous_step = start_step  # the step before the last compiled call
        self.timings = Timings()
        self._each_call: list[Task] = []
        self._every: list[tuple[int, Task]] = []
        self._began = 0.0
        self._first_call_end: float | None = None
        self._ended: float | None = None
        self._window: tuple[int, float, float] | None = None  # (step, time, timed work)
        self._call_end = (0.0, 0.0)  # (time, timed work) at the end of the last compiled call

    # ------------------------------------------------------------ registration

    def each_call(self, task: Task) -> None:
        self._each_call.append(task)

    def every(self, n: int, task: Task) -> None:
        self._every.append((n, task))

    @contextmanager
    def timed(self, category: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.timings.seconds[category] = self.timings.seconds.get(category, 0.0) + elapsed

    # ------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._began = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # With steps_per_execution, ``batch`` is the last batch of the compiled call.
        self.previous_step, self.step = self.step, self.start_step + batch + 1
        self._call_end = (time.perf_counter(), self.timings.total())
        if self._first_call_end is None:
            self._first_call_end = time.perf_counter()
            self._window = (self.step, self._first_call_end, self.timings.total())
        logs = logs or {}
        for task in self._each_call:
            task(self.step, logs)
        for n, task in self._every:
            if self.step // n != self.previous_step // n or self.step == self.total_steps:
                task(self.step, logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._ended = time.perf_counter()

    # ------------------------------------------------------------ figures

    def training_seconds(self) -> float:
        """Seconds of training in this process up to the end of the last compiled call: the
        first call (tracing) counted, evaluation, summaries and checkpoints not."""
        ended, work = self._call_end
        return max(ended - self._began - work, 0.0) if ended else 0.0

    def examples_per_second_since_last_asked(self) -> float | None:
        """Training throughput since the previous call of this (or the first compiled call):
        the figure of TensorBoard's ``train/examples_per_second`` at each evaluation."""
        if self._window is None:
            return None
        now, work = time.perf_counter(), self.timings.total()
        step, began, work_before = self._window
        self._window = (self.step, now, work)
        seconds = (now - began) - (work - work_before)
        if self.step <= step or seconds <= 0:
            return None
        return (self.step - step) * self.batch_size / seconds

    def throughput(self, steps_per_call: int) -> dict[str, float | None]:
        """``train_examples_per_second`` (training steps alone) and ``loop_examples_per_second``
        (with summaries and checkpoints), both without the first compiled call unless it was
        the only one, and without the periodic evaluation."""
        steps = self.step - self.start_step
        if steps == 0 or self._first_call_end is None or self._ended is None:
            return {"train_examples_per_second": None, "loop_examples_per_second": None}
        seconds = self._ended - self._first_call_end
        if steps > steps_per_call:
            steps -= steps_per_call
        else:
            seconds += self._first_call_end - self._began
        loop = max(seconds - self.timings.total(EVALUATION), 1e-9)
        train = max(loop - self.timings.total(SUMMARIES, CHECKPOINTS), 1e-9)
        examples = steps * self.batch_size
        return {
            "train_examples_per_second": examples / train,
            "loop_examples_per_second": examples / loop,
        }
