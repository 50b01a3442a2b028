"""``mnist-lab-predict``: classify your own images with a trained run's model.

Images of any size and mode are brought to what the model was trained on: 28x28 uint8, a light
figure on a black background. For MNIST digits that is the MNIST convention (the digit's box
scaled to fit 20x20, keeping its aspect, then centred by its centre of mass in 28x28); for
Fashion-MNIST and the synthetic set, whose examples fill the frame, the image is padded square
and scaled to 28x28.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_lab.console import console, error_line
from mnist_lab.errors import EXIT_USER_ERROR, UserError
from mnist_lab.evaluate import CHECKPOINTS_DIR, CONFIG_FILE, MODEL_FILE

SIZE = 28
DIGIT_BOX = 20  # MNIST: each digit's bounding box was scaled to fit 20x20
FITS = ("auto", "digit", "full")
DIGITS = tuple(str(d) for d in range(10))


# ---------------------------------------------------------------- preprocessing


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, UnidentifiedImageError) as ex:
        raise UserError(f"cannot read image {path}: {ex}") from ex


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


# ---------------------------------------------------------------- model


def load_model(path: Path) -> tuple[Any, Any]:
    """The Keras model of a run dir (its model.keras, else its latest checkpoint) or of a
    .keras file, and the run's saved config when there is one (else None)."""
    run_dir = path if path.is_dir() else path.parent
    config_path = run_dir / CHECKPOINTS_DIR / CONFIG_FILE
    model_file = path / MODEL_FILE if path.is_dir() else path
    if not model_file.is_file() and not (path.is_dir() and config_path.is_file()):
        raise UserError(f"no model at {path}: expected a run dir of mnist-lab or a .keras file")

    from mnist_lab.backend import keras  # TensorFlow: only now that there is a model to load
    from mnist_lab.checkpoints import load_config

    cfg = load_config(config_path) if config_path.is_file() else None
    if model_file.is_file():
        try:
            return keras.saving.load_model(model_file, compile=False), cfg
        except Exception as ex:  # any file Keras cannot load is the user's to fix
            raise UserError(f"cannot load the model {model_file}: {ex}") from ex
    return _model_from_checkpoint(run_dir, cfg), cfg


def _model_from_checkpoint(run_dir: Path, cfg: Any) -> Any:
    """A run without model.keras (stopped before the end): its latest checkpoint."""
    from mnist_lab.checkpoints import latest_checkpoint, restore_model
    from mnist_lab.train import build_compiled_model

    model = build_compiled_model(cfg)
    restore_model(model, latest_checkpoint(run_dir / CHECKPOINTS_DIR))
    return model


def choose_fit(fit: str, cfg: Any) -> str:
    """``auto``: MNIST digits were boxed in 20x20; other sets fill the frame."""
    if fit != "auto":
        return fit
    return "full" if cfg is not None and cfg.data.name != "mnist" else "digit"


def class_names(cfg: Any) -> tuple[str, ...]:
    if cfg is None:
        return DIGITS
    from mnist_lab.data import CLASS_NAMES

    return CLASS_NAMES.get(cfg.data.name, DIGITS)


# ---------------------------------------------------------------- output


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def print_prediction(path: Path, probabilities: np.ndarray, names: tuple[str, ...]) -> None:
    """``path: <class> (p)``, then one line per class with a bar, the winner marked."""
    best = int(probabilities.argmax())
    # soft_wrap: a long path stays on its line, whatever the width of the terminal.
    console.print(
        f"{path}: {names[best]} ({probabilities[best]:.1%})", markup=False, soft_wrap=True
    )
    width = max(len(name) for name in names)
    for i, p in enumerate(probabilities):
        mark = "*" if i == best else " "
        console.print(f"  {mark} {names[i]:>{width}} {p:7.2%}  {'#' * round(p * 40)}", markup=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mnist-lab-predict",
        description="Classify PNG/JPEG images (any size) with an mnist-lab model.",
    )
    parser.add_argument("model", type=Path, help="a run directory or a .keras model file")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    parser.add_argument(
        "--fit",
        choices=FITS,
        default="auto",
        help="digit: MNIST's 20x20 box centred by mass; full: scale the whole image; "
        "auto (default): digit for MNIST runs, full for the others",
    )
    return parser.parse_args(argv)


def predict(model_path: Path, images: list[Path], fit: str = "auto") -> np.ndarray:
    """Print and return the class probabilities [n, classes] of ``images``."""
    batch = [load_image(p) for p in images]  # bad files fail before TensorFlow loads
    model, cfg = load_model(model_path)
    fit = choose_fit(fit, cfg)
    x = np.stack([preprocess(image, fit) for image in batch])
    probabilities = softmax(np.asarray(model.predict(x, verbose=0), dtype=np.float64))
    for path, p in zip(images, probabilities, strict=True):
        print_prediction(path, p, class_names(cfg))
    return probabilities


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        predict(args.model, args.images, args.fit)
    except UserError as ex:
        error_line(str(ex))
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
