"""Sweeps: grids and their summary, failures, isolation, resuming, and Hydra's plugins.

TensorFlow costs seconds to import in every process, so the checks share a few sweeps: the
``sweeps`` fixture starts two at once, a grid with a diverging job and that grid's last job
alone, and most tests read their directories.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import DictConfig

from mnist_lab.sweeps.summary import all_done, main, summarize
from tests.conftest import BIN, SPLITS, compose_config, free_port, run_cli, start_cli

# Deterministic and tiny: 20 steps of the MLP on the synthetic set.
JOB = [
    "data=fake",
    "trainer.steps=20",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=20",
    "trainer.batch_size=16",
    "model=mlp",
    "optimizer=sgd",
    "optimizer.schedule.warmup_steps=0",
    "trainer.deterministic=true",
]
# Three jobs; the second diverges (NaN loss) and must not stop the third.
GRID = [*JOB, "optimizer.lr=0.05,1e6,0.1"]
NO_FAILURES = {"finished": 2, "pruned": 0, "failed": 1, "running": 0, "interrupted": 0}


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(cwd.glob("outputs/multirun/*/*"))


def read_summary(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / "summary.json").read_text())


def metrics(job_dir: Path) -> dict[str, Any]:
    return json.loads((job_dir / "metrics.json").read_text())


@dataclass
class Sweep:
    dir: Path
    returncode: int
    output: str


@dataclass
class Sweeps:
    grid: Sweep
    alone: Sweep


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> Sweeps:
    """The grid and its last job alone, started at the same moment in the same folder."""
    cwd = tmp_path_factory.mktemp("sweeps")
    procs = [start_cli(["-m", *GRID], cwd), start_cli(["-m", *JOB, "optimizer.lr=0.1"], cwd)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    by_jobs = {len(list(d.glob("*/.hydra"))): d for d in sweep_dirs(cwd)}
    grid = Sweep(by_jobs.get(3, cwd / "none"), procs[0].returncode, outputs[0])
    alone = Sweep(by_jobs.get(1, cwd / "none"), procs[1].returncode, outputs[1])
    return Sweeps(grid, alone)


def test_two_sweeps_started_at_once_get_two_folders(sweeps: Sweeps) -> None:
    # Microseconds in the folder name: the same second is not enough to collide.
    assert sweeps.grid.dir.is_dir() and sweeps.alone.dir.is_dir()
    assert sweeps.grid.dir != sweeps.alone.dir


def test_grid_runs_every_job_and_ranks_them_by_validation(sweeps: Sweeps) -> None:
    grid = sweeps.grid
    assert sorted(p.name for p in grid.dir.iterdir() if p.is_dir()) == ["0", "1", "2"]
    summary = read_summary(grid.dir)
    jobs = summary["jobs"]
    assert summary["ranked_by"] == "validation.precision"
    assert summary["counts"] == {**NO_FAILURES, "missing": 0}
    done = [j for j in jobs if j["status"] == "finished"]
    assert [j["job"] for j in jobs[:2]] == [j["job"] for j in done]  # finished jobs first
    precisions = [j["validation_precision"] for j in done]
    assert precisions == sorted(precisions, reverse=True)
    for job in done:
        assert job["validation_precision"] == metrics(Path(job["dir"]))["validation"]["precision"]
    assert summary["best"]["job"] == done[0]["job"]
    with (grid.dir / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == [j["job"] for j in jobs]
    # The table, the best job and the TensorBoard command are printed.
    assert "sweep summary: 3 jobs, ranked by validation.precision" in grid.output
    assert f"best job: {grid.dir / done[0]['job']}" in grid.output
    assert f"tensorboard --logdir {grid.dir}" in grid.output


def test_a_failed_job_is_reported_and_the_sweep_exits_1(sweeps: Sweeps) -> None:
    grid = sweeps.grid
    assert grid.returncode == 1, grid.output
    failed = [j for j in read_summary(grid.dir)["jobs"] if j["status"] == "failed"]
    assert [j["job"] for j in failed] == ["1"]
    assert failed[0]["rank"] is None
    assert "DivergedError: training diverged" in failed[0]["error"]
    assert json.loads((grid.dir / "1" / "error.json").read_text())["type"] == "DivergedError"
    assert "failed: DivergedError: training diverged" in grid.output
    # The job after the failed one still ran.
    assert (grid.dir / "2" / "metrics.json").exists()
    assert sweeps.alone.returncode == 0, sweeps.alone.output


def test_a_later_job_of_a_sweep_equals_the_same_job_alone(sweeps: Sweeps) -> None:
    # Job 2 ran after a finished and a failed job in the same process: nothing may leak.
    in_sweep, alone = metrics(sweeps.grid.dir / "2"), metrics(sweeps.alone.dir / "0")
    for split in SPLITS:
        assert in_sweep[split]["num_correct"] == alone[split]["num_correct"], split
        assert in_sweep[split]["loss"] == alone[split]["loss"], split


def test_a_rerun_into_the_same_sweep_dir_resumes_it(sweeps: Sweeps, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweeps.grid.dir, sweep_dir)
    # Job 0 was killed before its first checkpoint; job 2 had finished.
    before = metrics(sweep_dir / "0")
    (sweep_dir / "0" / "metrics.json").unlink()
    shutil.rmtree(sweep_dir / "0" / "checkpoints")
    finished = sweep_dir / "2" / "metrics.json"
    mtime = finished.stat().st_mtime_ns

    result = run_cli(["-m", *GRID, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr  # job 1 diverges again
    assert f"this run already finished; its results: {finished}" in result.stdout
    assert finished.stat().st_mtime_ns == mtime
    after = metrics(sweep_dir / "0")
    assert after["resumed_from_step"] == 0
    for split in SPLITS:
        assert after[split]["num_correct"] == before[split]["num_correct"]
    summary = read_summary(sweep_dir)
    assert summary["counts"] == {**NO_FAILURES, "missing": 0}


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_a_rerun_with_other_settings_is_refused_before_any_job(
    sweeps: Sweeps, tmp_path: Path
) -> None:
    # The same sweep with its values in another order: job 0 would be another config.
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(sweeps.grid.dir, sweep_dir)
    before = folder_digest(sweep_dir)
    result = run_cli(
        ["-m", *JOB, "optimizer.lr=0.1,1e6,0.05", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert f"{sweep_dir / '0'} holds a finished job with another config" in line
    assert "optimizer.lr (was 0.05, now 0.1)" in line
    assert folder_digest(sweep_dir) == before  # no .hydra/ rewritten, no summary, nothing


def test_a_second_sweep_into_a_running_sweep_folder_is_refused(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # Long enough that job 0 still runs (and holds its lock) on the fastest machine: killed below.
    first = start_cli(
        ["-m", *JOB, "trainer.steps=200000", "optimizer.lr=0.05", f"hydra.sweep.dir={sweep_dir}"],
        tmp_path,
    )
    try:
        deadline = time.monotonic() + 300
        while not (sweep_dir / "0" / "checkpoints").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = run_cli(
            ["-m", *JOB, "optimizer.lr=0.05", f"hydra.sweep.dir={sweep_dir}"], tmp_path
        )
        assert second.returncode == 2
        assert f"{sweep_dir} is in use by process {first.pid}" in second.stderr
        single = run_cli([*JOB, "optimizer.lr=0.05", f"hydra.run.dir={sweep_dir / '0'}"], tmp_path)
        assert single.returncode == 2
        assert f"is in use by process {first.pid}" in single.stderr
        assert first.poll() is None  # the refusals above were met while the sweep was running
    finally:
        first.kill()
        first.communicate()


def test_invalid_sweep_values_fail_before_any_job(tmp_path: Path) -> None:
    result = run_cli(["-m", *JOB, "optimizer.lr=0.1,-1"], cwd=tmp_path)
    assert result.returncode == 2
    assert "optimizer.lr" in result.stderr
    assert not (tmp_path / "outputs").exists()


# ------------------------------------------------------- the summary alone (no TensorFlow)


def fake_job(
    sweep_dir: Path, name: str, overrides: list[str], result: dict[str, Any] | None = None
) -> Path:
    """A job directory as Hydra and mnist-lab leave it; ``result`` is metrics or an error."""
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if result and "error" in result:
        (job / "error.json").write_text(json.dumps(result))
    elif result:
        (job / "metrics.json").write_text(json.dumps(result))
    return job


def fake_metrics(validation: float, test: float) -> dict[str, Any]:
    def split(precision: float) -> dict[str, Any]:
        return {"num_examples": 100, "num_correct": round(precision * 100), "precision": precision}

    return {
        "step": 100,
        "train": split(1.0),
        "validation": split(validation),
        "test": split(test),
        "wall_seconds": 1.5,
    }


def test_summary_ranks_by_validation_never_by_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_job(tmp_path, "0", ["data=fake", "optimizer.lr=0.1"], fake_metrics(0.90, 0.99))
    fake_job(tmp_path, "1", ["data=fake", "optimizer.lr=0.2"], fake_metrics(0.95, 0.80))
    fake_job(tmp_path, "2", ["data=fake", "optimizer.lr=9"], {"error": "boom", "type": "E"})
    fake_job(tmp_path, "10", ["data=fake", "optimizer.lr=0.3"])  # killed: no result
    expected = [["data=fake", f"optimizer.lr={lr}"] for lr in ("0.1", "0.2", "9", "0.3", "0.4")]

    ranked = summarize(tmp_path, expected=expected)

    assert [(j.job, j.status, j.rank) for j in ranked] == [
        ("1", "finished", 1),
        ("0", "finished", 2),
        ("2", "failed", None),
        ("10", "interrupted", None),  # killed: a folder without results
        ("-", "missing", None),  # never started: known from the grid only
    ]
    assert ranked[2].error == "E: boom"
    assert not all_done(ranked)
    summary = read_summary(tmp_path)
    assert summary["best"]["job"] == "1"
    assert summary["counts"] == {**NO_FAILURES, "interrupted": 1, "missing": 1}
    out = capsys.readouterr().out
    assert "every job: data=fake" in out
    assert "best (by validation precision): job 1, validation 0.9500, test 0.8000" in out
    assert "failed: E: boom" in out


def test_damaged_job_files_are_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = fake_job(tmp_path, "0", ["seed=1"], fake_metrics(0.5, 0.5))
    cut = fake_job(tmp_path, "1", ["seed=2"], fake_metrics(0.6, 0.6))
    (cut / "metrics.json").write_text('{"step": 100, "validation": {"precis')  # cut short
    odd = fake_job(tmp_path, "2", ["seed=3"], fake_metrics(0.7, 0.7))
    (odd / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    (odd / "metrics.json").write_text('["not", "an", "object"]')
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 1
    jobs = {j["job"]: j for j in read_summary(tmp_path)["jobs"]}
    assert jobs["0"]["status"] == "finished" and jobs["0"]["dir"] == str(good)
    assert jobs["1"]["status"] == "interrupted" and jobs["1"]["validation_precision"] is None
    assert jobs["2"]["status"] == "interrupted" and jobs["2"]["overrides"] == []
    assert "Traceback" not in capsys.readouterr().err


def test_summary_command_and_a_stale_error(tmp_path: Path) -> None:
    # A job that failed once and then finished on a rerun is done.
    job = fake_job(tmp_path, "0", ["seed=1"], fake_metrics(0.5, 0.5))
    (job / "error.json").write_text(json.dumps({"error": "old", "type": "E"}))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 0
    assert read_summary(tmp_path)["jobs"][0]["status"] == "finished"
    (job / "metrics.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 1


# ------------------------------------------------------------------- Hydra's plugins


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    return compose_config(overrides, hydra=True)


@pytest.mark.parametrize("launcher", ["slurm_cpu", "slurm_gpu", "submitit_local"])
def test_slurm_launcher_configs_compose(launcher: str) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra.utils import get_class

    cfg = compose_with_hydra([f"hydra/launcher={launcher}"])
    target = cfg.hydra.launcher._target_
    # slurm_*: our subclass of the plugin's launcher (hydra_plugins/mnist_lab_slurm). By name:
    # Hydra's plugin scan runs the plugin's module again, which makes its classes anew.
    plugin = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
    plugin += "LocalLauncher" if launcher == "submitit_local" else "SlurmLauncher"
    assert plugin in [f"{c.__module__}.{c.__name__}" for c in get_class(target).__mro__]
    if launcher != "submitit_local":
        assert target == "hydra_plugins.mnist_lab_slurm._launcher.SlurmLauncher"
    if launcher == "slurm_gpu":
        assert cfg.hydra.launcher.gpus_per_node == 1
        assert cfg.hydra.launcher.max_num_timeout == 3  # from slurm_cpu


def test_ray_cluster_launcher_config() -> None:
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    cfg = compose_with_hydra(["hydra/launcher=ray_cluster"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("RayLauncher")
    assert launcher.ray.init.address == "auto"
    # Present, so the plugin's 75 MB default (which ray.init refuses with an address) is not.
    assert "object_store_memory" in launcher.ray.init
    assert launcher.ray.init.object_store_memory is None


def check_plugin_sweep(result: subprocess.CompletedProcess[str], sweep_dir: Path, n: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    summary = read_summary(sweep_dir)
    assert summary["counts"]["finished"] == n and sum(summary["counts"].values()) == n
    assert sorted(j["job"] for j in summary["jobs"]) == [str(i) for i in range(n)]
    for job in summary["jobs"]:
        assert (Path(job["dir"]) / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]],
)
def test_local_parallel_launchers(tmp_path: Path, launcher: list[str]) -> None:
    pytest.importorskip(
        "hydra_plugins.hydra_joblib_launcher"
        if "joblib" in launcher[0]
        else "hydra_plugins.hydra_submitit_launcher"
    )
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        ["-m", *launcher, *JOB, "optimizer.lr=0.05,0.1", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
    )
    check_plugin_sweep(result, sweep_dir, 2)


# For the test cluster and its driver alike. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's switch
# for a single-machine cluster: every address is the loopback one (without it `ray start`
# replaces --node-ip-address=127.0.0.1 with the machine's address). A token of its own makes
# the test independent of ~/.ray/auth_token, which a `ray.init()` elsewhere may have written.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}


@contextmanager
def local_ray_cluster(log: Path) -> Iterator[str]:
    """A real Ray head on 127.0.0.1 with 2 CPUs; yields its address.

    ``ray start --block`` stays in the foreground and stops the processes it started when it
    is terminated: that ends this cluster only, where ``ray stop`` would end every Ray on the
    machine.
    """
    temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay short
    port = free_port()
    command = [
        str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
        "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}",
        f"--ray-client-server-port={free_port()}", "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",  # not Ray's fixed 52365
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    with log.open("w") as out:
        head = subprocess.Popen(
            command,
            env={**os.environ, **RAY_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None, f"ray start failed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"ray start timed out:\n{log.read_text()}"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_launcher_on_a_local_cluster(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    sweep_dir = tmp_path / "sweep"
    with local_ray_cluster(tmp_path / "ray.log") as address:
        result = run_cli(
            ["-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}"]
            + [*JOB, "optimizer.lr=0.05,0.1", f"hydra.sweep.dir={sweep_dir}"],
            cwd=tmp_path,
            env=RAY_ENV,
        )
    check_plugin_sweep(result, sweep_dir, 2)
    assert "Ray Launcher is launching 2 jobs" in result.stdout + result.stderr
