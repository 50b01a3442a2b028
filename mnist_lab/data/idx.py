"""Readers for the IDX files of MNIST / Fashion-MNIST (raw or .gz) and Keras's ``mnist.npz``.

Every header is checked, so a damaged or wrong file is reported as one line naming the file
instead of surfacing later as a reshape error or a silently wrong label.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mnist_lab.core.errors import UserError

IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension
ROWS = COLS = 28
NUM_CLASSES = 10

# The four files in the order RawData holds them.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# Called with each file's path and its decoded bytes (after gunzip): the hook sources.py uses
# to verify checksums without reading or decompressing a file twice.
BytesCheck = Callable[[Path, bytes], None]


class RawData(NamedTuple):
    """The official training and test files. Images (n, 28, 28) uint8, labels (n,) int32."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def read_bytes(path: Path) -> bytes:
    """The file's contents, gunzipped when the name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path}: expected a complete gzip file, found a damaged one ({e})") from e
    except OSError as e:
        raise UserError(f"{path}: expected a readable file, found: {e.strerror or e}") from e


def parse_images(data: bytes, name: str) -> np.ndarray:
    """Images from an IDX3 payload; a read-only view of ``data``."""
    count = _parse_header(data, name, IMAGES_MAGIC, header_size=16)
    rows, cols = struct.unpack(">2I", data[8:16])
    if (rows, cols) != (ROWS, COLS):
        raise UserError(f"{name}: expected {ROWS}x{COLS} images, found {rows}x{cols}")
    _check_length(data, name, 16 + count * ROWS * COLS, f"{count} images")
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, ROWS, COLS)


def parse_labels(data: bytes, name: str) -> np.ndarray:
    """Labels from an IDX1 payload, as int32."""
    count = _parse_header(data, name, LABELS_MAGIC, header_size=8)
    _check_length(data, name, 8 + count, f"{count} labels")
    labels = np.frombuffer(data, np.uint8, offset=8)
    _check_label_values(labels, name)
    return labels.astype(np.int32)


def load_idx(paths: Sequence[Path], check: BytesCheck | None = None) -> RawData:
    """Read the four IDX files, given in ``IDX_FILES`` order."""
    arrays = []
    for path, role in zip(paths, IDX_FILES, strict=True):
        data = read_bytes(path)
        if check is not None:
            check(path, data)
        parse = parse_images if "images" in role else parse_labels
        arrays.append(parse(data, str(path)))
    raw = RawData(*arrays)
    _check_counts(raw, [str(p) for p in paths])
    return raw


def load_npz(path: Path, check: BytesCheck | None = None) -> RawData:
    """Read Keras's ``mnist.npz`` (x_train, y_train, x_test, y_test)."""
    data = read_bytes(path)
    if check is not None:
        check(path, data)
    name = str(path)
    arrays = _npz_arrays(data, name)
    raw = RawData(
        _check_image_array(arrays["x_train"], f"{name}[x_train]"),
        _check_label_array(arrays["y_train"], f"{name}[y_train]"),
        _check_image_array(arrays["x_test"], f"{name}[x_test]"),
        _check_label_array(arrays["y_test"], f"{name}[y_test]"),
    )
    _check_counts(raw, [f"{name}[{key}]" for key in NPZ_KEYS])
    return raw


def _npz_arrays(data: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise UserError(f"{name}: expected a NumPy .npz archive, found a single .npy array")
        with npz:
            if not set(NPZ_KEYS) <= set(npz.files):
                raise UserError(
                    f"{name}: expected arrays {', '.join(NPZ_KEYS)}, found {', '.join(npz.files)}"
                )
            return {key: npz[key] for key in NPZ_KEYS}
    except (zipfile.BadZipFile, ValueError, EOFError, zlib.error) as e:
        raise UserError(f"{name}: expected a NumPy .npz archive, found a damaged file ({e})") from e


def _parse_header(data: bytes, name: str, magic: int, header_size: int) -> int:
    """Check the magic number and return the item count."""
    if len(data) < header_size:
        raise UserError(
            f"{name}: expected an IDX header of {header_size} bytes, found a {len(data)}-byte file"
        )
    found, count = struct.unpack(">2I", data[:8])
    if found != magic:
        raise UserError(f"{name}: expected magic {magic}, found {found}")
    if count == 0:
        raise UserError(f"{name}: expected at least one item, found a count of 0")
    return count


def _check_length(data: bytes, name: str, expected: int, what: str) -> None:
    if len(data) != expected:
        raise UserError(
            f"{name}: expected {expected} bytes for {what} (as the header says), found {len(data)}"
        )


def _check_label_values(labels: np.ndarray, name: str) -> None:
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        index = int(np.argmax(bad))
        raise UserError(
            f"{name}: expected labels in 0..{NUM_CLASSES - 1}, "
            f"found {labels[index]} at index {index}"
        )


def _check_image_array(images: np.ndarray, name: str) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (ROWS, COLS):
        raise UserError(
            f"{name}: expected uint8 images of shape (n, {ROWS}, {COLS}), "
            f"found {images.dtype} {images.shape}"
        )
    return images


def _check_label_array(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{name}: expected a 1-D integer label array, found {labels.dtype} {labels.shape}"
        )
    _check_label_values(labels, name)
    return labels.astype(np.int32)


def _check_counts(raw: RawData, names: Sequence[str]) -> None:
    """Each image file must have exactly as many items as its label file."""
    for images, labels, images_name, labels_name in (
        (raw.train_images, raw.train_labels, names[0], names[1]),
        (raw.test_images, raw.test_labels, names[2], names[3]),
    ):
        if len(images) != len(labels):
            raise UserError(
                f"{labels_name}: expected {len(images)} labels (one per image in {images_name}), "
                f"found {len(labels)}"
            )
