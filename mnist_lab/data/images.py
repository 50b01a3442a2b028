"""Your own images brought to what the models were trained on: 28x28 uint8, a light figure on
a black background.

For MNIST digits that is the MNIST convention (the digit's box scaled to fit 20x20, keeping its
aspect, then centred by its centre of mass in 28x28); for Fashion-MNIST and the synthetic set,
whose examples fill the frame, the image is padded square and scaled to 28x28.
"""

from __future__ import annotations

import logging
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_lab.core.errors import UserError

log = logging.getLogger(__name__)

SIZE = 28
DIGIT_BOX = 20  # MNIST: each digit's bounding box was scaled to fit 20x20
FITS = ("auto", "digit", "full")
# Larger images are refused before they are decoded: 100 megapixels is 400 MB as floats, and
# no photo of a digit needs it. Above Pillow's own limit (about 89 megapixels) we say why.
MAX_PIXELS = 100_000_000


def load_image(path: Path) -> Image.Image:
    """The image in ``path``, upright; UserError for a file that is not one, or far too big."""
    _refuse_special(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                pixels = image.width * image.height
                if pixels > MAX_PIXELS:
                    raise UserError(
                        f"{path}: {image.width}x{image.height} pixels is too large; expected "
                        f"at most {MAX_PIXELS // 1_000_000} megapixels (a digit needs 28x28)"
                    )
                if pixels > (Image.MAX_IMAGE_PIXELS or MAX_PIXELS):
                    log.warning("%s: a large image (%dx%d), this may take a while", path,
                                image.width, image.height)  # fmt: skip
                image.load()
                return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as ex:
        raise UserError(
            f"{path}: too large to decode ({ex}); expected at most "
            f"{MAX_PIXELS // 1_000_000} megapixels"
        ) from ex
    except (OSError, UnidentifiedImageError, ValueError) as ex:
        raise UserError(f"cannot read image {path}: {ex}") from ex


def _refuse_special(path: Path) -> None:
    """A FIFO, a device or a socket is refused before it is opened: reading one could block,
    or never end (``/dev/zero``). A missing file is left to the reader, which says so."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
        raise UserError(f"cannot read image {path}: {kind}; expected an image file")


def warn_if_blank(path: Path, image: Image.Image) -> bool:
    """Warn when the image is one colour all over (as a viewer shows it: a fully transparent
    image is white; one pixel is one colour): there is nothing for a model to see, whatever
    class it answers. True when it warned."""
    gray = to_gray(image)
    if gray.size > 1 and float(gray.max() - gray.min()) >= 1.0:
        return False
    log.warning(
        "%s: the image is one colour all over (%dx%d): there is nothing in it to classify, so "
        "its prediction means nothing",
        path,
        image.width,
        image.height,
    )
    return True


def to_gray(image: Image.Image) -> np.ndarray:
    """float32 [h, w] in 0..255; transparency is flattened onto white, as a viewer shows it."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32)


def light_on_dark(gray: np.ndarray) -> np.ndarray:
    """Invert when the background (judged by the border) is light: MNIST is white on black."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return 255.0 - gray if border.mean() > 127.5 else gray


def fit_full(gray: np.ndarray) -> np.ndarray:
    """Pad to a square (keeping the aspect) with the background, then scale to 28x28."""
    h, w = gray.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = gray
    return _resize(square, (SIZE, SIZE))


def fit_digit(gray: np.ndarray) -> np.ndarray:
    """MNIST's normalisation: the ink's box scaled into 20x20, centred by mass in 28x28."""
    ink = gray > 0.25 * gray.max() if gray.max() > 0 else np.zeros(gray.shape, bool)
    if not ink.any():
        return fit_full(gray)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    box = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = DIGIT_BOX / max(box.shape)
    h, w = (max(1, round(n * scale)) for n in box.shape)
    digit = _resize(box, (w, h)).astype(np.float32)
    return _center_by_mass(digit)


def _center_by_mass(digit: np.ndarray) -> np.ndarray:
    h, w = digit.shape
    mass = digit.sum()
    cy = (digit.sum(axis=1) @ np.arange(h)) / mass if mass else (h - 1) / 2
    cx = (digit.sum(axis=0) @ np.arange(w)) / mass if mass else (w - 1) / 2
    # Place the centre of mass at the canvas centre, without pushing the digit off it.
    top = int(np.clip(round((SIZE - 1) / 2 - cy), 0, SIZE - h))
    left = int(np.clip(round((SIZE - 1) / 2 - cx), 0, SIZE - w))
    canvas = np.zeros((SIZE, SIZE), np.float32)
    canvas[top : top + h, left : left + w] = digit
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``size`` is (width, height), as Pillow has it; anti-aliased, as MNIST's scaling was."""
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)


def preprocess(image: Image.Image, fit: str) -> np.ndarray:
    """uint8 [28, 28], a light figure on black, as the model was trained on."""
    gray = light_on_dark(to_gray(image))
    return fit_digit(gray) if fit == "digit" else fit_full(gray)
