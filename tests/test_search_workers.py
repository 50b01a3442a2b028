"""A parallel search's worker processes under faults, on the real joblib launcher: a worker
killed under its trial ends the search with one line and the command that resumes it; the
search's own process killed stops its workers' trials at a checkpoint instead of leaving them
training for nobody (and holding their folders' locks against the rerun)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mnist_lab.rundir import records
from tests.conftest import run_cli, start_cli
from tests.test_search import TRIAL, study_of, summary_of, wait_for

optuna = pytest.importorskip("optuna")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
from optuna.trial import TrialState  # noqa: E402

pytestmark = pytest.mark.slow

PARALLEL = [
    *TRIAL,
    "optimizer.lr=tag(log, interval(1e-3, 0.1))",
    "hydra.sweeper.pruner=none",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.n_jobs=2",
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
    "trainer.intra_op_threads=1",
]


def start(sweep_dir: Path, steps: int) -> subprocess.Popen[str]:
    """The search, once both trials have a checkpoint; each trial's worker holds its folder."""
    args = [*PARALLEL, f"trainer.steps={steps}", f"hydra.sweep.dir={sweep_dir}"]
    process = start_cli(args, sweep_dir.parent)
    for trial in ("0", "1"):
        ckpt = sweep_dir / trial / "checkpoints" / "ckpt-10.index"
        wait_for(ckpt.exists, process, f"a checkpoint of trial {trial}")
    return process


def worker(sweep_dir: Path, trial: str) -> int:
    """The pid of the process that trains ``trial`` (its folder's lock names it)."""
    holder = records.read_run(sweep_dir / trial).pid
    assert holder is not None, f"trial {trial} is not running"
    return holder


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: not gone, and not a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_killed_worker_ends_the_search_with_one_line_and_its_rerun_completes_it(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "search"
    process = start(sweep_dir, steps=1500)
    os.kill(worker(sweep_dir, "0"), signal.SIGKILL)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 1, output[-3000:]  # a job failed: not bad input, not a signal
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert "a worker process of the sweep's launcher died under its job" in errors[0]
    assert "SIGKILL" in errors[0]
    assert not (sweep_dir / "0" / "metrics.json").exists()  # killed mid-trial, not after it

    # The printed command, pasted as is, continues the killed trial and ends the search.
    command = errors[0].split("to resume the sweep: ")[1]
    assert command.startswith("mnist-lab ") and f"hydra.sweep.dir={sweep_dir}" in command
    again = run_cli(shlex.split(command)[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming the search: trial" in again.stdout
    study = study_of(sweep_dir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert summary_of(sweep_dir)["counts"]["finished"] == 2


def test_a_killed_search_stops_its_workers_at_a_checkpoint(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "search"
    process = start(sweep_dir, steps=1_000_000)  # trials that would train for hours
    workers = {trial: worker(sweep_dir, trial) for trial in ("0", "1")}
    os.kill(process.pid, signal.SIGKILL)
    # Its output ends once no worker holds the pipe: a worker training on would keep it open.
    process.communicate(timeout=120)
    deadline = time.monotonic() + 120
    while any(map(alive, workers.values())):
        assert time.monotonic() < deadline, f"workers still training: {workers}"
        time.sleep(0.2)
    for trial in workers:
        info = records.read_run(sweep_dir / trial)
        # Its lock is free: the rerun may continue it, from the checkpoint saved as it stopped.
        assert info.status == records.INTERRUPTED, info
        log = (sweep_dir / trial / "mnist-lab.log").read_text()
        assert f"the sweep's process {process.pid} is gone" in log
        stopped = int(log.split("stopped at step ")[1].split(",")[0])
        assert info.checkpoint_step == stopped < 1_000_000
