"""Sweeps and searches on a real SLURM cluster (tests/slurm_cluster.py: munged, slurmdbd,
slurmctld and slurmd on this machine), through the project's own launcher options
(``hydra/launcher=slurm_cpu``): every job is a SLURM job, submitted, run, requeued and cancelled
by SLURM itself. Each job's results are compared with the same job run here, without SLURM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.conftest import SPLITS, latest_step, run_cli, run_tool, start_cli
from tests.daemons import require_module

if TYPE_CHECKING:
    from tests.slurm_cluster import Cluster

# The cluster: the session fixture ``slurm``.
pytest_plugins = ["tests.slurm_cluster"]
# On one pytest-xdist worker: one cluster and one set of sweeps for all of them.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

# The MLP on the synthetic set, deterministic: 500 steps (a few seconds), a checkpoint every
# 100, so that a job can be held after its first and still be some calls from its end when
# SLURM's signal, which may come a little after SLURM's SIGCONT, reaches it.
JOB = [
    "data=fake",
    "model=mlp",
    "trainer.steps=500",
    "trainer.eval_every=100",
    "trainer.checkpoint_every=100",
    "trainer.batch_size=16",
    "trainer.deterministic=true",
]
# The cluster's node has 8 CPUs or more; a job asks for one of them.
ON_SLURM = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
# SLURM counts time limits in minutes and checks them every 30 s: timeout_min=1 with a warning
# 1 s before the limit reaches the job (SIGCONT, then submitit's SIGUSR2) 29 to 59 s after it
# starts, about 30 s before SLURM would kill it.
SHORT_LIMIT = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=1"]
# A search of two trials at a time, on SLURM.
SEARCH = [
    "hparams_search=optuna", *ON_SLURM, *JOB[:2], "trainer.steps=20", "trainer.eval_every=10",
    "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.name=random",
]  # fmt: skip


@pytest.fixture(scope="module")
def submitit() -> None:
    require_module("hydra_plugins.hydra_submitit_launcher", "pip install -e '.[slurm]'")


@dataclass
class Sweep:
    dir: Path
    args: list[str]
    process: subprocess.Popen
    output: str = ""
    held_at: int | None = None  # the checkpoint step its job 0 was held at

    @property
    def returncode(self) -> int:
        return int(self.process.returncode)


@pytest.fixture(scope="module")
def sweeps(
    slurm: Cluster,
    submitit: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Sweep]:
    """Every sweep of this module at once: SLURM's clock (a time limit is checked every 30 s,
    a requeued job waits 10 s) and submitit's (15 s for a cancelled job's result) run in
    parallel rather than one after the other. The jobs that must time out are held first,
    so that their minute of waiting costs no CPU; then the others start, and the job that is
    cancelled is held and cancelled."""
    root = tmp_path_factory.mktemp("slurm")

    def start(name: str, args: list[str], on_slurm: bool = True) -> Sweep:
        if on_slurm:
            args = [*args, f"hydra.launcher.partition={slurm.partition}"]
        args = [*args, f"hydra.sweep.dir={root / name}"]
        return Sweep(root / name, args, start_cli(args, root, slurm.env if on_slurm else None))

    timed = ["-m", *ON_SLURM, *SHORT_LIMIT, *JOB, "seed=0"]
    runs: dict[str, Sweep] = {}
    try:
        runs["requeued"] = start("requeued", timed)  # slurm_cpu's max_num_timeout: 3
        runs["limited"] = start("limited", [*timed, "hydra.launcher.max_num_timeout=0"])
        hold(runs["requeued"], runs["limited"])
        runs["grid"] = start("grid", ["-m", *ON_SLURM, *JOB, "seed=0,1"])
        runs["cancelled"] = start("cancelled", ["-m", *ON_SLURM, *JOB, "seed=0,1"])
        runs["reference"] = start("reference", ["-m", *JOB, "seed=0,1"], on_slurm=False)
        runs["search"] = start("search", [*SEARCH, "hydra.sweeper.n_trials=2"])
        hold(runs["cancelled"])
        slurm_tool(slurm, "scancel", slurm_id(runs["cancelled"].dir / "0"))
        for run in runs.values():
            run.output = str(run.process.communicate(timeout=900)[0])
    finally:
        for run in runs.values():  # a failed start: no command outlives the fixture
            if run.process.poll() is None:
                run.process.kill()
                run.process.communicate()
    return runs


@pytest.fixture(scope="module")
def reference(sweeps: dict[str, Sweep]) -> dict[str, dict[str, int]]:
    """num_correct per split of JOB with seed 0 and 1, run here without SLURM."""
    run = sweeps["reference"]
    assert run.returncode == 0, run.output[-4000:]
    return {seed: num_correct(run.dir / seed) for seed in ("0", "1")}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def num_correct(job_dir: Path) -> dict[str, int]:
    metrics = read_json(job_dir / "metrics.json")
    return {split: metrics[split]["num_correct"] for split in SPLITS}


def slurm_id(job_dir: Path) -> str:
    """The SLURM job id the launcher recorded in the job's Hydra config."""
    hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    return str(hydra["job"]["id"])


def slurm_tool(cluster: Cluster, *args: str) -> str:
    env = {**os.environ, **cluster.env}
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def accounted_state(cluster: Cluster, job_id: str) -> str:
    """The job's state in SLURM's accounting (slurmdbd), as submitit reads it."""
    out = slurm_tool(cluster, "sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id)
    return dict(line.split("|", 1) for line in out.splitlines())[job_id]


def restarts(cluster: Cluster, job_id: str) -> int:
    """How many times SLURM started the job again (a requeue)."""
    found = re.search(r"Restarts=(\d+)", slurm_tool(cluster, "scontrol", "show", "job", job_id))
    assert found is not None
    return int(found.group(1))


def submitit_log(sweep_dir: Path, job_id: str) -> str:
    """What submitit itself logged in the job (its stdout and stderr)."""
    folder = sweep_dir / ".submitit" / job_id
    return "".join(p.read_text(errors="replace") for p in sorted(folder.glob("*_log.*")))


def hold(*runs: Sweep, at_least: int = 100) -> None:
    """Stop each sweep's job 0 (SIGSTOP) as soon as it has checkpointed ``at_least``: a job
    that cannot finish before its time limit, without minutes of training. SLURM sends SIGCONT
    before any signal of its own."""
    deadline = time.monotonic() + 300
    while any(run.held_at is None for run in runs):
        for run in runs:
            job_dir = run.dir / "0"
            if run.held_at is not None or (latest_step(job_dir) or 0) < at_least:
                continue
            os.kill(int((job_dir / ".lock").read_text()), signal.SIGSTOP)
            run.held_at = latest_step(job_dir)
            assert run.held_at is not None and run.held_at < 500, f"{job_dir} ended unheld"
            assert run.process.poll() is None, run.process.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_sweep_of_slurm_jobs_matches_the_same_jobs_run_here(
    slurm: Cluster,
    sweeps: dict[str, Sweep],
    reference: dict[str, dict[str, int]],
    tmp_path: Path,
) -> None:
    run = sweeps["grid"]
    assert run.returncode == 0, run.output[-4000:]
    assert "Submitit 'slurm' sweep output dir" in run.output
    for seed in ("0", "1"):
        assert accounted_state(slurm, slurm_id(run.dir / seed)) == "COMPLETED"
        assert num_correct(run.dir / seed) == reference[seed], seed
    summary = read_json(run.dir / "summary.json")
    assert summary["counts"]["finished"] == 2 and sum(summary["counts"].values()) == 2

    listed = run_tool("mnist-lab-runs", [str(run.dir), "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    runs = {Path(r["dir"]).name: r for r in json.loads(listed.stdout)}
    assert {name: r["status"] for name, r in runs.items()} == {"0": "finished", "1": "finished"}
    assert runs["1"]["metrics"]["test"]["num_correct"] == reference["1"]["test"]

    ensemble = run_tool("mnist-lab-ensemble", [str(run.dir)], tmp_path)
    assert ensemble.returncode == 0, ensemble.stdout + ensemble.stderr
    assert len(read_json(run.dir / "ensemble" / "metrics.json")["members"]) == 2


def test_a_job_past_its_time_limit_is_requeued_and_continues_from_its_checkpoint(
    slurm: Cluster,
    sweeps: dict[str, Sweep],
    reference: dict[str, dict[str, int]],
) -> None:
    # Warned at its time limit, submitit requeued the job; SLURM started it again, and it
    # continued from the checkpoint it had when it was held.
    run = sweeps["requeued"]
    job_id = slurm_id(run.dir / "0")
    log = submitit_log(run.dir, job_id)
    assert run.returncode == 0, run.output[-4000:] + log[-4000:]
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log
    assert f"Requeued job {job_id} (2 remaining timeouts)" in log  # the first of 3
    assert restarts(slurm, job_id) >= 1
    assert run.held_at is not None
    metrics = read_json(run.dir / "0" / "metrics.json")
    assert run.held_at <= metrics["resumed_from_step"] < 500
    assert num_correct(run.dir / "0") == reference["0"]


def test_max_num_timeout_is_honoured_and_the_sweep_resumes_the_job(
    slurm: Cluster,
    sweeps: dict[str, Sweep],
    reference: dict[str, dict[str, int]],
) -> None:
    # max_num_timeout=0: the same warning ends the job, which SLURM does not start again.
    run = sweeps["limited"]
    job_id = slurm_id(run.dir / "0")
    log = submitit_log(run.dir, job_id)
    assert run.returncode == 1, run.output[-4000:]
    assert "Requeued job" not in log and restarts(slurm, job_id) == 0
    (job,) = read_json(run.dir / "summary.json")["jobs"]
    assert job["status"] == "failed" and "timed-out too many times" in job["error"]
    saved = latest_step(run.dir / "0")
    assert run.held_at is not None and saved is not None and run.held_at <= saved < 500
    # The sweep's command again: the job continues from that checkpoint.
    result = run_cli(run.args, run.dir.parent, slurm.env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert read_json(run.dir / "0" / "metrics.json")["resumed_from_step"] == saved
    assert num_correct(run.dir / "0") == reference["0"]


def test_a_cancelled_job_is_interrupted_and_its_resume_command_finishes_it(
    slurm: Cluster,
    sweeps: dict[str, Sweep],
    reference: dict[str, dict[str, int]],
) -> None:
    # SIGTERM (after SIGCONT): the job saved a checkpoint and stopped; the sweep waited for
    # its other job, and says which one did not finish.
    run = sweeps["cancelled"]
    job_id = slurm_id(run.dir / "0")
    assert run.returncode == 1, run.output[-4000:]
    assert "Traceback" not in run.output
    assert f"SLURM job {job_id} ended without a result (CANCELLED" in run.output
    assert accounted_state(slurm, job_id).startswith("CANCELLED")
    jobs = {j["job"]: j["status"] for j in read_json(run.dir / "summary.json")["jobs"]}
    assert jobs == {"0": "interrupted", "1": "finished"}, run.output[-4000:]
    saved = latest_step(run.dir / "0")
    assert run.held_at is not None and saved is not None and run.held_at <= saved < 500
    finished = digest(run.dir / "1" / "metrics.json")

    listed = run_tool("mnist-lab-runs", [str(run.dir), "--json"], run.dir.parent)
    assert listed.returncode == 0, listed.stderr
    runs = {Path(r["dir"]).name: r for r in json.loads(listed.stdout)}
    assert runs["0"]["status"] == "interrupted" and runs["0"]["step"] == saved
    command = shlex.split(runs["0"]["resume"])
    assert command[0] == "mnist-lab" and "hydra/launcher=slurm_cpu" in command
    resumed = run_tool(command[0], command[1:], run.dir.parent, slurm.env)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert read_json(run.dir / "0" / "metrics.json")["resumed_from_step"] == saved
    assert num_correct(run.dir / "0") == reference["0"]
    assert digest(run.dir / "1" / "metrics.json") == finished  # not run again


def test_an_optuna_search_on_slurm_completes_and_resumes(
    slurm: Cluster,
    sweeps: dict[str, Sweep],
) -> None:
    run = sweeps["search"]
    assert run.returncode == 0, run.output[-4000:]
    done = {job: digest(run.dir / job / "metrics.json") for job in ("0", "1")}
    # Both trials of the batch (n_jobs=2) went to SLURM together, as one array of two jobs.
    assert slurm_id(run.dir / "0").split("_")[0] == slurm_id(run.dir / "1").split("_")[0]

    args = [a.replace("n_trials=2", "n_trials=4") for a in run.args]
    again = run_cli(args, run.dir.parent, slurm.env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    summary = read_json(run.dir / "summary.json")
    assert sorted(j["job"] for j in summary["jobs"]) == ["0", "1", "2", "3"]
    assert summary["counts"]["finished"] == 4
    assert {job: digest(run.dir / job / "metrics.json") for job in done} == done
    for job in ("2", "3"):
        assert accounted_state(slurm, slurm_id(run.dir / job)) == "COMPLETED"
    best = read_json(run.dir / "best.json")
    values = {j["job"]: j["validation_precision"] for j in summary["jobs"]}
    assert best["value"] == max(values.values()) == values[str(best["trial"])]
