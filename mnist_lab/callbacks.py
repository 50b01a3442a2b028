"""Keras callbacks for the periodic work of the loop, keyed by the global step."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from mnist_lab.backend import keras
from mnist_lab.data import Split
from mnist_lab.errors import DivergedError
from mnist_lab.evaluation import Evaluator, SplitResult


@dataclass(frozen=True)
class EvalRecord:
    """What one evaluation saw: the training batches since the last one, and validation."""

    step: int
    train_loss: float
    train_precision: float
    validation: SplitResult
    learning_rate: float


class PeriodicEvaluation(keras.callbacks.Callback):
    """Every ``every`` steps (and at the last step): evaluate on validation, tell listeners.

    The training loss and precision are Keras's running means since the previous evaluation:
    the metrics are reset after each one, so each record describes its own period.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        validation: Split,
        every: int,
        total_steps: int,
        start_step: int = 0,
        listeners: list[Callable[[EvalRecord], None]] | None = None,
    ) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.validation = validation
        self.every = every
        self.total_steps = total_steps
        self.start_step = start_step
        self.listeners = list(listeners or [])
        self.seconds = 0.0  # time spent evaluating, kept out of the training throughput
        self.records: list[EvalRecord] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self.start_step + batch + 1
        previous = step - self.model.steps_per_execution
        if step // self.every == previous // self.every and step != self.total_steps:
            return
        started = time.perf_counter()
        logs = logs or {}
        record = EvalRecord(
            step=step,
            train_loss=float(logs.get("loss", math.nan)),
            train_precision=float(logs.get("precision", math.nan)),
            validation=self.evaluator.evaluate(self.validation),
            learning_rate=float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        )
        self.model.reset_metrics()
        self.records.append(record)
        for listener in self.listeners:
            listener(record)
        self.seconds += time.perf_counter() - started


class DivergenceGuard(keras.callbacks.Callback):
    """Stop with a clear error at the first NaN or Inf loss, instead of training on garbage."""

    def __init__(self, start_step: int = 0) -> None:
        super().__init__()
        self.start_step = start_step

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            step = self.start_step + batch + 1
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            raise DivergedError(
                f"training diverged at step {step}: loss is {loss} "
                f"(learning rate {lr:g}); try a smaller optimizer.lr"
            )


class TrainingClock(keras.callbacks.Callback):
    """Times training from the end of the first compiled call to the end of ``fit``.

    The first call traces and compiles the step, a one-off cost that is not throughput. Put it
    first in the callback list so that its mark precedes any periodic work at that step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.first_call_seconds = 0.0
        self.seconds_after_first_call = 0.0
        self._begin = 0.0
        self._first_done: float | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._begin = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._first_done is None:
            self._first_done = time.perf_counter()
            self.first_call_seconds = self._first_done - self._begin

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._first_done is not None:
            self.seconds_after_first_call = time.perf_counter() - self._first_done
