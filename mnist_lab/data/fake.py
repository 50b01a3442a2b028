"""A small synthetic stand-in for MNIST (Mechanics 101's ``fake_data``), for tests and smoke runs.

Each class is a fixed blocky 28x28 template; an example is its class's template, shifted by up
to two pixels, dimmed a little and covered in Gaussian noise. It is easy on purpose: a softmax
model or a small CNN gets near 100% within a few hundred steps, so a smoke run shows learning.
The arrays depend only on the requested sizes, never on the run's seed.
"""

from __future__ import annotations

import numpy as np

from mnist_lab.data.idx import COLS, NUM_CLASSES, ROWS, RawData

_SEED = 101  # fixed on purpose: the data is part of the problem, not of the run
_MAX_SHIFT = 2
_NOISE_STD = 40.0
_INK = 230.0


def generate(train_size: int, test_size: int) -> RawData:
    """A training file of ``train_size`` and a test file of ``test_size`` examples."""
    templates = _templates()
    # Separate streams: the test set does not change when train_size does.
    train_images, train_labels = _sample(templates, train_size, stream=1)
    test_images, test_labels = _sample(templates, test_size, stream=2)
    return RawData(train_images, train_labels, test_images, test_labels)


def _templates() -> np.ndarray:
    """(10, 28, 28) float32: random 7x7 on/off grids blown up to 28x28."""
    rng = np.random.default_rng([_SEED, 0])
    coarse = rng.random((NUM_CLASSES, ROWS // 4, COLS // 4)) < 0.35
    return np.kron(coarse, np.ones((4, 4))).astype(np.float32) * _INK


def _sample(templates: np.ndarray, n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([_SEED, stream])
    # Balanced classes, so every class is present whenever n >= 10.
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int32)
    dy, dx = rng.integers(-_MAX_SHIFT, _MAX_SHIFT + 1, size=(2, n))
    padded = np.pad(templates, ((0, 0), (_MAX_SHIFT, _MAX_SHIFT), (_MAX_SHIFT, _MAX_SHIFT)))
    # One gather shifts every example at once: output pixel (r, c) reads template (r-dy, c-dx).
    rows = np.arange(ROWS) - dy[:, None] + _MAX_SHIFT
    cols = np.arange(COLS) - dx[:, None] + _MAX_SHIFT
    images = padded[labels[:, None, None], rows[:, :, None], cols[:, None, :]]
    images *= rng.uniform(0.6, 1.0, size=(n, 1, 1)).astype(np.float32)
    images += rng.standard_normal(images.shape, dtype=np.float32) * _NOISE_STD
    return np.clip(images, 0, 255).astype(np.uint8), labels
