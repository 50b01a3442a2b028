"""Real MNIST, real CLI: the classic results come out of the presets and the default run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *overrides: str) -> dict:
    run_dir = tmp_path / "run"
    result = run_cli([*overrides, f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["num_examples"] == 55_000
    assert metrics["validation"]["num_examples"] == 5_000
    assert metrics["test"]["num_examples"] == 10_000
    return metrics


def test_softmax_tutorial_reaches_91_percent(tmp_path: Path) -> None:
    metrics = _run(tmp_path, "experiment=softmax_tutorial")
    assert metrics["step"] == 1000
    assert metrics["test"]["precision"] >= 0.91


def test_default_run_reaches_99_percent(tmp_path: Path) -> None:
    metrics = _run(tmp_path)
    assert metrics["test"]["precision"] >= 0.99


def test_cnn_fast_reaches_99_percent(tmp_path: Path) -> None:
    # The 99.2% target is measured by the benchmark; a test allows for run-to-run noise.
    metrics = _run(tmp_path, "experiment=cnn_fast")
    assert metrics["test"]["precision"] >= 0.99


def test_cnn_best_composes_and_trains(tmp_path: Path) -> None:
    # Its accuracy (>= 99.6% in under ten minutes) is the benchmark's to measure: a few steps
    # here show that the preset composes and runs, augmentation and all.
    metrics = _run(
        tmp_path,
        "experiment=cnn_best",
        "trainer.steps=40",
        "trainer.eval_every=20",
        "trainer.checkpoint_every=40",
    )
    config = metrics["config"]
    assert config["model"]["filters"] == [32, 64, 128]
    assert config["data"]["augment"]["enabled"] is True
    assert metrics["step"] == 40
