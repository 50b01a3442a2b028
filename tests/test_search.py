"""Hyperparameter searches on mnist-lab's own Optuna sweeper (hydra_plugins/mnist_lab_optuna).

Real searches through the CLI on the synthetic set, a few tiny trials each: failures, pruning,
kill -9 and resume, a parallel launcher, refusals. The study is read back with Optuna from the
journal file in the sweep folder, the jobs from their folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from tests.conftest import (
    assert_one_error_line,
    compose_config,
    run_cli,
    run_tool,
    start_cli,
)

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

# The MLP for 20 steps, an evaluation (a report to the pruner) every 5.
TRIAL = [
    "hparams_search=optuna",
    "data=fake",
    "model=mlp",
    "model.hidden_units=[128,32]",
    "trainer.steps=20",
    "trainer.eval_every=5",
    "trainer.checkpoint_every=10",
    "trainer.batch_size=16",
    "optimizer.schedule.warmup_steps=0",
    # Seeded random sampling: the same trials, in the same order, at every run of the tests.
    "hydra.sweeper.sampler.name=random",
]
# SGD at 1e6 diverges (a NaN loss) at once; at 0.05 it learns. With seed 0 the sampler draws
# both values among the first four trials.
FAILING = [*TRIAL, "optimizer=sgd", "optimizer.lr=choice(0.05,1e6)", "hydra.sweeper.pruner=none"]


def search(sweep_dir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], cwd=sweep_dir.parent, timeout=timeout)


def study_of(sweep_dir: Path, name: str = "mnist-lab") -> Any:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def job_folders(sweep_dir: Path) -> list[str]:
    return sorted((d.name for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()), key=int)


def summary_of(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / "summary.json").read_text())


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by its hash (the lock file holds only a pid)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def lr_of(job: dict[str, Any]) -> float:
    (value,) = [o.split("=", 1)[1] for o in job["overrides"] if o.startswith("optimizer.lr=")]
    return float(value)


# ------------------------------------------------------------------ the presets, no training


@pytest.mark.parametrize(
    ("preset", "model_key"), [("optuna", "hidden_units"), ("optuna_cnn", "filters")]
)
def test_search_presets_compose(preset: str, model_key: str) -> None:
    cfg = compose_config([f"hparams_search={preset}", "hydra.sweeper.n_trials=3"], hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.mnist_lab_optuna.sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and sweeper.n_trials == 3
    assert sweeper.sampler.name == "tpe" and sweeper.sampler.seed == cfg.seed
    assert sweeper.pruner == "median" and sweeper.storage is None
    assert cfg.optimized_metric == "validation.precision"
    assert cfg.hydra.mode.name == "MULTIRUN"
    # Every searched key exists in the preset's config, so every trial composes.
    assert set(sweeper.params) == {"optimizer.lr", "trainer.batch_size", f"model.{model_key}"}
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_the_cli_finds_the_sweeper(tmp_path: Path) -> None:
    # Hydra finds plugins (and their configs) by scanning the hydra_plugins namespace
    # package: the installed command must see ours.
    result = run_cli(["hparams_search=optuna", "--cfg", "all"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_target_: hydra_plugins.mnist_lab_optuna.sweeper.OptunaSweeper" in result.stdout


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ("optimizer.lr=interval(-1,1)", "optimizer.lr"),
        ("optimizer.lr=tag(log, interval(0, 1))", "optimizer.lr"),
        ("trainer.batch_size=choice(16,0)", "trainer.batch_size"),
        ("model.no_such_key=choice(1,2)", "model.no_such_key"),
        ("optimizer.lr=tag(lgo, interval(1e-4, 1))", "lgo"),
    ],
)
def test_a_bad_search_space_is_refused_before_any_trial(
    tmp_path: Path, space: str, needle: str
) -> None:
    sweep_dir = tmp_path / "search"
    result = search(sweep_dir, *TRIAL, space)
    line = assert_one_error_line(result, needle)
    assert "search space" in line or "tag" in line
    assert not sweep_dir.exists()  # no job folder, no study, nothing


def test_a_search_needs_a_metric_and_a_sensible_direction(tmp_path: Path) -> None:
    result = search(tmp_path / "a", *TRIAL, "optimized_metric=null")
    assert_one_error_line(result, "optimized_metric is null")
    result = search(tmp_path / "b", *TRIAL, "optimized_metric=validation.loss")
    assert_one_error_line(
        result, "hydra.sweeper.direction=maximize with optimized_metric=validation.loss"
    )


# ------------------------------------------------------------------ the space and the job side


def test_hydra_sweep_syntax_becomes_optuna_distributions() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.mnist_lab_optuna._space import parse

    params = {
        "optimizer.lr": "tag(log, interval(1e-4, 0.3))",
        "trainer.batch_size": "choice(32, 64)",
        "model.hidden_units": "choice([64], [128,32])",
        "trainer.steps": "100",
    }
    arguments = ["data=fake", "trainer.batch_size=interval(16, 128)", "model.dropout=0,0.5",
                 "trainer.eval_every=range(10, 40, 10)", "~data.dir"]  # fmt: skip
    base = compose_config(["model=mlp"])
    space = parse(params, arguments, OverridesParser.create(), base)
    by_name = {p.name: p for p in space.params}
    assert by_name["optimizer.lr"].distribution == FloatDistribution(1e-4, 0.3, log=True)
    # The command line wins over the config, and an integer key gets integers.
    assert by_name["trainer.batch_size"].distribution == IntDistribution(16, 128)
    assert by_name["trainer.eval_every"].distribution == IntDistribution(10, 30, step=10)
    hidden = by_name["model.hidden_units"]
    assert hidden.distribution == CategoricalDistribution(["[64]", "[128,32]"])
    assert hidden.override("[128,32]") == "model.hidden_units=[128,32]"
    assert by_name["model.dropout"].distribution == CategoricalDistribution([0, 0.5])
    assert space.fixed == ["trainer.steps=100", "data=fake", "~data.dir"]
    assert by_name["optimizer.lr"].override(0.001) == "optimizer.lr=0.001"
    assert by_name["optimizer.lr"].extremes() == [1e-4, 0.3]


def record(step: int, precision: float) -> Any:
    """What the loop hands the pruner at an evaluation of 1,000 validation examples."""
    from mnist_lab.rundir.results import EvalRecord, SplitResult

    validation = SplitResult(1000, round(precision * 1000), 1.0 - precision)
    return EvalRecord(step, 1.0, precision, validation, learning_rate=0.01)


def test_a_job_reports_its_evaluations_and_learns_when_to_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_lab.sweeps import trial as job_side

    journal = str(tmp_path / "optuna.journal")
    study = optuna.create_study(
        storage=job_side.open_storage(journal), study_name="s", direction="maximize"
    )
    study.set_user_attr("optimized_metric", "validation.precision")
    study.set_user_attr("pruner", {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    done = study.ask()
    done.report(0.5, 5)
    done.report(0.6, 10)
    study.tell(done, 0.7)
    running = study.ask()
    assert job_side.pruner_from_environment() is None  # not a trial of a search
    monkeypatch.setenv(job_side.ENV_STORAGE, journal)
    monkeypatch.setenv(job_side.ENV_STUDY, "s")
    monkeypatch.setenv(job_side.ENV_TRIAL, str(running.number))

    pruner = job_side.pruner_from_environment()
    assert pruner is not None
    assert pruner(record(5, 0.55)) is False  # above the median at step 5
    assert pruner(record(10, 0.1)) is True  # its best so far, 0.55, is below 0.6
    assert study.trials[1].intermediate_values == {5: 0.55, 10: 0.1}
    # A resumed job evaluates step 10 again: reported once (Optuna would warn), still pruned.
    resumed = job_side.pruner_from_environment()
    assert resumed is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resumed(record(10, 0.9)) is True
    assert study.trials[1].intermediate_values == {5: 0.55, 10: 0.1}


def test_pruners_by_name() -> None:
    from mnist_lab.core.errors import UserError
    from mnist_lab.sweeps.trial import make_pruner

    assert isinstance(make_pruner({"name": "hyperband", "reduction_factor": 2}),
                      optuna.pruners.HyperbandPruner)  # fmt: skip
    assert isinstance(make_pruner({"name": "none"}), optuna.pruners.NopPruner)
    with pytest.raises(UserError, match="hydra.sweeper.pruner='mean'"):
        make_pruner({"name": "mean"})


# ------------------------------------------------------------------ real searches


@pytest.fixture(scope="module")
def failing_search(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    sweep_dir = tmp_path_factory.mktemp("failing") / "search"
    return sweep_dir, search(sweep_dir, *FAILING, "hydra.sweeper.n_trials=4")


@pytest.mark.slow
def test_a_failing_trial_does_not_end_the_search(
    failing_search: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    sweep_dir, result = failing_search
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    study = study_of(sweep_dir)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and TrialState.FAIL in states and TrialState.COMPLETE in states
    for trial in study.trials:
        lr = trial.params["optimizer.lr"]
        assert trial.state == (TrialState.FAIL if lr == 1e6 else TrialState.COMPLETE)
        if trial.state == TrialState.FAIL:
            assert "diverged" in trial.user_attrs["error"]
            assert (sweep_dir / str(trial.number) / "error.json").exists()
    # The summary marks the same jobs failed, with the error.
    summary = summary_of(sweep_dir)
    assert summary["counts"]["failed"] == states.count(TrialState.FAIL)
    assert summary["counts"]["finished"] == states.count(TrialState.COMPLETE)
    for job in summary["jobs"]:
        assert (job["status"] == "failed") == (lr_of(job) == 1e6)
        if job["status"] == "failed":
            assert "diverged" in job["error"]
    assert job_folders(sweep_dir) == ["0", "1", "2", "3"]
    # The best trial: the study's and the summary's agree; its command reruns it alone.
    best = json.loads((sweep_dir / "best.json").read_text())
    assert best["trial"] == study.best_trial.number == int(summary["best"]["job"])
    assert best["value"] == summary["best"]["validation_precision"]
    assert best["command"].startswith("mnist-lab hparams_search=optuna ")
    assert best["command"].endswith(" optimizer.lr=0.05 hydra.mode=RUN")
    assert f"to rerun it alone: {best['command']}" in result.stdout
    importances = json.loads((sweep_dir / "importances.json").read_text())
    assert importances["finished_trials"] == states.count(TrialState.COMPLETE)
    assert "parameter importances" in result.stdout
    # That command is a single run of the best trial's config, with the same result.
    run_dir = sweep_dir.parent / "best"
    rerun = run_cli([*shlex.split(best["command"])[1:], f"hydra.run.dir={run_dir}"],
                    cwd=sweep_dir.parent)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["validation"]["precision"] == best["value"]


@pytest.mark.slow
def test_a_search_whose_trials_all_fail_exits_1_and_every_view_agrees(tmp_path: Path) -> None:
    """The search's report, its study, the sweep summary and mnist-lab-runs give each trial
    the same status; a search with nothing finished is a failed command, not a success."""
    sweep_dir = tmp_path / "search"
    result = search(sweep_dir, *FAILING, "optimizer.lr=choice(1e6)", "hydra.sweeper.n_trials=2")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert "2 trials (2 fail)" in result.stdout
    assert "best trial: none (no trial finished)" in result.stdout
    assert [t.state for t in study_of(sweep_dir).trials] == [TrialState.FAIL] * 2
    summary = summary_of(sweep_dir)
    assert [job["status"] for job in summary["jobs"]] == ["failed", "failed"]
    listed = run_tool("mnist-lab-runs", [str(sweep_dir), "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert sorted(r["status"] for r in runs) == ["failed", "failed"]
    assert all("training diverged" in r["error"] for r in runs)


@pytest.mark.slow
def test_a_different_search_in_the_folder_is_refused_and_n_trials_can_grow(
    failing_search: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "search"
    shutil.copytree(failing_search[0], sweep_dir)
    before = digest(sweep_dir)
    others = [
        (["optimizer.lr=choice(0.05,1e5)"], "the search space had optimizer.lr=choice(0.05,1e6)"),
        (["trainer.steps=30"], "the other overrides had trainer.steps=20, now trainer.steps=30"),
        (
            ["optimized_metric=validation.loss", "hydra.sweeper.direction=minimize"],
            "optimized_metric was 'validation.precision', now 'validation.loss'",
        ),
        (["hydra.sweeper.study_name=other"], "holds the study 'mnist-lab', not 'other'"),
    ]
    for change, needle in others:
        result = search(sweep_dir, *FAILING, "hydra.sweeper.n_trials=4", *change)
        assert_one_error_line(result, needle)
    assert digest(sweep_dir) == before
    # The same search again, after a kill in the middle of a write to the journal: nothing to
    # run, nothing rewritten in the trials' folders.
    with (sweep_dir / "optuna.journal").open("ab") as journal:
        journal.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "us')
    again = search(sweep_dir, *FAILING, "hydra.sweeper.n_trials=4")
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
    assert "dropped an unfinished last line" in again.stdout
    # The cut bytes are kept, never lost: a file that only looked like a killed write keeps all.
    kept = sweep_dir / "optuna.journal.unfinished"
    assert kept.read_bytes() == b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "us'
    assert not re.search(r"^trial \d+: ", again.stdout, re.M)
    assert {k: v for k, v in digest(sweep_dir).items() if re.match(r"\d/", k)} == {
        k: v for k, v in before.items() if re.match(r"\d/", k)
    }
    # More trials extend it.
    more = search(sweep_dir, *FAILING, "hydra.sweeper.n_trials=5")
    assert more.returncode == 1, more.stdout[-3000:] + more.stderr[-3000:]
    assert len(study_of(sweep_dir).trials) == 5
    assert job_folders(sweep_dir) == ["0", "1", "2", "3", "4"]
    after = digest(sweep_dir)
    assert all(after[k] == v for k, v in before.items() if re.match(r"\d/", k))


@pytest.mark.slow
def test_a_damaged_journal_line_anywhere_is_named_and_nothing_is_written(
    failing_search: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """Not only a half-written last line: a line that is not JSON, JSON of another shape, an
    operation Optuna does not know, or one it cannot replay, anywhere in the file. The search
    refuses before writing a line; the command it prints keeps the readable part, which the
    same search then completes."""
    source = failing_search[0]
    lines = (source / "optuna.journal").read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    damages = {
        b"this is not json\n": "not JSON",
        b"[1, 2, 3]\n": "not an Optuna operation",
        b'{"op_code": 99, "worker_id": "w"}\n': "an operation Optuna does not know (op_code 99)",
        b'{"op_code": "5", "worker_id": "w"}\n': "an operation Optuna does not know (op_code '5')",
        b'{"op_code": 0, "worker_id": "w"}\n': "Optuna cannot replay it",  # no study name
        b"[" * 100_000 + b"]" * 100_000 + b"\n": "nested thousands of levels deep",
        b'{"op_code": 0, "worker_id": "w"}\r{"op_code": 0}\n': "lines ended by carriage returns",
    }
    for number, (line, says) in enumerate(damages.items()):
        sweep_dir = tmp_path / f"search{number}"
        shutil.copytree(source, sweep_dir)
        journal = sweep_dir / "optuna.journal"
        journal.write_bytes(b"".join([*lines[:middle], line, *lines[middle:]]))
        before = digest(sweep_dir)
        result = search(sweep_dir, *FAILING, "hydra.sweeper.n_trials=4")
        error = assert_one_error_line(result, f"{journal} is damaged at line {middle + 1}")
        assert says in error, error
        assert digest(sweep_dir) == before  # the journal included: nothing appended
    # The printed command keeps the readable part; the search then runs what it lost.
    keep = error.split("lines before it (the trials recorded after it are lost): ")[1]
    subprocess.run(keep.split("; or choose")[0], shell=True, check=True, cwd=tmp_path)
    assert (sweep_dir / "optuna.journal").read_bytes() == b"".join(lines[:middle])
    # The job folders of the trials that were lost are moved aside, not deleted.
    # Outside the sweep folder: inside it they would be listed and ranked as its jobs.
    lost = sweep_dir.with_name(f"{sweep_dir.name}.lost-trials")
    assert sorted(p.name for p in lost.glob("*/*")), error  # <time>/<trial>
    again = search(sweep_dir, *FAILING, "hydra.sweeper.n_trials=4")
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]  # a failing trial
    assert len(study_of(sweep_dir).trials) == 4
    counts = summary_of(sweep_dir)["counts"]  # the four trials, and no folder moved aside
    assert counts["finished"] + counts["failed"] == sum(counts.values()) == 4

    # A journal that went through Windows ("\r\n") is read as Optuna reads it: no damage.
    crlf = tmp_path / "crlf"
    shutil.copytree(source, crlf)
    journal_bytes = b"".join(lines)
    (crlf / "optuna.journal").write_bytes(journal_bytes.replace(b"\n", b"\r\n"))
    kept = search(crlf, *FAILING, "hydra.sweeper.n_trials=4")
    assert kept.returncode == 1, kept.stdout[-3000:] + kept.stderr[-3000:]  # its failed trial
    assert "error:" not in kept.stderr and len(study_of(crlf).trials) == 4


@pytest.mark.slow
def test_pruning_stops_a_bad_trial_and_keeps_its_folder(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "search"
    # Adam at 1e-7 learns nothing; at 0.01 it does. The median pruner judges from the first
    # finished trial on, at every evaluation: with seed 0 the sampler draws the bad value
    # first, then the good one, then the bad one twice more.
    result = search(
        sweep_dir,
        *TRIAL,
        "optimizer.lr=choice(0.01,1e-7)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.median_pruner.n_startup_trials=1",
        "hydra.sweeper.median_pruner.n_warmup_steps=0",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = study_of(sweep_dir)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.params["optimizer.lr"] == 1e-7 for t in pruned)
    for trial in study.trials:
        # Every evaluation but the last reported the validation precision.
        assert set(trial.intermediate_values) <= {5, 10, 15} and 5 in trial.intermediate_values
    summary = summary_of(sweep_dir)
    assert summary["counts"]["pruned"] == len(pruned)
    for trial in pruned:
        job = sweep_dir / str(trial.number)
        step = json.loads((job / "pruned.json").read_text())["step"]
        assert step < 20 and step == max(trial.intermediate_values)
        assert not (job / "metrics.json").exists()
        assert list((job / "checkpoints").glob(f"ckpt-{step}.index"))
        assert list((job / "tensorboard").rglob("events.out.tfevents.*"))
        assert f"trial {trial.number} pruned at step {step}" in result.stdout


def wait_for(
    predicate: Any, process: subprocess.Popen[str], what: str, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"ended before {what}: " + process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.02)


def kill(process: subprocess.Popen[str]) -> str:
    os.kill(process.pid, signal.SIGKILL)
    return process.communicate()[0]


def running_trials(sweep_dir: Path) -> list[int]:
    if not (sweep_dir / "optuna.journal").exists():
        return []  # opening a journal creates it
    try:
        return [t.number for t in study_of(sweep_dir).trials if t.state == TrialState.RUNNING]
    except (KeyError, OSError, ValueError):  # no study yet
        return []


@pytest.mark.slow
def test_a_search_killed_twice_resumes_to_exactly_n_trials(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "search"
    args = [*TRIAL, "optimizer.lr=tag(log, interval(1e-3, 0.1))", "trainer.steps=40",
            "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=none",
            f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip

    # Kill 1: in the middle of trial 1, after its checkpoint at step 10.
    first = start_cli(args, tmp_path)
    wait_for(lambda: list((sweep_dir / "1" / "checkpoints").glob("ckpt-10.index")), first,
             "a checkpoint of trial 1")  # fmt: skip
    kill(first)
    assert (sweep_dir / "0" / "metrics.json").exists()
    finished = {"0": digest(sweep_dir / "0")}
    killed_values = {t.number: t.params for t in study_of(sweep_dir).trials}

    # Kill 2: the moment the study has trial 2, whether its folder exists yet or not.
    second = start_cli(args, tmp_path)
    wait_for(lambda: 2 in running_trials(sweep_dir), second, "trial 2")
    assert "resuming the search: trial 1 starts again" in kill(second)
    assert (sweep_dir / "1" / "metrics.json").exists()
    finished["1"] = digest(sweep_dir / "1")

    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resuming the search: trial 2 starts again" in result.stdout
    study = study_of(sweep_dir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert job_folders(sweep_dir) == ["0", "1", "2", "3"]
    assert summary_of(sweep_dir)["counts"]["finished"] == 4
    # Finished trials were not run again; the killed trial kept its values and continued.
    for name, files in finished.items():
        assert digest(sweep_dir / name) == files, name
    metrics = json.loads((sweep_dir / "1" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] >= 10
    assert study.trials[1].params == killed_values[1]
    assert f"optimizer.lr={killed_values[1]['optimizer.lr']!r}" in metrics["overrides"]


def log_span(job_dir: Path) -> tuple[datetime, datetime]:
    stamps = re.findall(
        r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]",
        (job_dir / "mnist-lab.log").read_text(),
        re.M,
    )
    first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1]))
    return first, last


@pytest.mark.slow
def test_a_parallel_search_on_the_joblib_launcher(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "search"
    result = search(
        sweep_dir,
        *TRIAL,
        "optimizer.lr=tag(log, interval(1e-3, 0.1))",
        "trainer.steps=40",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "trainer.intra_op_threads=1",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = study_of(sweep_dir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert job_folders(sweep_dir) == ["0", "1", "2", "3"]
    assert summary_of(sweep_dir)["counts"]["finished"] == 4
    # Two at a time: the two trials of each batch overlap in time.
    for a, b in (("0", "1"), ("2", "3")):
        (start_a, end_a), (start_b, end_b) = log_span(sweep_dir / a), log_span(sweep_dir / b)
        assert start_a < end_b and start_b < end_a, (a, b)
