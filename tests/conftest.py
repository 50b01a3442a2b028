"""Shared helpers and fixtures: compose configs in-process, run the real CLI, a trained run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from hydra_plugins.mnist_lab_optuna import expose_to_hydra
from mnist_lab.config import register_configs

BIN = Path(sys.executable).parent
MNIST_LAB = str(BIN / "mnist-lab")
SPLITS = ("train", "validation", "test")

# A few dozen steps on the synthetic set: enough to learn it, seconds to run.
TINY = [
    "data=fake",
    "trainer.batch_size=32",
    "trainer.steps=60",
    "trainer.eval_every=30",
    "trainer.checkpoint_every=30",
    "optimizer.schedule.warmup_steps=5",
    "optimizer.lr=0.003",
]


def compose_config(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The config the CLI would compose for ``overrides`` (with Hydra's node if ``hydra``)."""
    register_configs()
    expose_to_hydra()  # the search presets name our sweeper
    with initialize_config_module(config_module="mnist_lab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``mnist-lab`` the way a user would."""
    return run_tool("mnist-lab", args, cwd, env, timeout)


def run_tool(
    tool: str,
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run one of the installed console scripts (mnist-lab-eval, ...)."""
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``mnist-lab`` in the background, stdout and stderr merged."""
    return subprocess.Popen(
        [MNIST_LAB, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_one_error_line(result: subprocess.CompletedProcess[str], needle: str) -> str:
    """Exit 2, exactly one line on stderr, it starts with ``error:``, names ``needle``."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def latest_step(run_dir: Path) -> int | None:
    """The step of the latest checkpoint recorded in TensorFlow's state file, if any."""
    try:
        state = (run_dir / "checkpoints" / "checkpoint").read_text()
    except FileNotFoundError:
        return None
    found = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state)
    return int(found.group(1)) if found else None


def wait_for_checkpoint(
    process: subprocess.Popen, run_dir: Path, at_least: int, timeout: float = 180
) -> None:
    """Return once ``run_dir`` has checkpointed step ``at_least`` or later."""
    deadline = time.monotonic() + timeout
    while (latest_step(run_dir) or 0) < at_least:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


# A small CNN with dropout, deterministic, checkpointed every 20 of 60 steps: an interrupted
# and resumed run of it must reproduce the uninterrupted one bit for bit.
RESUMABLE = [
    "data=fake",
    "model=cnn",
    "model.filters=[4,8]",
    "model.dense_units=16",
    "trainer.batch_size=32",
    "trainer.steps=60",
    "trainer.eval_every=30",
    "trainer.checkpoint_every=20",
    "trainer.deterministic=true",
]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted RESUMABLE run: what every resumed run must reproduce (read-only)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli([*RESUMABLE, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr
    return run_dir


# A small MLP run through the real CLI: what eval, predict, listing and the API tests read.
TRAINED = [
    "data=fake",
    "model=mlp",
    "optimizer.lr=0.003",
    "trainer.batch_size=32",
    "trainer.steps=60",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=20",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder (treat it as read-only: copy it to change it)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli([*TRAINED, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr
    return run_dir
