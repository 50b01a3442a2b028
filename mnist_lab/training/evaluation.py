"""Precision@1 on a split, counted exactly by one compiled forward pass per batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnist_lab.core.backend import keras, tf
from mnist_lab.data import Split
from mnist_lab.data.pipeline import eval_batches
from mnist_lab.rundir.results import SplitResult


@dataclass(frozen=True, eq=False)
class Predictions:
    """A split's result and, for each example in order, its predicted class and probabilities."""

    result: SplitResult
    classes: np.ndarray  # int32 [n]
    probabilities: np.ndarray  # float32 [n, classes]: the softmax of the logits


class Evaluator:
    """Counts correct predictions with one compiled forward pass per batch.

    Kept apart from ``model.evaluate`` on purpose: evaluating mid-training must not reset
    the training metrics that ``fit`` is accumulating, and the report needs exact counts
    rather than a float mean.
    """

    def __init__(self, model: keras.Model, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self.num_classes = int(model.output_shape[-1])
        self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

        # One signature for every batch size and every caller (a callback inside ``fit``, the
        # final evaluation, ``mnist-lab-eval``): the step is traced once, never again.
        signature = (
            tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype),
            tf.TensorSpec((None,), tf.int32),
        )

        @tf.function(input_signature=signature)
        def step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, ...]:
            logits = self.model(images, training=False)
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
            correct = tf.reduce_sum(tf.cast(predicted == labels, tf.int32))
            return self._loss(labels, logits), correct, predicted, tf.nn.softmax(logits)

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

    def run(self, split: Split) -> Predictions:
        """The result on ``split``, with every predicted class and probability, in order."""
        if len(split) == 0:
            empty = np.zeros((0, self.num_classes), np.float32)
            return Predictions(SplitResult(0, 0, None), np.zeros(0, np.int32), empty)
        loss_sum, correct, predicted, probabilities = 0.0, 0, [], []
        for images, labels in self._batches_of(split):
            batch_loss, batch_correct, batch_predicted, batch_probabilities = self._step(
                images, labels
            )
            loss_sum += float(batch_loss)
            correct += int(batch_correct)
            predicted.append(batch_predicted.numpy())
            probabilities.append(batch_probabilities.numpy())
        n = len(split)
        return Predictions(
            SplitResult(n, correct, loss_sum / n),
            np.concatenate(predicted),
            np.concatenate(probabilities),
        )

    def evaluate(self, split: Split) -> SplitResult:
        return self.run(split).result


def per_class(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> dict[str, list]:
    """Each class's precision (the share of the examples predicted as it that are it), recall
    (the share of its examples predicted as it) and support (its examples); a precision or
    recall is null where there is nothing to divide by."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    hits, support, chosen = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    return {
        "precision": [int(h) / int(n) if n else None for h, n in zip(hits, chosen, strict=True)],
        "recall": [int(h) / int(n) if n else None for h, n in zip(hits, support, strict=True)],
        "support": [int(n) for n in support],
    }
