"""The datasets: MNIST, Fashion-MNIST and a synthetic stand-in, split as the tutorials did.

No TensorFlow here (the CLI must start fast); the tf.data input pipeline is in
``mnist_lab.data.pipeline``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console

from mnist_lab.core.errors import UserError
from mnist_lab.data import fake, sources
from mnist_lab.data.idx import RawData

__all__ = ["CLASS_NAMES", "Dataset", "Split", "fingerprint", "load_dataset", "split_training_file"]

log = logging.getLogger(__name__)

DIGITS = tuple(str(d) for d in range(10))
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": DIGITS,
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "fake": DIGITS,
}


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarray fields has no single truth value
class Split:
    """Examples kept as stored: images (n, 28, 28) uint8 (scaled to [0, 1] later, in the model's
    graph), labels (n,) int32 class indices in 0..9."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str  # "mnist" | "fashion_mnist" | "fake"
    class_names: tuple[str, ...]
    train: Split
    validation: Split
    test: Split
    location: str  # where the files were read, recorded with the run
    fingerprint: str  # of the files' contents: a resumed run must see the same data


def load_dataset(cfg: Any, *, console: Console | None = None) -> Dataset:
    """Load the dataset ``cfg`` (the ``data`` config node) describes.

    ``console`` shows download progress. Raises UserError for anything the user can fix.
    """
    if cfg.name == "fake":
        raw = fake.generate(cfg.train_size, cfg.test_size)
        location = "synthetic (mnist_lab.data.fake)"
    else:
        got = sources.acquire(cfg.name, user_dir=cfg.dir, download=cfg.download, console=console)
        raw, location = got.data, str(got.location)
    train, validation = split_training_file(raw, cfg.validation_size, cfg.train_limit)
    return Dataset(
        name=cfg.name,
        class_names=CLASS_NAMES[cfg.name],
        train=train,
        validation=validation,
        test=Split(raw.test_images, raw.test_labels),
        location=location,
        fingerprint=fingerprint(raw),
    )


def fingerprint(raw: RawData) -> str:
    """sha256 of the four arrays, whatever files (IDX, .gz, .npz) they were read from."""
    digest = hashlib.sha256()
    for array in raw:
        digest.update(np.ascontiguousarray(array).tobytes())
    return f"sha256:{digest.hexdigest()}"


def split_training_file(
    raw: RawData, validation_size: int, train_limit: int | None
) -> tuple[Split, Split]:
    """(train, validation): validation is the first ``validation_size`` examples of the
    training file, train the rest, capped at its first ``train_limit`` examples."""
    total = len(raw.train_labels)
    if not 0 <= validation_size < total:
        raise UserError(
            f"data.validation_size={validation_size} is not valid: expected an integer in "
            f"[0, {total - 1}] (the training file has {total} examples)"
        )
    available = total - validation_size
    if train_limit is not None and not 1 <= train_limit <= available:
        raise UserError(
            f"data.train_limit={train_limit} is not valid: expected null or an integer in "
            f"[1, {available}] (the examples left after data.validation_size={validation_size})"
        )
    end = total if train_limit is None else validation_size + train_limit
    validation = Split(raw.train_images[:validation_size], raw.train_labels[:validation_size])
    train = Split(raw.train_images[validation_size:end], raw.train_labels[validation_size:end])
    return train, validation
