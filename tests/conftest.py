"""Shared helpers: compose configs in-process, run the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from mnist_lab.config import register_configs

BIN = Path(sys.executable).parent
MNIST_LAB = str(BIN / "mnist-lab")

# A few hundred steps on the synthetic set: enough to learn it, seconds to run.
TINY = [
    "data=fake",
    "trainer.batch_size=32",
    "trainer.steps=60",
    "trainer.eval_every=30",
    "trainer.checkpoint_every=30",
    "optimizer.schedule.warmup_steps=5",
    "optimizer.lr=0.003",
]


def compose_config(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_module(config_module="mnist_lab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mnist-lab`` the way a user would."""
    return subprocess.run(
        [MNIST_LAB, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
