"""Random translation, rotation and zoom of training batches, drawn from (seed, step).

Each batch of step ``k`` is transformed with random numbers from a stateless generator keyed
by ``(seed, k)``: a resumed run transforms the batches after its checkpoint exactly as an
uninterrupted run does, with no generator state to save. One affine transform an image, done
by TensorFlow's ``ImageProjectiveTransformV3`` (what Keras's RandomRotation/RandomZoom/
RandomTranslation layers run), inside the tf.data pipeline, so the model and the exported
``model.keras`` stay free of augmentation layers.
"""

from __future__ import annotations

import math
from typing import Any

from mnist_lab.core.backend import tf

# Keeps augmentation's random stream apart from the data order's, which uses (seed, epoch).
_STREAM = 0x4155_4731


def augment_batch(images: tf.Tensor, step: tf.Tensor, seed: int, cfg: Any) -> tf.Tensor:
    """``images`` uint8 [n, h, w] moved, turned and scaled at random; uint8 [n, h, w] back."""
    n = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    key = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, _STREAM], tf.int64), tf.cast(step, tf.int64)
    )
    # Four numbers an image in [-1, 1): x shift, y shift, angle, zoom.
    u = tf.random.stateless_uniform([n, 4], seed=key, minval=-1.0, maxval=1.0)
    tx, ty = u[:, 0] * cfg.translate, u[:, 1] * cfg.translate
    angle = u[:, 2] * (cfg.rotate * math.pi / 180.0)
    scale = 1.0 + u[:, 3] * cfg.zoom
    # The transform maps each output pixel to where it reads in the input: the inverse of
    # "scale and turn about the centre, then shift".
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1, b0, b1 = cos, sin, -sin, cos
    a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
    b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32)[..., tf.newaxis],
        transforms=transforms,
        output_shape=tf.constant([height, width], tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return tf.cast(tf.clip_by_value(tf.round(moved[..., 0]), 0, 255), tf.uint8)
