"""What an evaluation found: the counts of one split, and one periodic evaluation's record.
Plain values, saved in checkpoints and metrics.json, read by every command that reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SplitResult:
    num_examples: int
    num_correct: int
    loss: float | None

    @property
    def precision(self) -> float | None:
        return self.num_correct / self.num_examples if self.num_examples else None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitResult:
        return cls(d["num_examples"], d["num_correct"], d["loss"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_examples": self.num_examples,
            "num_correct": self.num_correct,
            "precision": self.precision,
            "loss": self.loss,
        }


@dataclass(frozen=True)
class EvalRecord:
    """What one periodic evaluation saw: the training batches since the last one, and
    validation. The training figures are Keras's running means over that period."""

    step: int
    train_loss: float
    train_precision: float
    validation: SplitResult
    learning_rate: float
