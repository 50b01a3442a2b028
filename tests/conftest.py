"""Shared helpers and fixtures: compose configs in-process, run the real CLI, a trained run."""

from __future__ import annotations

import fcntl
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
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


def run_without_room(
    tool: str,
    args: list[str],
    cwd: Path,
    stdout: Path | None = None,
    file_size: int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a console script short of room: ``stdout`` to that file (``/dev/full``: a device
    that is always full) and, with ``file_size``, every file it writes limited to that many
    bytes (``ulimit -f``; SIGXFSZ ignored, so that a write past it fails with EFBIG)."""

    def limit() -> None:
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    with open(stdout or os.devnull, "w") as out:
        return subprocess.run(
            [str(BIN / tool), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out if stdout else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
            preexec_fn=limit,
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
    process: subprocess.Popen, run_dir: Path, at_least: int, timeout: float = 300
) -> None:
    """Return once ``run_dir`` has checkpointed step ``at_least`` or later."""
    deadline = time.monotonic() + timeout
    while (latest_step(run_dir) or 0) < at_least:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)


def shared_folder(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """A folder that ``build`` fills once per test session, however many pytest-xdist workers
    ask for it: the first builds it, the others wait for it. Read-only: copy it to change it."""
    base = factory.getbasetemp()
    # Every worker's base is <the session's base>/popen-gwN: the session's base is common.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, built = root / f"shared-{name}", root / f"shared-{name}.built"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a build that failed left
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


def shared_run(factory: pytest.TempPathFactory, name: str, args: list[str]) -> Path:
    """The run folder of ``mnist-lab args``, trained once per session (see shared_folder)."""

    def build(folder: Path) -> None:
        result = run_cli([*args, f"hydra.run.dir={folder / 'run'}"], cwd=folder)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    return shared_folder(factory, name, build) / "run"


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
    return shared_run(tmp_path_factory, "reference", RESUMABLE)


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
    return shared_run(tmp_path_factory, "trained", TRAINED)


# How `make test` shares the tests out (pytest-xdist, --dist loadscope): a module's tests run on
# one worker, in order, so that the module's fixtures are made once -- a sweep, a tree of runs
# with a live process holding one, a SLURM cluster, a PostgreSQL server. The modules below are
# the exception, spread test by test over the workers: the longest ones, whose tests share only
# session fixtures or shared_folder's folders.
SPREAD = {"test_faults.py", "test_loop.py", "test_resume.py", "test_stopping.py",
          "test_eval_predict.py"}  # fmt: skip


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: plain pytest runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadscope":
        return None  # pytest-xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return nodeid if Path(module).name in SPREAD else module

    return Scheduler(config, log)
