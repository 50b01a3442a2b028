"""TensorBoard summaries of a run (placeholder: filled in by the TensorBoard work)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_lab.backend import keras
from mnist_lab.callbacks import EvalRecord
from mnist_lab.evaluation import Evaluator, SplitResult


class RunSummaries:
    def __init__(
        self, log_dir: Path, model: keras.Model, cfg: Any, data: Any, evaluator: Evaluator
    ) -> None:
        self.log_dir = log_dir
        self.seconds = 0.0

    def callbacks(self, start_step: int) -> list[keras.callbacks.Callback]:
        return []

    def on_evaluation(self, record: EvalRecord) -> None:
        pass

    def on_end(self, results: dict[str, SplitResult]) -> None:
        pass
