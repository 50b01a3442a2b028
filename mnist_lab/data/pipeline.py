"""The tf.data input pipeline.

The training order is a pure function of (seed, step): epoch ``e`` is a stateless shuffle seeded
by ``(seed, e)``, and the stream is those epochs back to back, cut into batches. Augmentation,
when on, is drawn from (seed, step) too. A run resumed at step ``k`` therefore sees exactly the
batches an uninterrupted run would, and a checkpoint needs no iterator state, only the step.
"""

from __future__ import annotations

from typing import Any

from mnist_lab.core.backend import tf
from mnist_lab.core.errors import UserError
from mnist_lab.data import Split
from mnist_lab.data.augment import augment_batch


def train_batches(
    split: Split, batch_size: int, seed: int, start_step: int = 0, augment: Any = None
) -> tf.data.Dataset:
    """Endless ``(images uint8 [batch, 28, 28], labels int32 [batch])``, from ``start_step``.

    Every batch has exactly ``batch_size`` examples; batches straddle epoch boundaries.
    ``augment`` is the ``data.augment`` config node (or None): when enabled, each batch is
    transformed as ``mnist_lab.data.augment`` describes.
    """
    n = len(split)
    if batch_size > n:
        raise UserError(
            f"trainer.batch_size={batch_size} is not valid: expected at most the {n} examples "
            "of the training split"
        )
    images, labels = _constants(split)
    # Jump straight to the epoch and offset of the first example: resuming costs nothing.
    start_epoch, offset = divmod(start_step * batch_size, n)
    seed_t = tf.constant(seed, tf.int64)

    def epoch_order(epoch: tf.Tensor) -> tf.Tensor:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int32), seed=tf.stack([seed_t, epoch])
        )
        return order[tf.where(epoch == start_epoch, offset, 0) :]

    indices = (
        tf.data.Dataset.counter(start_epoch)
        .map(epoch_order)
        # One epoch is one "batch" of indices; rebatch is unbatch().batch() with a single copy.
        .rebatch(batch_size, drop_remainder=True)
    )
    if augment is not None and augment.enabled:
        steps = tf.data.Dataset.counter(start_step)

        def gather(step: tf.Tensor, i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return augment_batch(tf.gather(images, i), step, seed, augment), tf.gather(labels, i)

        batches = tf.data.Dataset.zip(steps, indices).map(gather, num_parallel_calls=2)
    else:
        batches = indices.map(
            lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=2
        )
    return _without_autotune(batches.prefetch(2))


def eval_batches(split: Split, batch_size: int) -> tf.data.Dataset:
    """The split in order, in batches of ``batch_size`` (the last may be smaller)."""
    images, labels = _constants(split)
    n = len(split)
    batches = tf.data.Dataset.range(0, n, batch_size).map(
        lambda start: (images[start : start + batch_size], labels[start : start + batch_size])
    )
    return _without_autotune(batches.prefetch(2))


def _without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Fixed, small buffers instead of tf.data's autotuning.

    Gathering a batch of uint8 images takes microseconds: two threads and a two-batch buffer
    keep ahead of any model here (the softmax's short steps included). Autotuning would add a
    thread whose optimization loop sleeps for up to a minute between passes, and destroying
    the iterator at the end of ``fit`` waited for it: caught with py-spy, the default run sat
    idle for about a minute after its last step.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _constants(split: Split) -> tuple[tf.Tensor, tf.Tensor]:
    # On the CPU, where tf.data runs: no copy back from an accelerator per batch.
    with tf.device("/cpu:0"):
        return tf.constant(split.images, tf.uint8), tf.constant(split.labels, tf.int32)
