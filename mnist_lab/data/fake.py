"""A small synthetic stand-in for MNIST (Mechanics 101's ``fake_data``), for tests and smoke runs.

Each class is a fixed blocky 28x28 template; an example is its class's template, shifted by up
to three pixels, dimmed and covered in Gaussian noise. The ten templates share most of their
cells (each redraws 40% of a common base), so the classes overlap: learning takes a few dozen
steps (a softmax model with Adam reaches about 96% test in 60 steps of 32), one giant step of
a broken optimizer does not get there, and a loss that explodes shows in the metrics. The
arrays depend only on the requested sizes, never on the run's seed.
"""

from __future__ import annotations

import numpy as np

from mnist_lab.data.idx import COLS, NUM_CLASSES, ROWS, RawData

_SEED = 101  # fixed on purpose: the data is part of the problem, not of the run
_MAX_SHIFT = 3
_NOISE_STD = 50.0
_INK = 230.0
_ON = 0.35  # the share of a template's 7x7 cells that carry ink
_OWN = 0.4  # the share of cells each class draws anew instead of taking the common base


def generate(train_size: int, test_size: int) -> RawData:
    """A training file of ``train_size`` and a test file of ``test_size`` examples."""
    templates = _templates()
    # Separate streams: the test set does not change when train_size does.
    train_images, train_labels = _sample(templates, train_size, stream=1)
    test_images, test_labels = _sample(templates, test_size, stream=2)
    return RawData(train_images, train_labels, test_images, test_labels)


def _templates() -> np.ndarray:
    """(10, 28, 28) float32: random 7x7 on/off grids around a common base, blown up to 28x28."""
    rng = np.random.default_rng([_SEED, 0])
    shape = (ROWS // 4, COLS // 4)
    base = rng.random(shape) < _ON
    coarse = np.array(
        [
            np.where(rng.random(shape) < _OWN, rng.random(shape) < _ON, base)
            for _ in range(NUM_CLASSES)
        ]
    )
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
