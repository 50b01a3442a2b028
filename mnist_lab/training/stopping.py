"""Stopping rules: early stopping on a validation metric, and a target validation precision.

Keras's ``EarlyStopping`` works on epochs and keeps its state in the callback, where no
checkpoint sees it; here a run is one epoch of evaluations every ``trainer.eval_every`` steps,
and a run killed and resumed must stop at the same step. So the rules are a small state
machine fed each periodic evaluation, and its whole state is a vector of numbers that every
checkpoint holds (``as_vector`` / ``load_vector``). No TensorFlow here.

The same comparison chooses the best evaluation whether or not early stopping is on: the
monitored value beats the best so far by more than ``min_delta`` (Keras's rule). Without early
stopping that is validation precision, strictly higher, as the best checkpoint always was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mnist_lab.rundir.results import EvalRecord

STEPS, EARLY_STOPPING, TARGET = "steps", "early_stopping", "target"
_REASONS = (None, EARLY_STOPPING, TARGET)  # their codes in the vector: 0, 1, 2
MONITORS = ("validation.precision", "validation.loss")


@dataclass(frozen=True)
class Decision:
    improved: bool  # this evaluation is the new best: keep its weights
    stop: str | None  # EARLY_STOPPING or TARGET: training ends at this evaluation


class StoppingRules:
    """The rules of one run (``cfg.trainer``) and what they have seen so far."""

    def __init__(self, trainer: Any) -> None:
        early = trainer.early_stopping
        self.patience: int | None = early.patience
        self.monitor = early.monitor if self.patience is not None else "validation.precision"
        self.min_delta = float(early.min_delta) if self.patience is not None else 0.0
        self.restore_best = bool(early.restore_best) and self.patience is not None
        self.target: float | None = trainer.target_precision
        self.higher_is_better = self.monitor.endswith("precision")
        # The state: every field below is in the checkpoint vector.
        self.best_value: float | None = None
        self.best_step = 0
        self.without_improvement = 0
        self.stopped: str | None = None
        self.stop_step = 0
        self.target_step: int | None = None
        self.target_training_seconds: float | None = None
        self.target_wall_seconds: float | None = None
        # The run's training and wall seconds up to its latest checkpoint: a resumed process
        # adds its own to these, so the work redone after the checkpoint counts once.
        self.training_seconds = 0.0
        self.wall_seconds = 0.0

    @property
    def enabled(self) -> bool:
        """Whether a rule can stop the run (else its checkpoints keep no stopping state)."""
        return self.patience is not None or self.target is not None

    # ------------------------------------------------------------ at each evaluation

    def observe(
        self, record: EvalRecord, training_seconds: float, wall_seconds: float, final: bool
    ) -> Decision:
        """Take one periodic evaluation; the times are the run's so far, earlier processes'
        included (the target's time to accuracy). At the ``final`` step nothing stops the run
        early: its reason stays ``steps``, though the target's figures are still recorded."""
        value = _monitored(record, self.monitor)
        improved = value is not None and (self.best_value is None or self._beats(value))
        if improved:
            assert value is not None
            self.best_value, self.best_step, self.without_improvement = value, record.step, 0
        else:
            self.without_improvement += 1
        precision = record.validation.precision
        if self.target is not None and self.target_step is None and precision is not None:
            if precision >= self.target:
                self.target_step = record.step
                self.target_training_seconds = training_seconds
                self.target_wall_seconds = wall_seconds
                if not final:
                    return self._stop(TARGET, record.step, improved)
        if final:
            return Decision(improved, None)
        if self.patience is not None and self.without_improvement >= self.patience:
            return self._stop(EARLY_STOPPING, record.step, improved)
        return Decision(improved, None)

    def _beats(self, value: float) -> bool:
        assert self.best_value is not None
        if self.higher_is_better:
            return value - self.min_delta > self.best_value
        return value + self.min_delta < self.best_value

    def _stop(self, reason: str, step: int, improved: bool) -> Decision:
        self.stopped, self.stop_step = reason, step
        return Decision(improved, reason)

    # ------------------------------------------------------------ the record

    def reported_step(self, last_step: int) -> int:
        """The step whose weights the run reports: the last step trained, or with restore_best
        the best evaluation's. A target's stop reports the weights that reached the target
        (with a min_delta, the best by the rule could be an earlier, lower one)."""
        if self.stopped == TARGET or not (self.restore_best and self.best_step):
            return last_step
        return self.best_step

    def record(self, last_step: int, batch_size: int) -> dict[str, Any]:
        """``metrics.json``'s ``stop`` object."""
        stop: dict[str, Any] = {
            "reason": self.stopped or STEPS,
            "step": last_step,
            "best_step": self.reported_step(last_step),
        }
        if self.patience is not None:
            stop["monitor"] = self.monitor
            stop["best_value"] = self.best_value
        if self.target is not None:
            step = self.target_step
            stop["target"] = {
                "precision": self.target,
                "reached": step is not None,
                "step": step,
                "training_seconds": self.target_training_seconds,
                "wall_seconds": self.target_wall_seconds,
                "examples": None if step is None else step * batch_size,
            }
        return stop

    # ------------------------------------------------------------ checkpointed state

    VECTOR_SIZE = 10

    def as_vector(self) -> list[float]:
        return [
            _number(self.best_value),
            float(self.best_step),
            float(self.without_improvement),
            float(_REASONS.index(self.stopped)),
            float(self.stop_step),
            _number(self.target_step),
            _number(self.target_training_seconds),
            _number(self.target_wall_seconds),
            self.training_seconds,
            self.wall_seconds,
        ]

    def load_vector(self, vector: list[float]) -> None:
        best, best_step, without, reason, stop_step, target_step, train_s, wall_s, *times = vector
        self.best_value = _optional(best)
        self.best_step, self.without_improvement = int(best_step), int(without)
        self.stopped, self.stop_step = _REASONS[int(reason)], int(stop_step)
        target = _optional(target_step)
        self.target_step = None if target is None else int(target)
        self.target_training_seconds = _optional(train_s)
        self.target_wall_seconds = _optional(wall_s)
        self.training_seconds, self.wall_seconds = times


def _monitored(record: EvalRecord, monitor: str) -> float | None:
    value = getattr(record.validation, monitor.partition(".")[2])
    return float(value) if value is not None and math.isfinite(value) else None


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
