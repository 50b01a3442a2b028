"""Precision@1 on a split, counted exactly, and the Mechanics 101 style report."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from mnist_lab.backend import keras, tf
from mnist_lab.console import FILE_ONLY, console
from mnist_lab.data import Split
from mnist_lab.data.pipeline import eval_batches

log = logging.getLogger("mnist_lab.train")


SPLITS = ("train", "validation", "test")


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


class Evaluator:
    """Counts correct predictions with one compiled forward pass per batch.

    Kept apart from ``model.evaluate`` on purpose: evaluating mid-training must not reset
    the training metrics that ``fit`` is accumulating, and the report needs exact counts
    rather than a float mean.
    """

    def __init__(self, model: keras.Model, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

        # One signature for every batch size and every caller (a callback inside ``fit``, the
        # final evaluation, ``mnist-lab-eval``): the step is traced once, never again.
        signature = (
            tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype),
            tf.TensorSpec((None,), tf.int32),
        )

        @tf.function(input_signature=signature)
        def step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            logits = self.model(images, training=False)
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
            correct = tf.reduce_sum(tf.cast(predicted == labels, tf.int32))
            return self._loss(labels, logits), correct, predicted

        self._step = step
        # One pipeline per split, built on first use: each evaluation of the validation split
        # would otherwise copy its images into a new constant and trace the pipeline again.
        self._batches: dict[int, tuple[Split, tf.data.Dataset]] = {}

    @property
    def traces(self) -> int:
        """How many times the step was traced: 1 once it has run, whatever the batches."""
        return int(self._step.experimental_get_tracing_count())

    def _batches_of(self, split: Split) -> tf.data.Dataset:
        if id(split) not in self._batches:
            self._batches[id(split)] = (split, eval_batches(split, self.batch_size))
        return self._batches[id(split)][1]

    def run(self, split: Split) -> tuple[SplitResult, np.ndarray]:
        """The result on ``split`` and every predicted class, in order."""
        if len(split) == 0:
            return SplitResult(0, 0, None), np.zeros(0, np.int32)
        loss_sum, correct, predicted = 0.0, 0, []
        for images, labels in self._batches_of(split):
            batch_loss, batch_correct, batch_predicted = self._step(images, labels)
            loss_sum += float(batch_loss)
            correct += int(batch_correct)
            predicted.append(batch_predicted.numpy())
        n = len(split)
        return SplitResult(n, correct, loss_sum / n), np.concatenate(predicted)

    def evaluate(self, split: Split) -> SplitResult:
        return self.run(split)[0]


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


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Write JSON atomically: a reader never sees a half-written metrics.json."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, path)
