"""Several machines on one search: two searches, each with its own command and sweep folder,
sharing one Optuna study through ``hydra.sweeper.storage``, as docs/search.md describes. The
study lives on a real PostgreSQL server (tests/postgres_server.py) or in one journal file that
both use; the two commands run at once, here, as two machines would.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import assert_one_error_line, free_port, latest_step, run_cli, start_cli
from tests.daemons import require_module

if TYPE_CHECKING:
    from tests.postgres_server import Postgres

# The server: the session fixture ``postgres``.
pytest_plugins = ["tests.postgres_server"]
# On one pytest-xdist worker: one server and its databases for all of them.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgres")]

# The MLP for 20 steps on the synthetic set, a checkpoint every 10, seeded random sampling.
TRIAL = [
    "hparams_search=optuna",
    "data=fake",
    "model=mlp",
    "model.hidden_units=[128,32]",
    "trainer.steps=20",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=10",
    "trainer.batch_size=16",
    "optimizer.schedule.warmup_steps=0",
    "optimizer.lr=tag(log, interval(1e-3, 0.1))",
    "hydra.sweeper.sampler.name=random",
    "hydra.sweeper.pruner=none",
]
N_TRIALS = 4


@pytest.fixture(scope="module")
def optuna() -> Any:
    require_module("optuna", "pip install -e '.[optuna]'")
    import optuna

    return optuna


@dataclass(frozen=True)
class Shared:
    """Where the machines' study lives, as their commands name it, and as this test reads it."""

    storage: str  # hydra.sweeper.storage
    env: dict[str, str]  # the commands' environment
    reader: str  # for Optuna, here: a journal's path, or the URL with its password


@pytest.fixture(params=["postgresql", "journal"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Shared:
    """docs/search.md's two recipes: a database on a server (its password in libpq's password
    file, not in the URL), or a journal file in a folder the machines share."""
    if request.param == "journal":
        journal = str(tmp_path / "shared" / "optuna.journal")
        return Shared(journal, {}, journal)
    server: Postgres = request.getfixturevalue("postgres")
    name = f"study_{os.getpid()}_{time.monotonic_ns()}"
    url = server.create_database(name)
    return Shared(url, server.env, server.url(name, password=server.password))


def machines(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "shared" / "machine-a", tmp_path / "shared" / "machine-b"


def command(storage: str, sweep_dir: Path, *extra: str) -> list[str]:
    return [
        *TRIAL,
        f"hydra.sweeper.n_trials={N_TRIALS}",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]


def trials_of(optuna: Any, storage: str) -> list[Any]:
    """The study's trials, read here: ``storage`` is a URL or a journal file's path."""
    opened: Any = storage
    if "://" not in storage:
        from optuna.storages.journal import JournalFileBackend

        opened = optuna.storages.JournalStorage(JournalFileBackend(storage))
    return list(optuna.load_study(study_name="mnist-lab", storage=opened).trials)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def job_numbers(sweep_dir: Path) -> set[int]:
    return {int(d.name) for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()}


def finished_digests(*sweep_dirs: Path) -> dict[str, str]:
    """Every finished trial's metrics.json, by hash: a trial run twice would change it."""
    return {
        str(m.parent): hashlib.sha256(m.read_bytes()).hexdigest()
        for sweep_dir in sweep_dirs
        for m in sweep_dir.glob("*/metrics.json")
    }


def finish(process: subprocess.Popen) -> str:
    output = str(process.communicate(timeout=600)[0])
    assert process.returncode == 0, output[-4000:]
    return output


def check_study(optuna: Any, storage: str, a: Path, b: Path) -> list[Any]:
    """N_TRIALS trials in all, each complete and in exactly one of the two folders, whose
    summaries hold their own trials with the study's values."""
    trials = trials_of(optuna, storage)
    assert [t.state.name for t in trials] == ["COMPLETE"] * N_TRIALS
    numbers_a, numbers_b = job_numbers(a), job_numbers(b)
    assert not numbers_a & numbers_b
    assert numbers_a | numbers_b == set(range(N_TRIALS))
    value = {t.number: t.value for t in trials}
    for sweep_dir, numbers in ((a, numbers_a), (b, numbers_b)):
        jobs = read_json(sweep_dir / "summary.json")["jobs"]
        assert {int(j["job"]) for j in jobs} == numbers
        for job in jobs:
            assert job["status"] == "finished"
            assert job["validation_precision"] == value[int(job["job"])]
    return trials


def check_best(sweep_dir: Path, trials: list[Any]) -> None:
    best = max(trials, key=lambda t: t.value)
    recorded = read_json(sweep_dir / "best.json")
    assert (recorded["trial"], recorded["value"]) == (best.number, best.value)


def test_two_searches_share_one_study_and_a_killed_one_resumes_its_trial(
    optuna: Any, shared: Shared, tmp_path: Path
) -> None:
    storage, env, study = shared.storage, shared.env, shared.reader
    a, b = machines(tmp_path)
    killed, other = (start_cli(command(storage, d), tmp_path, env) for d in (a, b))
    # kill -9 in the middle of a's first trial, after its checkpoint at step 10.
    deadline = time.monotonic() + 240
    while not any((latest_step(d) or 0) >= 10 for d in a.glob("[0-9]*")):
        assert killed.poll() is None, killed.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    (trial,) = [int(d.name) for d in a.glob("[0-9]*") if not (d / "metrics.json").exists()]
    saved = latest_step(a / str(trial))
    # The other machine goes on; the killed trial stays RUNNING in the study, and counts.
    finish(other)
    assert len(trials_of(optuna, study)) == N_TRIALS
    before = finished_digests(a, b)

    # a's command again: it runs its killed trial again, from the checkpoint, and no other.
    output = finish(start_cli(command(storage, a), tmp_path, env))
    assert f"resuming the search: trial {trial} starts again" in output
    trials = check_study(optuna, study, a, b)
    assert read_json(a / str(trial) / "metrics.json")["resumed_from_step"] == saved
    after = finished_digests(a, b)
    assert str(a / str(trial)) in after
    assert {k: v for k, v in after.items() if k != str(a / str(trial))} == before

    # best.json names the study's best trial when its command ends: a's saw every trial; b's
    # command, run again, runs none and says the same.
    check_best(a, trials)
    again = run_cli(command(storage, b), tmp_path, env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    check_best(b, trials)
    assert finished_digests(a, b) == after
    assert len(trials_of(optuna, study)) == N_TRIALS

    # A third machine with another search on this study: one line, before any trial.
    c = tmp_path / "shared" / "machine-c"
    other = ["optimized_metric=validation.loss", "hydra.sweeper.direction=minimize"]
    refused = run_cli(command(storage, c, *other), tmp_path, env)
    line = assert_one_error_line(refused, "another search")
    assert "optimized_metric was 'validation.precision', now 'validation.loss'" in line
    assert nothing_written(c)
    assert len(trials_of(optuna, study)) == N_TRIALS


def nothing_written(sweep_dir: Path) -> bool:
    """No trial, no summary: at most the sweep folder's lock, taken first."""
    return not sweep_dir.exists() or [p.name for p in sweep_dir.iterdir()] == [".lock"]


def closed_port() -> int:
    return free_port()  # nothing listens there once the probe socket is closed


@pytest.mark.parametrize("case", ["dialect", "password", "database", "server down"])
def test_a_storage_that_cannot_be_opened_is_one_error_line(
    optuna: Any, postgres: Postgres, case: str, tmp_path: Path
) -> None:
    name = f"errors_{os.getpid()}_{time.monotonic_ns()}"
    url = postgres.create_database(name)
    secret = secrets.token_hex(8)
    wrong = {
        "dialect": url.replace("postgresql+psycopg://", "postgres://"),  # SQLAlchemy's old name
        "password": url.replace("mnistlab@", f"mnistlab:{secret}@"),  # wins over the file's
        "database": url.rsplit("/", 1)[0] + "/no_such_database",
        "server down": url.replace(f":{postgres.port}/", f":{closed_port()}/"),
    }[case]
    sweep_dir = tmp_path / "search"
    result = run_cli(command(wrong, sweep_dir), tmp_path, postgres.env)
    line = assert_one_error_line(result, "cannot open the study storage")
    assert secret not in line  # a password is not shown
    assert nothing_written(sweep_dir)
    assert not optuna.get_all_study_names(storage=postgres.url(name, postgres.password))


def test_a_shared_study_of_another_direction_is_refused_before_any_trial(
    optuna: Any, postgres: Postgres, tmp_path: Path
) -> None:
    name = f"direction_{os.getpid()}_{time.monotonic_ns()}"
    url = postgres.create_database(name)
    # Created by hand (optuna create-study), empty: it minimizes; the search maximizes.
    study = postgres.url(name, postgres.password)
    optuna.create_study(storage=study, study_name="mnist-lab", direction="minimize")
    search = command(url, tmp_path / "a", "hydra.sweeper.n_trials=1")
    result = run_cli(search, tmp_path, postgres.env)
    assert_one_error_line(result, "minimize")
    assert nothing_written(tmp_path / "a")
    assert not trials_of(optuna, study)


def test_a_trial_another_machine_is_starting_is_not_taken_over(
    optuna: Any, postgres: Postgres, tmp_path: Path
) -> None:
    name = f"starting_{os.getpid()}_{time.monotonic_ns()}"
    url, env = postgres.create_database(name), postgres.env
    first = run_cli(command(url, tmp_path / "b", "hydra.sweeper.n_trials=1"), tmp_path, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    # Machine b asks for its next trial; the sweeper records its folder just after: the
    # moment a's command reads the study.
    study = postgres.url(name, postgres.password)
    optuna.load_study(study_name="mnist-lab", storage=study).ask()
    result = run_cli(command(url, tmp_path / "a", "hydra.sweeper.n_trials=2"), tmp_path, env)
    # (It runs no trial: the study has its 2. Its empty summary then exits 1.)
    assert "Traceback" not in result.stdout + result.stderr
    assert "resuming the search" not in result.stdout
    assert not (tmp_path / "a" / "1").exists()
    assert [t.state.name for t in trials_of(optuna, study)] == ["COMPLETE", "RUNNING"]
