"""Runs made by an older mnist-lab still work: listed, reused, resumed and evaluated.

The older mnist-lab is the real one, taken from this repository's history (the last commit
before the package was regrouped into subpackages and gained stopping rules) and run from its
own source tree; the run folders it writes are then handed to the mnist-lab of today.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RESUMABLE, SPLITS, read_json, run_cli, run_tool

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
OLDER = "09ebf8fb8022e01ca1f65c4d1a0e28525f2c3c7d"


@pytest.fixture(scope="module")
def older(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The older source tree, importable as ``mnist_lab`` (its config tree beside it)."""
    if not (REPO / ".git").exists():
        pytest.skip("needs the repository's git history (run from a git clone)")
    tree = tmp_path_factory.mktemp("older")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", OLDER], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    # Installed, conf/ is shipped as mnist_lab.conf; from the source tree it is a folder away.
    (tree / "mnist_lab" / "conf").symlink_to(tree / "conf")
    return tree


def run_older(older: Path, args: list[str], cwd: Path, point: str | None = None) -> int:
    """The older mnist-lab (or its own fault runner, killing it at ``point``)."""
    env = {**os.environ, "PYTHONPATH": str(older)}
    if point is None:
        command = [sys.executable, "-c", "from mnist_lab.commands.run import main; main()", *args]
    else:
        command = [sys.executable, str(older / "tests" / "fault_runner.py"), point, *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.returncode


def test_the_older_tree_is_the_older_code(older: Path) -> None:
    assert (older / "mnist_lab" / "loop.py").is_file()
    assert not (older / "mnist_lab" / "training").exists()


def test_a_finished_older_run_is_listed_reused_and_evaluated(older: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*RESUMABLE, f"hydra.run.dir={run_dir}"]
    assert run_older(older, args, tmp_path) == 0
    before = (run_dir / "metrics.json").read_text()
    metrics = read_json(run_dir / "metrics.json")
    assert "stop" not in metrics  # made before stopping rules existed

    listed = run_tool("mnist-lab-runs", [str(run_dir)], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "finished" in listed.stdout
    assert f"{metrics['validation']['precision']:.4f}" in listed.stdout

    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stdout + again.stderr
    assert (run_dir / "metrics.json").read_text() == before

    evaluated = run_tool("mnist-lab-eval", [str(run_dir)], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    eval_json = read_json(run_dir / "eval.json")
    for split in SPLITS:
        assert eval_json[split] == metrics[split], split


def test_an_older_run_killed_mid_training_is_completed_by_todays(
    older: Path, tmp_path: Path, reference_run: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*RESUMABLE, f"hydra.run.dir={run_dir}"]
    assert run_older(older, args, tmp_path, point="mid-step") == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "checkpoints" / "ckpt-20.index").exists()

    resumed = run_cli(args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    metrics, expected = (
        read_json(run_dir / "metrics.json"),
        read_json(reference_run / "metrics.json"),
    )
    for split in SPLITS:
        assert metrics[split] == expected[split], split
