"""The real ``mnist-lab`` console script: help, config printing and user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


def test_help_lists_groups(tmp_path: Path) -> None:
    result = run_cli(["--help"], cwd=tmp_path)
    assert result.returncode == 0
    for text in ("model: cnn, mlp, softmax", "experiment:", "optimizer:", "trainer.steps"):
        assert text in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_cfg_job_prints_the_config(tmp_path: Path) -> None:
    result = run_cli(["--cfg", "job", "model=mlp"], cwd=tmp_path)
    assert result.returncode == 0
    assert "hidden_units:" in result.stdout


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model=resnet", "model/resnet"),
        ("optimizer.lr=abc", "optimizer.lr"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.stepz=3", "stepz"),
        ("data.validation_size=70000", "data.validation_size"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, override: str, needle: str) -> None:
    result = run_cli([override], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    # Nothing was started: no run directory was created.
    assert not (tmp_path / "outputs").exists()


def test_bad_value_in_a_sweep_fails_before_any_job(tmp_path: Path) -> None:
    result = run_cli(["-m", "data=fake", "optimizer.lr=0.1,-1"], cwd=tmp_path)
    assert result.returncode == 2
    assert "optimizer.lr" in result.stderr
    assert not (tmp_path / "outputs").exists()
