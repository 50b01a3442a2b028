"""Stopping rules: early stopping and a target precision, on real runs of the real CLI.

The rules themselves are checked in-process against hand-made evaluations; the runs check what a
user sees: where the run stops and why, whose weights are reported (mnist-lab-eval --best gives
the same counts), TensorBoard's curves ending at the stop, and resume parity after kill -9 at
every point around the stop decision.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from mnist_lab.rundir.results import EvalRecord, SplitResult
from mnist_lab.training.stopping import StoppingRules
from tests.conftest import (
    SPLITS,
    assert_one_error_line,
    compose_config,
    read_json,
    run_cli,
    run_tool,
    shared_folder,
)

RUNNER = Path(__file__).resolve().parent / "fault_runner.py"

# On the synthetic set validation reaches its plateau within ~100 steps: patience 2 stops this
# MLP at step 120 of 400 with the weights of step 80 (deterministic: the same on every rerun).
EARLY = [
    "data=fake",
    "model=mlp",
    "optimizer.lr=0.003",
    "trainer.batch_size=32",
    "trainer.steps=400",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=10",  # 10 steps per call: the fault runner's mid-step is step 30
    "trainer.deterministic=true",
    "trainer.early_stopping.patience=2",
]
TARGET = [*EARLY[:-1], "trainer.target_precision=0.95"]


def evaluation(step: int, correct: int, loss: float = 1.0) -> EvalRecord:
    return EvalRecord(step, 1.0, 0.5, SplitResult(100, correct, loss), 0.001)


def rules_for(*overrides: str) -> StoppingRules:
    return StoppingRules(compose_config(list(overrides)).trainer)


# ---------------------------------------------------------------- the rules


def test_patience_counts_evaluations_without_an_improvement_above_min_delta() -> None:
    rules = rules_for("trainer.early_stopping.patience=2", "trainer.early_stopping.min_delta=0.015")
    seen = [rules.observe(evaluation(s, c), 0, 0, final=False) for s, c in
            [(10, 50), (20, 60), (30, 61), (40, 62)]]  # fmt: skip
    assert [d.improved for d in seen] == [True, True, False, True]  # 62 beats 60 by 0.02
    assert [d.stop for d in seen] == [None] * 4
    assert rules.observe(evaluation(50, 63), 0, 0, final=False).stop is None
    decision = rules.observe(evaluation(60, 60), 0, 0, final=False)
    assert decision.stop == "early_stopping" and not decision.improved
    assert rules.record(60, 32) == {
        "reason": "early_stopping",
        "step": 60,
        "best_step": 40,
        "monitor": "validation.precision",
        "best_value": 0.62,
    }


def test_a_loss_monitor_wants_it_lower() -> None:
    rules = rules_for(
        "trainer.early_stopping.patience=1", "trainer.early_stopping.monitor=validation.loss"
    )
    assert rules.observe(evaluation(10, 90, loss=0.5), 0, 0, final=False).improved
    assert rules.observe(evaluation(20, 99, loss=0.4), 0, 0, final=False).improved
    assert rules.observe(evaluation(30, 99, loss=0.45), 0, 0, final=False).stop == "early_stopping"
    assert rules.best_step == 20


def test_the_target_stops_at_the_first_evaluation_reaching_it_with_its_times() -> None:
    rules = rules_for("trainer.target_precision=0.9")
    assert rules.observe(evaluation(10, 89), 1.0, 2.0, final=False).stop is None
    assert rules.observe(evaluation(20, 90), 3.0, 5.0, final=False).stop == "target"
    assert rules.record(20, 32)["target"] == {
        "precision": 0.9,
        "reached": True,
        "step": 20,
        "training_seconds": 3.0,
        "wall_seconds": 5.0,
        "examples": 640,
    }
    # No restore_best without early stopping: the weights reported are the last ones.
    assert rules.record(20, 32)["best_step"] == 20


def test_a_target_stop_reports_the_weights_that_reached_it_even_with_restore_best() -> None:
    rules = rules_for(
        "trainer.target_precision=0.9",
        "trainer.early_stopping.patience=5",
        "trainer.early_stopping.min_delta=0.1",
    )
    rules.observe(evaluation(10, 85), 1.0, 1.0, final=False)
    assert not rules.observe(evaluation(20, 91), 2.0, 2.0, final=False).improved  # +0.06
    assert rules.stopped == "target" and rules.best_step == 10
    assert rules.record(20, 32)["best_step"] == 20


def test_at_the_last_step_nothing_stops_early_but_the_target_is_recorded() -> None:
    rules = rules_for("trainer.target_precision=0.9", "trainer.early_stopping.patience=1")
    rules.observe(evaluation(10, 85), 1.0, 1.0, final=False)
    assert rules.observe(evaluation(20, 84), 2.0, 2.0, final=True).stop is None  # patience 1
    assert rules.record(20, 32)["reason"] == "steps"
    reached = rules_for("trainer.target_precision=0.9")
    reached.observe(evaluation(10, 85), 1.0, 1.0, final=False)
    assert reached.observe(evaluation(20, 94), 2.0, 2.0, final=True).stop is None
    record = reached.record(20, 32)
    assert record["reason"] == "steps" and record["target"]["step"] == 20
    unreached = rules_for("trainer.target_precision=0.99")
    unreached.observe(evaluation(10, 95), 1.0, 1.0, final=True)
    record = unreached.record(10, 32)
    assert record["reason"] == "steps" and record["target"]["reached"] is False
    assert record["target"]["step"] is record["target"]["training_seconds"] is None


def test_the_rules_state_round_trips_through_its_vector() -> None:
    rules = rules_for("trainer.target_precision=0.5", "trainer.early_stopping.patience=3")
    for step, correct in [(10, 40), (20, 60), (30, 55)]:
        rules.observe(evaluation(step, correct), step / 10, step / 5, final=False)
    rules.training_seconds, rules.wall_seconds = 3.5, 7.25
    again = rules_for("trainer.target_precision=0.5", "trainer.early_stopping.patience=3")
    again.load_vector(rules.as_vector())
    assert again.record(30, 32) == rules.record(30, 32)
    assert (again.training_seconds, again.wall_seconds) == (3.5, 7.25)
    assert again.without_improvement == 1


# ---------------------------------------------------------------- real runs


def scalars(run_dir: Path, run: str, tag: str) -> dict[int, float]:
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir / "tensorboard" / run), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    if tag not in accumulator.Tags()["tensors"]:
        return {}
    return {
        e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)
    }


@pytest.fixture(scope="module")
def early_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The EARLY run, finished (read-only: copy it to change it)."""

    def build(folder: Path) -> None:
        result = run_cli([*EARLY, f"hydra.run.dir={folder / 'run'}"], cwd=folder)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "early stopping at step 120" in result.stdout + result.stderr

    return shared_folder(tmp_path_factory, "early", build) / "run"


@pytest.fixture(scope="module")
def killed_mid_step(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The EARLY run killed with SIGKILL mid-step (read-only: copy it to resume it)."""

    def build(folder: Path) -> None:
        killed_at("mid-step", EARLY, folder / "run")

    return shared_folder(tmp_path_factory, "killed", build) / "run"


def test_early_stopping_reports_the_best_evaluations_weights(
    early_run: Path, tmp_path: Path
) -> None:
    metrics = read_json(early_run / "metrics.json")
    stop = metrics["stop"]
    assert stop["reason"] == "early_stopping"
    assert metrics["step"] == stop["step"] == 120 < metrics["config"]["trainer"]["steps"]
    assert stop["best_step"] == 80 < stop["step"]
    # The validation figure reported is the best evaluation's, not the last one's.
    validation = scalars(early_run, "validation", "precision")
    assert max(validation) == 120  # the curve ends at the stop step
    assert metrics["validation"]["precision"] == pytest.approx(validation[80], abs=1e-6)
    assert validation[120] <= validation[80]
    # The best checkpoint evaluated again gives exactly the reported counts, on every split.
    result = run_tool("mnist-lab-eval", [str(early_run), "--best", "--output",
                                         str(tmp_path / "best.json")], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    best = read_json(tmp_path / "best.json")
    assert best["step"] == 80
    for split in SPLITS:
        assert best[split]["num_correct"] == metrics[split]["num_correct"], split
    # The HParams session records where and why it stopped; the final figures are at the stop.
    assert scalars(early_run, "", "stop/step") == {120: 120.0}
    assert scalars(early_run, "", "stop/best_step") == {120: 80.0}
    assert set(scalars(early_run, "", "final/test_precision")) == {120}


def test_a_finished_early_stopped_run_is_reused_as_finished(
    early_run: Path, tmp_path: Path
) -> None:
    run_dir = shutil.copytree(early_run, tmp_path / "run")
    before = (run_dir / "metrics.json").read_text()
    result = run_cli([*EARLY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already finished" in result.stdout + result.stderr
    assert "stopped: early stopping" in result.stdout and "weights of step 80" in result.stdout
    assert (run_dir / "metrics.json").read_text() == before


def test_a_target_stops_the_run_when_validation_reaches_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli([*TARGET, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_json(run_dir / "metrics.json")
    stop, target = metrics["stop"], metrics["stop"]["target"]
    assert stop["reason"] == "target" and stop["step"] == stop["best_step"] == metrics["step"]
    assert metrics["validation"]["precision"] >= 0.95
    assert target["reached"] is True and target["step"] == stop["step"]
    assert target["examples"] == stop["step"] * 32
    assert 0 < target["training_seconds"] < target["wall_seconds"] < metrics["wall_seconds"] + 1
    # The evaluation before the stop had not reached it: the first one that did stopped it.
    validation = scalars(run_dir, "validation", "precision")
    assert max(validation) == stop["step"]
    assert all(v < 0.95 for s, v in validation.items() if s < stop["step"])
    assert f"stopped: target at step {stop['step']}" in result.stdout


# ---------------------------------------------------------------- faults and resume


def killed_at(point: str, args: list[str], run_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(RUNNER), point, *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == -signal.SIGKILL, (point, result.stdout[-2000:], result.stderr)
    assert not (run_dir / "metrics.json").exists()


def without_times(stop: dict) -> dict:
    target = {k: v for k, v in (stop.get("target") or {}).items() if not k.endswith("seconds")}
    return {**stop, "target": target}


@pytest.mark.parametrize(
    "point",
    [
        "mid-step",
        pytest.param("after the stop decision", marks=pytest.mark.slow),
        "after the stop checkpoint",
        pytest.param("before restoring the best", marks=pytest.mark.slow),
        pytest.param("before metrics.json", marks=pytest.mark.slow),
    ],
)
def test_kill_9_around_the_stop_then_rerun_stops_at_the_same_step_with_the_same_metrics(
    early_run: Path, tmp_path: Path, point: str
) -> None:
    run_dir = tmp_path / "run"
    killed_at(point, EARLY, run_dir)
    result = run_cli([*EARLY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, expected = read_json(run_dir / "metrics.json"), read_json(early_run / "metrics.json")
    for split in SPLITS:
        assert metrics[split] == expected[split], split
    assert without_times(metrics["stop"]) == without_times(expected["stop"])
    assert metrics["step"] == 120


def test_a_killed_target_run_keeps_its_time_to_target(tmp_path: Path) -> None:
    """Killed after the target's evaluation was checkpointed: the figures come back with it."""
    run_dir = tmp_path / "run"
    killed_at("after the stop checkpoint", TARGET, run_dir)
    result = run_cli([*TARGET, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    target = read_json(run_dir / "metrics.json")["stop"]["target"]
    assert target["reached"] and target["training_seconds"] > 0 and target["wall_seconds"] > 0


@pytest.mark.parametrize(
    "change",
    [
        "trainer.early_stopping.patience=3",
        "trainer.early_stopping.min_delta=0.01",
        "trainer.early_stopping.monitor=validation.loss",
        "trainer.target_precision=0.9",
        "trainer.eval_every=40",
        "trainer.steps=500",
    ],
)
def test_changing_a_stopping_key_of_an_interrupted_run_is_refused(
    killed_mid_step: Path, tmp_path: Path, change: str
) -> None:
    run_dir = shutil.copytree(killed_mid_step, tmp_path / "run")
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    result = run_cli([*EARLY, change, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_one_error_line(result, change.split("=")[0])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


def test_restore_best_may_change_on_resume_as_it_only_chooses_what_is_reported(
    early_run: Path, killed_mid_step: Path, tmp_path: Path
) -> None:
    run_dir = shutil.copytree(killed_mid_step, tmp_path / "run")
    last = "trainer.early_stopping.restore_best=false"
    result = run_cli([*EARLY, last, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["stop"]["step"] == metrics["stop"]["best_step"] == 120
    validation = scalars(early_run, "validation", "precision")
    assert metrics["validation"]["precision"] == pytest.approx(validation[120], abs=1e-6)


def test_stopping_keys_on_a_run_of_an_older_mnist_lab_are_its_defaults(
    early_run: Path, tmp_path: Path
) -> None:
    """A run recorded before the stopping keys existed is the same config as one with them
    at their defaults: reused, not refused."""
    run_dir = tmp_path / "run"
    plain = [o for o in EARLY if "early_stopping" not in o]
    result = run_cli([*plain, "trainer.steps=40", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("metrics.json", "checkpoints/config.yaml"):
        path = run_dir / name
        if name.endswith(".json"):
            data = json.loads(path.read_text())
            trainer = data["config"]["trainer"]
            del trainer["early_stopping"], trainer["target_precision"]
            path.write_text(json.dumps(data))
        else:
            text = path.read_text()
            start = text.index("  early_stopping:")
            end = text.index("  target_precision:")
            end = text.index("\n", end) + 1
            path.write_text(text[:start] + text[end:])
    result = run_cli([*plain, "trainer.steps=40", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already finished" in result.stdout + result.stderr


# ---------------------------------------------------------------- sweeps, searches, real MNIST


@pytest.mark.slow
def test_a_sweep_shows_each_jobs_stop_and_the_listing_filters_and_sorts_by_it(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        ["-m", *EARLY, "trainer.target_precision=0.95,null", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    by_job = {job["job"]: job for job in summary["jobs"]}
    assert by_job["0"]["stop_reason"] == "target" and by_job["0"]["best_step"] == 60
    assert by_job["1"]["stop_reason"] == "early_stopping" and by_job["1"]["best_step"] == 80
    assert by_job["1"]["steps"] == 120
    # Ranked by validation, as always: the early-stopped job's best weights win.
    assert summary["best"]["job"] == "1"
    rows = (sweep_dir / "summary.csv").read_text().splitlines()
    assert "stop_reason,best_step" in rows[0]
    assert "early_stopping, best 80" in result.stdout and "target" in result.stdout

    listed = run_tool("mnist-lab-runs", [str(sweep_dir), "stop.reason=target"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    header, *listed_rows = listed.stdout.splitlines()
    assert "stop" in header.split()
    assert len(listed_rows) == 1 and "sweep/0" in listed_rows[0] and "target" in listed_rows[0]
    ranked = run_tool(
        "mnist-lab-runs",
        [str(sweep_dir), "--sort", "stop.target.training_seconds", "--csv"],
        cwd=tmp_path,
    )
    assert ranked.returncode == 0, ranked.stderr
    lines = ranked.stdout.splitlines()
    assert "stop.reason" in lines[0] and "stop.target.training_seconds" in lines[0]
    assert "/sweep/0" in lines[1]  # the one run with the key sorts first; the other after it


@pytest.mark.slow
def test_a_search_with_early_stopping_and_a_pruner(tmp_path: Path) -> None:
    """A pruned trial stays pruned, an early-stopped trial is finished, and a trial's value is
    the validation precision of the weights it reports."""
    optuna = pytest.importorskip("optuna")
    from optuna.storages.journal import JournalFileBackend

    sweep_dir = tmp_path / "search"
    result = run_cli(
        [
            "-m",
            "hparams_search=optuna",
            *[o for o in EARLY if not o.startswith("optimizer.lr")],
            "optimizer.lr=choice(0.003,1e-7)",
            "hydra.sweeper.sampler.name=random",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.median_pruner.n_startup_trials=1",
            "hydra.sweeper.median_pruner.n_warmup_steps=0",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    study = optuna.load_study(study_name="mnist-lab", storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert sorted(states.values()).count("COMPLETE") >= 2 and "PRUNED" in states.values()
    for trial in study.trials:
        job = sweep_dir / str(trial.number)
        if trial.state.name == "PRUNED":
            assert (job / "pruned.json").exists() and not (job / "metrics.json").exists()
            continue
        metrics = read_json(job / "metrics.json")
        assert metrics["stop"]["reason"] == "early_stopping"
        assert trial.value == metrics["validation"]["precision"]


@pytest.mark.slow
def test_a_target_on_real_mnist_stops_early_with_the_target_met(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        [
            "model=mlp",
            "trainer.target_precision=0.95",
            "trainer.steps=5000",
            f"hydra.run.dir={run_dir}",
        ],  # fmt: skip
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["validation"]["num_examples"] == 5_000 and metrics["data"]["name"] == "mnist"
    stop = metrics["stop"]
    assert stop["reason"] == "target" and stop["step"] < 5000
    assert metrics["validation"]["precision"] >= 0.95
    assert stop["target"]["examples"] == stop["step"] * metrics["config"]["trainer"]["batch_size"]
