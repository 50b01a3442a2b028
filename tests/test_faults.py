"""Faults and bad input, injected for real: each promise of docs/reliability.md is tested here.

The kill loop runs the real CLI and kills it with SIGKILL at every stage of a run (loading
data, mid-step, mid-checkpoint, the final evaluation, between the last writes); the same
command run again must end with exactly the metrics of an uninterrupted run and a complete
run folder.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from tensorboard.backend.event_processing import event_accumulator

from mnist_lab.core.errors import UserError
from mnist_lab.rundir import resume
from tests.conftest import (
    RESUMABLE,
    SPLITS,
    assert_one_error_line,
    latest_step,
    read_json,
    run_cli,
    run_tool,
    shared_folder,
    start_cli,
    wait_for_checkpoint,
)

RUNNER = Path(__file__).resolve().parent / "fault_runner.py"

RUN = RESUMABLE


@pytest.fixture(scope="module")
def reference(reference_run: Path) -> Path:
    return reference_run


def killed_at(point: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    """The run started with a SIGKILL waiting for it at ``point``."""
    result = subprocess.run(
        [sys.executable, str(RUNNER), point, *RUN, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == -signal.SIGKILL, (point, result.stdout[-2000:], result.stderr)
    return result


def assert_complete(run_dir: Path, reference: Path) -> None:
    """The run folder of a finished run, with the reference's results, and nothing half-done."""
    metrics, expected = read_json(run_dir / "metrics.json"), read_json(reference / "metrics.json")
    for split in SPLITS:
        assert metrics[split] == expected[split], split
    assert metrics["config"] == expected["config"]
    assert latest_step(run_dir) == 60
    predictions = np.load(run_dir / "predictions.npz")
    assert predictions["test_probabilities"].shape == (1000, 10)
    assert (run_dir / "model.keras").stat().st_size > 1000
    tensorboard = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"))
    tensorboard.Reload()
    assert "final/test_precision" in tensorboard.Tags()["tensors"]
    assert "_hparams_/session_end_info" in tensorboard.PluginTagToContent("hparams")
    leftovers = [p.name for p in run_dir.rglob("*") if "tmp" in p.name or p.name.endswith("_temp")]
    assert leftovers == []


KILL_POINTS = [
    "loading data",
    "after the run record",
    "mid-step",
    "mid-checkpoint",
    "mid-best-checkpoint",
    "final evaluation",
    "before the summaries end",
    "before the export",
    "before the predictions",
    "before metrics.json",
    "mid metrics.json",
]


@pytest.mark.parametrize(
    "point",
    [
        pytest.param(p, marks=[] if p in ("mid-step", "before metrics.json") else pytest.mark.slow)
        for p in KILL_POINTS
    ],
)
def test_kill_9_anywhere_then_rerun_completes_the_same_run(
    tmp_path: Path, reference: Path, point: str
) -> None:
    run_dir = tmp_path / "run"
    killed_at(point, run_dir)
    assert not (run_dir / "metrics.json").exists()  # never finished before it is complete
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_complete(run_dir, reference)


# ---------------------------------------------------------------- one writer per run folder


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start_cli([*RUN, "trainer.steps=200000", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    try:
        wait_for_checkpoint(first, run_dir, at_least=20)
        second = run_cli([*RUN, "trainer.steps=200000", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        line = assert_one_error_line(second, f"is in use by process {first.pid}")
        assert str(run_dir) in line
        assert first.poll() is None  # refused while the first was still running
        # Every event file is the first process's (TensorBoard puts the pid in the name).
        events = [p.name for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*")]
        assert events and all(f".{first.pid}." in name for name in events)
    finally:
        first.kill()
        first.communicate()
    # kill -9 released the lock: the same command now continues the run.
    stopped = latest_step(run_dir)
    again = start_cli([*RUN, "trainer.steps=200000", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    try:
        wait_for_checkpoint(again, run_dir, at_least=(stopped or 0) + 20)
    finally:
        again.send_signal(signal.SIGINT)
        output = again.communicate(timeout=300)[0]
    assert again.returncode == 130, output
    assert f"resuming from {run_dir / 'checkpoints'}/ckpt-{stopped} at step {stopped}" in output


# ---------------------------------------------------------------- the data named is the data used


def write_idx(folder: Path, seed: int) -> None:
    """Four small IDX files of random digits (not the official ones: that only warns)."""
    import struct

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name, n in (("train", 1200), ("t10k", 300)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        header = struct.pack(">4I", 2051, n, 28, 28)
        (folder / f"{name}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (folder / f"{name}-labels-idx1-ubyte").write_bytes(
            struct.pack(">2I", 2049, n) + labels.tobytes()
        )


MY_DATA = [
    "model=softmax",
    "data.validation_size=200",
    "data.download=false",
    "trainer.batch_size=50",
    "trainer.steps=40",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=20",
]


@pytest.mark.parametrize("what", ["missing", "a file", "one file short"])
def test_a_named_data_dir_that_is_not_there_is_one_line(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "digits"
    if what == "a file":
        folder.write_text("not a folder")
    elif what == "one file short":
        write_idx(folder, seed=0)
        (folder / "t10k-images-idx3-ubyte").unlink()
    result = run_cli([*MY_DATA, f"data.dir={folder}", "hydra.run.dir=run"], cwd=tmp_path)
    line = assert_one_error_line(result, f"data.dir={folder}")
    expected = {
        "missing": "no such folder",
        "a file": "a file, not a folder",
        "one file short": "missing t10k-images-idx3-ubyte (raw or .gz)",
    }[what]
    assert expected in line


def test_resuming_on_other_data_is_refused(tmp_path: Path) -> None:
    write_idx(tmp_path / "a", seed=0)
    write_idx(tmp_path / "b", seed=1)
    run_dir = tmp_path / "run"
    process = start_cli(
        [*MY_DATA, "trainer.steps=4000", f"data.dir={tmp_path / 'a'}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    wait_for_checkpoint(process, run_dir, at_least=20)
    process.kill()
    process.communicate()
    # The folder moved to other data: refused, whatever the name of the folder.
    shutil.move(tmp_path / "a", tmp_path / "old")
    shutil.move(tmp_path / "b", tmp_path / "a")
    result = run_cli(
        [*MY_DATA, "trainer.steps=4000", f"data.dir={tmp_path / 'a'}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert_one_error_line(result, "it was trained on other data")


# ---------------------------------------------------------------- damaged and unwritable


@pytest.mark.parametrize("state", ["", "garbage {{{\n"])
def test_a_damaged_checkpoint_state_file_is_rebuilt(
    tmp_path: Path, reference: Path, state: str
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / "metrics.json").unlink()
    (run_dir / "checkpoints" / "checkpoint").write_text(state)
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rebuilt from" in result.stdout
    assert_complete(run_dir, reference)


def test_a_damaged_checkpoint_state_file_in_predict(tmp_path: Path, reference: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", run_dir / "checkpoints")  # no model.keras
    (run_dir / "checkpoints" / "checkpoint").write_text("")
    from PIL import Image

    Image.new("L", (40, 40)).save(tmp_path / "blank.png")
    result = run_tool("mnist-lab-predict", [str(run_dir), str(tmp_path / "blank.png")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "blank.png:" in result.stdout


@pytest.mark.parametrize("where", ["run folder", "tensorboard"])
def test_an_unwritable_folder_is_one_line(tmp_path: Path, where: str) -> None:
    run_dir = tmp_path / "run"
    if where == "run folder":
        run_dir.write_text("a file where the run folder should be")
    else:
        run_dir.mkdir()
        (run_dir / "tensorboard").write_text("a file where the summaries go")
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_one_error_line(result, "tensorboard" if where == "tensorboard" else str(run_dir))


# ---------------------------------------------------------------- what the user is told


def test_a_sweep_interrupted_prints_the_sweeps_own_command(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "my sweep"
    args = [*RUN, "trainer.steps=4000", "seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
    quoted = [*args[:-1], f"hydra.sweep.dir={resume.hydra_value(str(sweep_dir))}"]
    process = start_cli(["-m", *quoted], cwd=tmp_path)
    wait_for_checkpoint(process, sweep_dir / "0", at_least=20)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 130, output
    line = next(x for x in output.splitlines() if x.startswith("to resume the sweep: "))
    command = line.removeprefix("to resume the sweep: ")
    argv = shlex.split(command)  # as the shell reads it when pasted
    assert argv[:2] == ["mnist-lab", "-m"] and "seed=0,1" in argv
    # ... and as Hydra then reads the folder: the same path, space and all.
    parsed = OverridesParser.create().parse_override(argv[-1])
    assert (parsed.key_or_group, parsed.value()) == ("hydra.sweep.dir", str(sweep_dir))
    assert "hydra.run.dir" not in command


def test_the_tensorboard_line_is_quoted_for_the_shell(tmp_path: Path) -> None:
    run_dir = tmp_path / "with space"
    quoted = resume.hydra_value(str(run_dir))
    small = [*RUN, "trainer.steps=20", "trainer.eval_every=20"]
    result = run_cli([*small, f"hydra.run.dir={quoted}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"tensorboard --logdir '{run_dir / 'tensorboard'}'" in result.stdout


def test_the_numbers_shown_are_the_configs_beside_them(tmp_path: Path, reference: Path) -> None:
    # A later command may rewrite Hydra's copy of the config; the results carry their own.
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model=softmax\n")
    summary = subprocess.run(
        [sys.executable, "-m", "mnist_lab.sweeps.summary", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert summary.returncode == 0, summary.stderr
    job = json.loads((tmp_path / "summary.json").read_text())["jobs"][0]
    assert job["overrides"] == RUN


# ---------------------------------------------------------------- a full disk at the end


def full_disk(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("what", ["metrics.json", "model.keras", "summaries", "predictions"])
def test_a_full_disk_at_the_end_is_one_error_and_the_rerun_completes(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    from mnist_lab.core.backend import keras, tf
    from mnist_lab.rundir import records
    from mnist_lab.training.loop import train_and_evaluate
    from tests.conftest import compose_config

    if what == "metrics.json":
        original = records.os.replace

        def replace(source: object, target: object) -> None:
            if str(target).endswith("metrics.json"):
                full_disk()
            original(source, target)

        monkeypatch.setattr(records.os, "replace", replace)
    elif what == "model.keras":
        monkeypatch.setattr(keras.Model, "save", full_disk)
    elif what == "summaries":
        monkeypatch.setattr(tf.summary, "image", full_disk)
    else:
        monkeypatch.setattr(np, "savez", full_disk)
    cfg = compose_config(RUN)
    with pytest.raises((UserError, OSError)) as raised:
        train_and_evaluate(cfg, tmp_path / "run")
    assert "No space left on device" in str(raised.value)
    assert isinstance(raised.value, UserError), "a full disk must be a user error, one line"
    assert not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.undo()
    result = run_cli([*RUN, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_complete(tmp_path / "run", reference)


def test_a_log_file_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "mnist-lab.log").mkdir(parents=True)
    result = run_cli([*RUN, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_one_error_line(result, "mnist-lab.log: Is a directory")


def test_a_sweep_rerun_on_other_data_stops_and_writes_nothing(tmp_path: Path) -> None:
    # The same command, the same data.dir string, other files in it: the finished jobs'
    # results are not the new data's. The sweep stops at once (exit 2) and no job folder is
    # marked failed.
    write_idx(tmp_path / "digits", seed=0)
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *MY_DATA, f"data.dir={tmp_path / 'digits'}", "seed=0,1"]
    first = run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.rmtree(tmp_path / "digits")
    write_idx(tmp_path / "digits", seed=1)
    job = sweep_dir / "0"
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file() and p.name != ".lock"}
    again = run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr[-2000:]
    assert "finished on other data" in again.stderr
    assert not (job / "error.json").exists()
    after = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file() and p.name != ".lock"}
    assert after.keys() == before.keys() and after["metrics.json"] == before["metrics.json"]


SMALL_SWEEP = ["-m", "data=fake", "model=softmax", "trainer.steps=10", "trainer.eval_every=10"]


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL_SWEEP with seed=0,1, finished (read-only: copy it to run into it again)."""

    def build(folder: Path) -> None:
        sweep_dir = folder / "sweep"
        first = run_cli([*SMALL_SWEEP, "seed=0,1", f"hydra.sweep.dir={sweep_dir}"], cwd=folder)
        assert first.returncode == 0, first.stderr[-2000:]

    return shared_folder(tmp_path_factory, "small-sweep", build) / "sweep"


def test_a_rerun_into_a_larger_sweeps_folder_is_refused(tmp_path: Path, small_sweep: Path) -> None:
    sweep_dir = shutil.copytree(small_sweep, tmp_path / "sweep")
    again = run_cli([*SMALL_SWEEP, "seed=0", f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path)
    assert_one_error_line(again, f"{sweep_dir / '1'} holds a job that this sweep does not have")


def test_a_reader_probing_the_lock_does_not_make_a_run_fail(tmp_path: Path) -> None:
    import fcntl
    import threading

    from mnist_lab.rundir import locks

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text("")
    fd = os.open(folder / ".lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what mnist-lab-runs does for an instant on every folder
    threading.Timer(0.2, os.close, [fd]).start()
    locks.acquire(folder)  # waits the probe out instead of calling the folder busy
    try:
        assert locks.holder(folder) == os.getpid()
    finally:
        locks.release(folder)


# ---------------------------------------------------------------- found by trying to break it


def test_a_damaged_run_record_refuses_the_resume(tmp_path: Path) -> None:
    # Without the record of the data it trained on, nothing shows the data named now is it.
    write_idx(tmp_path / "digits", seed=0)
    run_dir = tmp_path / "run"
    args = [*MY_DATA, "trainer.steps=4000", f"data.dir={tmp_path / 'digits'}"]
    process = start_cli([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    wait_for_checkpoint(process, run_dir, at_least=20)
    process.kill()
    process.communicate()
    (run_dir / "checkpoints" / "run.json").write_text("")
    result = run_cli([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_one_error_line(result, "checkpoints/run.json is damaged (not a JSON object)")


def test_a_run_that_fails_once_its_data_is_loaded_is_listed_failed(tmp_path: Path) -> None:
    """Values that fit only the data actually read (a user's files): the run is failed, with
    why, in every listing, not interrupted with a resume command that fails again."""
    write_idx(tmp_path / "digits", seed=0)  # 1,200 training images, 1,000 after validation
    run_dir = tmp_path / "run"
    args = [*MY_DATA, f"data.dir={tmp_path / 'digits'}", f"hydra.run.dir={run_dir}"]
    result = run_cli([*args, "trainer.batch_size=1100"], cwd=tmp_path)
    assert_one_error_line(result, "trainer.batch_size=1100 is not valid: expected at most the 1000")
    listed = run_tool("mnist-lab-runs", [str(run_dir), "--json"], tmp_path)
    (run,) = json.loads(listed.stdout)
    assert run["status"] == "failed" and "batch_size=1100" in run["error"], run
    assert run["resume"] is None
    # Values that fit: the same folder trains, and the failure is gone.
    assert run_cli(args, cwd=tmp_path).returncode == 0
    listed = run_tool("mnist-lab-runs", [str(run_dir), "--json"], tmp_path)
    assert json.loads(listed.stdout)[0]["status"] == "finished"


def test_ctrl_c_in_a_jobs_last_step_stops_the_sweep(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, str(RUNNER), "ctrl-c at the last step", "-m", *RUN, "seed=0,1"]
        + [f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 130, result.stdout[-2000:] + result.stderr[-2000:]
    assert (sweep_dir / "0" / "metrics.json").exists()  # the job had finished: it is complete
    assert not (sweep_dir / "1").exists()  # and the next one never started
    assert "to resume the sweep: " in result.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["seed=${oops}"], "Interpolation key 'oops' not found (at seed)"),
        (["~model"], "model"),
        (["model=null"], "Config group override must be a string"),
        (["data.dir=/nonexistent"], "data.dir"),
    ],
)
def test_bad_input_on_a_finished_run_writes_nothing(
    tmp_path: Path, reference: Path, args: list[str], needle: str
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    result = run_cli([*RUN, *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_one_error_line(result, needle)
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # .hydra/ included


def test_a_sweep_with_a_value_hydra_cannot_resolve_starts_nothing(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        ["-m", *RUN, "seed=0,1", "trainer.steps=${oops}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
    )
    assert_one_error_line(result, "Interpolation key 'oops' not found")
    assert not sweep_dir.exists()


def test_a_users_broken_config_files_are_one_line(tmp_path: Path) -> None:
    mine = tmp_path / "mine" / "model"
    mine.mkdir(parents=True)
    (mine / "broken.yaml").write_text("defaults:\n  - cnn\n  - _self_\nfilters: [4, 8\n")
    (mine / "binary.yaml").write_bytes(b"\x00\xff\xfe garbage")
    (mine / "loop.yaml").write_text("defaults:\n  - loop\n")
    for option, needle in (
        ("broken", "not valid YAML"),
        ("binary", "not UTF-8 text"),
        ("loop", "includes itself"),
    ):
        result = run_cli(
            ["--config-dir", str(mine.parent), "data=fake", f"model={option}"], cwd=tmp_path
        )
        assert_one_error_line(result, needle)


def test_a_finished_run_is_not_relabelled_with_other_settings(
    tmp_path: Path, reference: Path
) -> None:
    # Evaluating every 20 steps would not make its curves (made every 30) say so.
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    result = run_cli([*RUN, "trainer.eval_every=20", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_one_error_line(result, "trainer.eval_every (was 30, now 20)")


@pytest.mark.parametrize("where", ["/", "somebody's folder"])
def test_a_run_folder_full_of_other_files_is_refused(tmp_path: Path, where: str) -> None:
    folder = Path("/") if where == "/" else tmp_path / "mine"
    if where != "/":
        folder.mkdir()
        (folder / "thesis.tex").write_text("months of work")
    result = run_cli([*RUN, f"hydra.run.dir={folder}"], cwd=tmp_path)
    assert_one_error_line(result, "holds files that are not an mnist-lab run")
    assert not (folder / ".lock").exists() and not (folder / "checkpoints").exists()


def test_a_sweep_rerun_spelling_the_same_configs_otherwise_reuses_every_job(
    tmp_path: Path, small_sweep: Path
) -> None:
    sweep_dir = shutil.copytree(small_sweep, tmp_path / "sweep")
    # optimizer.lr=0.001 is Adam's default: the same two configs, other overrides.
    again = run_cli(
        [*SMALL_SWEEP, "seed=0,1", "optimizer.lr=0.001", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    counts = json.loads((sweep_dir / "summary.json").read_text())["counts"]
    assert counts["finished"] == 2 and counts["missing"] == 0
