"""``mnist-lab-predict``: classify your own images with a trained run's model.

Images of any size and mode are brought to the training data's convention first
(``mnist_lab.data.images``); the model is the run's ``model.keras``, or its latest checkpoint when
the run has not finished.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab.commands import run_command
from mnist_lab.core.console import console
from mnist_lab.core.errors import UserError
from mnist_lab.data import CLASS_NAMES, DIGITS
from mnist_lab.data.images import FITS, load_image, preprocess, warn_if_blank
from mnist_lab.rundir import records, resume
from mnist_lab.rundir.layout import CHECKPOINTS, MODEL

# ---------------------------------------------------------------- model


def load_model(path: Path) -> tuple[Any, Any]:
    """The Keras model of a run dir (its model.keras, else its latest checkpoint) or of a
    .keras file, and the config of the run it belongs to, when there is one (else None)."""
    run_dir = path if path.is_dir() else path.parent
    model_file = path / MODEL if path.is_dir() else path
    # The run's config, checked; a bare .keras file (no run around it) has none.
    has_config = records.read_run(run_dir).config is not None
    cfg = resume.recorded_config(run_dir) if has_config else None
    if not model_file.is_file() and not (path.is_dir() and cfg is not None):
        raise UserError(f"no model at {path}: expected a run dir of mnist-lab or a .keras file")

    from mnist_lab.training.models import (
        load_exported,  # TensorFlow: only now that there is a model
    )

    if model_file.is_file():
        return load_exported(model_file), cfg
    return _model_from_checkpoint(run_dir, cfg), cfg


def _model_from_checkpoint(run_dir: Path, cfg: Any) -> Any:
    """A run without model.keras (stopped before the end): its latest checkpoint."""
    from mnist_lab.rundir.checkpoints import latest_checkpoint, restore_model
    from mnist_lab.training.models import build_compiled_model

    model = build_compiled_model(cfg)
    restore_model(model, latest_checkpoint(run_dir / CHECKPOINTS))
    return model


def choose_fit(fit: str, cfg: Any) -> str:
    """``auto``: MNIST digits were boxed in 20x20; other sets fill the frame."""
    if fit != "auto":
        return fit
    return "full" if cfg is not None and cfg.data.name != "mnist" else "digit"


def class_names(cfg: Any) -> tuple[str, ...]:
    return DIGITS if cfg is None else CLASS_NAMES.get(cfg.data.name, DIGITS)


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
    for path, image in zip(images, batch, strict=True):  # once nothing can fail: no error after
        warn_if_blank(path, image)
    fit = choose_fit(fit, cfg)
    x = np.stack([preprocess(image, fit) for image in batch])
    probabilities = softmax(np.asarray(model.predict(x, verbose=0), dtype=np.float64))
    for path, p in zip(images, probabilities, strict=True):
        print_prediction(path, p, class_names(cfg))
    return probabilities


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_command(lambda: predict(args.model, args.images, args.fit))


if __name__ == "__main__":
    main()
