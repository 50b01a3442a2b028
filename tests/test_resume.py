"""Resume through the real CLI: kill -9, Ctrl-C, SIGTERM, a changed config, a bad output dir.

Every interrupted run is resumed and must end with exactly the metrics of an uninterrupted run:
weights, optimizer state, dropout RNG state and data order all come back.
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
from pathlib import Path

import pytest

from mnist_lab.core.errors import UserError
from mnist_lab.rundir import resume
from tests.conftest import (
    MNIST_LAB,
    RESUMABLE,
    SPLITS,
    compose_config,
    error_lines,
    latest_step,
    read_json,
    run_cli,
    start_cli,
    wait_for_checkpoint,
)

RUN = RESUMABLE


@pytest.fixture(scope="module")
def reference(reference_run: Path) -> Path:
    return reference_run


def start(run_dir: Path, at_least: int, args: list[str] = RUN) -> subprocess.Popen[str]:
    folder = resume.hydra_value(str(run_dir))  # quoted for Hydra's grammar when it must be
    process = start_cli([*args, f"hydra.run.dir={folder}"], cwd=run_dir.parent)
    wait_for_checkpoint(process, run_dir, at_least)
    return process


def assert_same_metrics(run_dir: Path, reference: Path) -> dict:
    resumed, expected = read_json(run_dir / "metrics.json"), read_json(reference / "metrics.json")
    for split in SPLITS:
        assert resumed[split] == expected[split], split  # num_correct, precision, loss: exact
    return resumed


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file's sha256 (the lock file aside): to show a command wrote nothing."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_kill_9_then_resume_ends_exactly_as_an_uninterrupted_run(
    tmp_path: Path, reference: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start(run_dir, at_least=20)
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
    run_dir = tmp_path / "a run ü"  # the printed command must survive spaces and non-ASCII
    process = start(run_dir, at_least=10)
    process.send_signal(sig)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == status, output
    stopped_at = int(re.search(r"stopped at step (\d+)", output).group(1))
    assert latest_step(run_dir) == stopped_at  # saved at the step it stopped, not the last 10
    assert "Traceback" not in output

    # The printed command is the one to run, verbatim.
    command = re.search(r"to resume: (.+)", output).group(1)
    argv = shlex.split(command)
    assert argv[0] == "mnist-lab"
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
    process = start(run_dir, at_least=10)
    process.send_signal(signal.SIGINT)
    output = ""
    for line in process.stdout:  # the second Ctrl-C comes while the first is being handled
        output += line
        if "stopping after the current steps" in line:
            process.send_signal(signal.SIGINT)
            break
    output += process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "SIGINT again: exiting now" in output
    assert latest_step(run_dir) is not None

    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_metrics(run_dir, reference)


def test_a_changed_model_is_refused_and_nothing_is_written(tmp_path: Path, reference: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / "metrics.json").unlink()  # interrupted at its last checkpoint
    before = folder_digest(run_dir)
    changed = [o for o in RUN if not o.startswith("model.dense_units")] + ["model.dense_units=32"]
    result = run_cli([*changed, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "model.dense_units (was 16, now 32)" in line
    assert "Traceback" not in result.stderr
    assert folder_digest(run_dir) == before  # .hydra/ and the log included


def test_a_finished_run_with_another_config_is_refused_and_nothing_is_written(
    tmp_path: Path, reference: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = folder_digest(run_dir)
    result = run_cli([*RUN, "seed=5", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "seed (was 0, now 5)" in result.stderr
    assert folder_digest(run_dir) == before


def test_an_unwritable_checkpoint_folder_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file, not a folder")
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "checkpoints" in line
    assert "Traceback" not in result.stderr


def test_a_finished_run_started_again_only_reevaluates(tmp_path: Path, reference: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    os.remove(run_dir / "metrics.json")
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "at step 60" in result.stdout  # restored the last checkpoint, trained nothing
    resumed = assert_same_metrics(run_dir, reference)
    # As if nothing had happened: the training figures of the run that trained are kept.
    expected = read_json(reference / "metrics.json")
    for key in ("resumed_from_step", "train_examples_per_second", "loop_examples_per_second"):
        assert resumed[key] == expected[key], key


# ---------------------------------------------------------------- the decision alone (no TF)


def finished_folder(tmp_path: Path, reference: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    return run_dir


@pytest.mark.parametrize(
    "override, named, not_named",  # not_named: a key the message need not list
    [
        ("model.dense_units=32", "model.dense_units", None),
        ("optimizer.lr=0.5", "optimizer.lr", None),
        ("seed=1", "seed", None),
        ("data.train_size=2000", "data.train_size", None),
        ("trainer.batch_size=16", "trainer.batch_size", None),
        # Another model altogether: its name says it, not every key of both.
        ("model=mlp", "model.name", "model.filters"),
    ],
)
def test_resuming_with_another_model_optimizer_data_or_seed_is_refused(
    tmp_path: Path, reference: Path, override: str, named: str, not_named: str | None
) -> None:
    run_dir = finished_folder(tmp_path, reference)
    (run_dir / "metrics.json").unlink()
    base = RUN if not override.startswith("model=") else [o for o in RUN if "model" not in o]
    with pytest.raises(UserError, match="cannot resume") as raised:
        resume.plan(run_dir, compose_config([*base, override]))
    assert named in str(raised.value)
    assert not_named is None or not_named not in str(raised.value)


def test_a_finished_run_is_reused_only_with_its_own_config(tmp_path: Path, reference: Path) -> None:
    run_dir = finished_folder(tmp_path, reference)
    assert resume.plan(run_dir, compose_config(RUN)) == resume.FINISHED
    # Where the data is found may change; what it is may not.
    moved = [*RUN, f"data.dir={tmp_path}", "data.download=false"]
    assert resume.plan(run_dir, compose_config(moved), exact=True) == resume.FINISHED
    with pytest.raises(UserError, match=r"trainer.eval_every \(was 30, now 20\)"):
        resume.plan(run_dir, compose_config([*RUN, "trainer.eval_every=20"]), exact=True)
    # Not relabelled either: its curves were made every 30 steps, whatever the new command says.
    other_cadence = compose_config([*RUN, "trainer.eval_every=20"])
    with pytest.raises(UserError, match="holds a finished run with another config"):
        resume.plan(run_dir, other_cadence)


def test_a_cosine_schedule_fixes_the_length(tmp_path: Path, reference: Path) -> None:
    run_dir = finished_folder(tmp_path, reference)
    (run_dir / "metrics.json").unlink()
    # adam (the default optimizer) decays on a cosine over trainer.steps.
    cfg = compose_config([*RUN, "trainer.steps=80"])
    with pytest.raises(UserError, match="trainer.steps"):
        resume.plan(run_dir, cfg)


def test_resuming_on_other_data_is_refused(tmp_path: Path, reference: Path) -> None:
    run_dir = finished_folder(tmp_path, reference)
    recorded = read_json(run_dir / "checkpoints" / "run.json")["data"]["fingerprint"]
    resume.check_same_data(run_dir, recorded)
    with pytest.raises(UserError, match="trained on other data"):
        resume.check_same_data(run_dir, "sha256:" + "0" * 64)


# ---------------------------------------------------------------- refusals found in review


def test_fewer_steps_than_a_finished_run_has_is_refused_before_anything_is_written(
    tmp_path: Path, reference: Path
) -> None:
    run_dir = finished_folder(tmp_path, reference)
    before = folder_digest(run_dir)
    # A constant schedule: the length itself is not what the checkpoints depend on.
    with pytest.raises(
        UserError, match=r"trainer.steps=40 is not valid: .*checkpointed at step 60"
    ):
        resume.plan(run_dir, compose_config([*RUN, "trainer.steps=40"]))
    result = run_cli([*RUN, "trainer.steps=40", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2 and "checkpointed at step 60" in result.stderr
    assert folder_digest(run_dir) == before  # metrics.json and predictions.npz still there


def test_results_without_a_recorded_config_are_never_reused(
    tmp_path: Path, reference: Path
) -> None:
    # An older mnist-lab's results: metrics.json without "config" falls back to the run's own
    # checkpoints/config.yaml; with neither, nothing proves what produced them.
    run_dir = finished_folder(tmp_path, reference)
    metrics = read_json(run_dir / "metrics.json")
    del metrics["config"]
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    assert resume.plan(run_dir, compose_config(RUN), exact=True) == resume.FINISHED
    with pytest.raises(UserError, match=r"model.name \(was 'cnn', now 'mlp'\)"):
        other = [o for o in RUN if not o.startswith("model")] + ["model=mlp"]
        resume.plan(run_dir, compose_config(other), exact=True)
    (run_dir / "checkpoints" / "config.yaml").unlink()
    with pytest.raises(UserError, match="config is not recorded"):
        resume.plan(run_dir, compose_config(RUN))


def test_determinism_and_xla_may_not_change_on_resume(tmp_path: Path, reference: Path) -> None:
    run_dir = finished_folder(tmp_path, reference)
    for change in ("trainer.deterministic=false", "trainer.jit_compile=true"):
        with pytest.raises(UserError, match=change.split("=")[0].replace(".", r"\.")):
            resume.plan(run_dir, compose_config([*RUN, change]))
