"""Resume through the real CLI: kill -9, Ctrl-C, SIGTERM, a changed config, a bad output dir.

Every interrupted run is resumed and must end with exactly the metrics of an uninterrupted run:
weights, optimizer state, dropout RNG state and data order all come back.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import MNIST_LAB, run_cli

# A small CNN with dropout 0.5 (the default), checkpointed every 10 of 60 steps.
RUN = [
    "data=fake",
    "model=cnn",
    "model.filters=[4,8]",
    "model.dense_units=16",
    "trainer.batch_size=32",
    "trainer.steps=60",
    "trainer.eval_every=30",
    "trainer.checkpoint_every=10",
    "trainer.deterministic=true",
]
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: what every resumed run must reproduce."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr
    return run_dir


def latest_step(run_dir: Path) -> int | None:
    """The step of the latest checkpoint recorded in TensorFlow's state file, if any."""
    try:
        state = (run_dir / "checkpoints" / "checkpoint").read_text()
    except FileNotFoundError:
        return None
    found = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', state)
    return int(found.group(1)) if found else None


def start_and_wait(run_dir: Path, at_least: int) -> subprocess.Popen[str]:
    """Start a run; return once it has checkpointed step ``at_least`` or later."""
    process = subprocess.Popen(
        [MNIST_LAB, *RUN, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while (latest_step(run_dir) or 0) < at_least:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)
    return process


def assert_same_metrics(run_dir: Path, reference: Path) -> dict:
    resumed = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    for split in SPLITS:
        assert resumed[split] == expected[split], split  # num_correct, precision, loss: exact
    return resumed


def test_kill_9_then_resume_ends_exactly_as_an_uninterrupted_run(
    tmp_path: Path, reference: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start_and_wait(run_dir, at_least=20)
    process.kill()  # SIGKILL: no handler, no last save
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed_at = latest_step(run_dir)
    assert killed_at is not None and killed_at < 60, "finished before the kill: nothing tested"
    assert not (run_dir / "metrics.json").exists()

    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"at step {killed_at}" in result.stdout
    assert assert_same_metrics(run_dir, reference)["resumed_from_step"] == killed_at


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_prints_the_resume_command_and_exits(
    tmp_path: Path, reference: Path, sig: signal.Signals, status: int
) -> None:
    run_dir = tmp_path / "run"
    process = start_and_wait(run_dir, at_least=10)
    process.send_signal(sig)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == status, output
    stopped_at = int(re.search(r"stopped at step (\d+)", output).group(1))
    assert latest_step(run_dir) == stopped_at  # saved at the step it stopped, not the last 10
    assert "Traceback" not in output

    # The printed command is the one to run, verbatim.
    command = re.search(r"to resume: (.+)", output).group(1)
    argv = shlex.split(command)
    assert argv[0] == "mnist-lab" and argv[-1] == f"hydra.run.dir={run_dir}"
    result = subprocess.run(
        [MNIST_LAB, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert assert_same_metrics(run_dir, reference)["resumed_from_step"] == stopped_at


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once_and_leaves_a_resumable_run(
    tmp_path: Path, reference: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start_and_wait(run_dir, at_least=10)
    process.send_signal(signal.SIGINT)
    output = ""
    for line in process.stdout:  # the second Ctrl-C comes while the first is being handled
        output += line
        if "stopping after the current step" in line:
            process.send_signal(signal.SIGINT)
            break
    output += process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "SIGINT again: exiting now" in output
    assert latest_step(run_dir) is not None

    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_metrics(run_dir, reference)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_changed_model_is_refused_and_nothing_is_overwritten(
    tmp_path: Path, reference: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = (run_dir / "checkpoints" / "checkpoint").read_text()
    changed = [o for o in RUN if not o.startswith("model.dense_units")] + ["model.dense_units=32"]
    result = run_cli([*changed, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "model.dense_units (was 16, now 32)" in line
    assert "Traceback" not in result.stderr
    assert (run_dir / "checkpoints" / "checkpoint").read_text() == before


def test_an_unwritable_checkpoint_folder_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file, not a folder")
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "cannot create the checkpoint folder" in line
    assert "Traceback" not in result.stderr


def test_a_finished_run_started_again_only_reevaluates(tmp_path: Path, reference: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    os.remove(run_dir / "metrics.json")
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert assert_same_metrics(run_dir, reference)["resumed_from_step"] == 60
