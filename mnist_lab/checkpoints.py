"""Checkpoints and resume (placeholder: filled in by the checkpoint work)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist_lab.backend import keras
from mnist_lab.callbacks import EvalRecord


class Checkpoints:
    def __init__(self, directory: Path, model: keras.Model, cfg: Any) -> None:
        self.directory = directory
        self.seconds = 0.0

    def restore_latest(self) -> int:
        return 0

    def on_evaluation(self, record: EvalRecord) -> None:
        pass

    def callback(self, start_step: int) -> keras.callbacks.Callback:
        return keras.callbacks.Callback()

    @contextmanager
    def saved_on_interrupt(self) -> Iterator[None]:
        yield

    def export(self, run_dir: Path) -> None:
        pass
