"""Results of an evaluation and the report table: shared by training, mnist-lab-eval and
mnist-lab-ensemble. No TensorFlow here, so commands that only read results start fast."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from mnist_lab.console import FILE_ONLY, console

log = logging.getLogger("mnist_lab.train")


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


def print_report(results: dict[str, SplitResult], title: str) -> None:
    table = Table(title=title)
    table.add_column("split")
    table.add_column("num_examples", justify="right")
    table.add_column("num_correct", justify="right")
    table.add_column("precision@1", justify="right")
    for name, r in results.items():
        precision = "n/a" if r.precision is None else f"{r.precision:.4f}"
        table.add_row(name, f"{r.num_examples:,}", f"{r.num_correct:,}", precision)
    console.print(table)
    for name, r in results.items():
        log.info(
            "%s: %d examples, %d correct, precision@1 %s",
            name,
            r.num_examples,
            r.num_correct,
            "n/a" if r.precision is None else f"{r.precision:.4f}",
            extra=FILE_ONLY,
        )


@dataclass(frozen=True)
class EvalRecord:
    """What one periodic evaluation saw: the training batches since the last one, and
    validation. The training figures are Keras's running means over that period."""

    step: int
    train_loss: float
    train_precision: float
    validation: SplitResult
    learning_rate: float
