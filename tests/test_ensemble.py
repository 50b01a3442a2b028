"""mnist-lab-ensemble: a real sweep on the synthetic set, combined by the real command.

Every figure the command reports is checked against a computation by hand from the members'
own ``predictions.npz`` (average, argmax, count; mean -log p[label]). Folders written by hand
cover what a real sweep cannot produce cheaply (ties, members trained on other examples).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_lab.core.errors import UserError
from mnist_lab.listing import ensemble
from tests.conftest import (
    SPLITS,
    assert_one_error_line,
    read_json,
    run_cli,
    run_tool,
    run_without_room,
)

# Three seeds of a small MLP, 30 steps: the members disagree enough for an ensemble to matter.
JOB = [
    "data=fake",
    "model=mlp",
    "trainer.steps=30",
    "trainer.batch_size=32",
    "trainer.eval_every=30",
    "trainer.checkpoint_every=30",
    "trainer.tensorboard=false",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep of three seeds (read-only: copy it to change it)."""
    sweep_dir = tmp_path_factory.mktemp("ensemble") / "sweep"
    result = run_cli(["-m", *JOB, "seed=0,1,2", f"hydra.sweep.dir={sweep_dir}"], sweep_dir.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep_dir


@pytest.fixture(scope="module")
def other_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Job 0: the same files, another validation split; job 1: other files (a smaller test)."""
    sweep_dir = tmp_path_factory.mktemp("other") / "sweep"
    args = ["-m", *JOB, "data.validation_size=400", "data.test_size=1000,900"]
    result = run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], sweep_dir.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep_dir


def combine(*args: str | Path | int, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_tool("mnist-lab-ensemble", [str(a) for a in args], cwd)


def by_hand(run_dirs: list[Path]) -> dict[str, dict]:
    """Each split's figures for the average of these runs, from their predictions.npz."""
    saved = [np.load(d / "predictions.npz") for d in run_dirs]
    expected = {}
    for split in SPLITS:
        labels = saved[0][f"{split}_labels"]
        mean = np.mean([s[f"{split}_probabilities"].astype(np.float64) for s in saved], axis=0)
        correct = int((mean.argmax(axis=1) == labels).sum())
        loss = float(np.mean(-np.log(mean[np.arange(len(labels)), labels])))
        expected[split] = {
            "num_examples": len(labels),
            "num_correct": correct,
            "precision": correct / len(labels),
            "loss": loss,
        }
    return expected


def assert_figures(metrics: dict, expected: dict[str, dict]) -> None:
    for split in SPLITS:
        got, want = metrics[split], expected[split]
        assert got["num_examples"] == want["num_examples"], split
        assert got["num_correct"] == want["num_correct"], split
        assert got["precision"] == want["precision"], split
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-12), split


def jobs(sweep_dir: Path) -> list[Path]:
    return [sweep_dir / str(i) for i in range(3)]


def validation_precision(run_dir: Path) -> float:
    return read_json(run_dir / "metrics.json")["validation"]["precision"]


# ------------------------------------------------------------------------ the real command


def test_the_average_of_every_finished_job_equals_a_hand_computation(
    sweep: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    result = combine(sweep, "--output", output, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = read_json(output / "metrics.json")
    assert_figures(metrics, by_hand(jobs(sweep)))
    assert [m["dir"] for m in metrics["members"]] == [str(d.resolve()) for d in jobs(sweep)]
    assert [m["validation_precision"] for m in metrics["members"]] == [
        validation_precision(d) for d in jobs(sweep)
    ]
    assert metrics["ensemble"]["method"] == "all" and metrics["ensemble"]["candidates"] == 3
    assert metrics["data"] == read_json(sweep / "0" / "metrics.json")["data"]
    # Averaging helps here: better on validation than any member (the point of an ensemble).
    assert metrics["validation"]["precision"] > max(validation_precision(d) for d in jobs(sweep))

    # Reported like a run: the same table, with the exact counts.
    assert "ensemble of 3 on fake" in result.stdout
    for split in SPLITS:
        row = next(line for line in result.stdout.splitlines() if re.match(rf"\W+{split} ", line))
        assert f"{metrics[split]['num_correct']:,}" in row
        assert f"{metrics[split]['precision']:.4f}" in row
    # Its predictions are the average, so an ensemble can itself be read like a run.
    saved = np.load(output / "predictions.npz")
    for split in SPLITS:
        mean = np.mean(
            [np.load(d / "predictions.npz")[f"{split}_probabilities"] for d in jobs(sweep)],
            axis=0,
            dtype=np.float64,
        )
        np.testing.assert_allclose(saved[f"{split}_probabilities"], mean, rtol=1e-6)


def test_the_default_output_is_inside_the_sweep_and_is_no_job(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    result = combine(copy, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (copy / "ensemble" / "metrics.json").is_file()
    assert f"metrics: {copy / 'ensemble' / 'metrics.json'}" in result.stdout
    # Run again: the sweep still has three runs (its own ensemble folder is not one), and the
    # earlier ensemble is replaced.
    again = combine(copy, "--top", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    metrics = read_json(copy / "ensemble" / "metrics.json")
    assert metrics["ensemble"]["candidates"] == 3 and len(metrics["members"]) == 2


def test_top_k_takes_the_best_by_validation(sweep: Path, tmp_path: Path) -> None:
    ranked = sorted(jobs(sweep), key=validation_precision, reverse=True)
    for k in (1, 2):
        output = tmp_path / f"top{k}"
        result = combine(sweep, "--top", k, "--output", output, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        metrics = read_json(output / "metrics.json")
        assert [m["dir"] for m in metrics["members"]] == [str(d.resolve()) for d in ranked[:k]]
        assert metrics["ensemble"]["method"] == "top"
        assert_figures(metrics, by_hand(ranked[:k]))
    # One member is that run again: its counts are its own metrics.json's, exactly.
    single, own = (
        read_json(tmp_path / "top1" / "metrics.json"),
        read_json(ranked[0] / "metrics.json"),
    )
    for split in SPLITS:
        assert single[split]["num_correct"] == own[split]["num_correct"], split
        assert single[split]["loss"] == pytest.approx(own[split]["loss"], rel=1e-5), split


def test_greedy_selection_uses_validation_only(sweep: Path, tmp_path: Path) -> None:
    output = tmp_path / "greedy"
    result = combine(sweep, "--greedy", "--output", output, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = read_json(output / "metrics.json")
    chosen = [Path(m["dir"]) for m in metrics["members"]]
    best = max(jobs(sweep), key=validation_precision)
    assert chosen[0] == best.resolve()  # it starts from the best single run
    assert metrics["validation"]["precision"] >= validation_precision(best)
    assert_figures(metrics, by_hand(chosen))
    assert metrics["ensemble"]["method"] == "greedy"


def test_unfinished_jobs_are_skipped_with_a_note(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    (copy / "1" / "metrics.json").unlink()  # interrupted
    (copy / "2" / "metrics.json").rename(copy / "2" / "error.json")  # failed
    result = combine(copy, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"skipped (interrupted): {(copy / '1').resolve()}" in result.stdout
    assert f"skipped (failed): {(copy / '2').resolve()}" in result.stdout
    metrics = read_json(copy / "ensemble" / "metrics.json")
    assert [m["dir"] for m in metrics["members"]] == [str((copy / "0").resolve())]
    assert {s["status"] for s in metrics["ensemble"]["skipped"]} == {"interrupted", "failed"}
    assert_figures(metrics, by_hand([copy / "0"]))


def test_several_folders_and_run_folders_combine_once_each(sweep: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    # A run given alone and again within its sweep counts once.
    result = combine(sweep / "2", sweep, "--output", output, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = read_json(output / "metrics.json")
    order = [sweep / "2", sweep / "0", sweep / "1"]
    assert [m["dir"] for m in metrics["members"]] == [str(d.resolve()) for d in order]
    assert_figures(metrics, by_hand(order))


def test_runs_on_other_data_are_refused(sweep: Path, other_data: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    other_files = combine(sweep, other_data / "1", "--output", output, cwd=tmp_path)
    assert_one_error_line(other_files, "different data")
    other_split = combine(sweep, other_data / "0", "--output", output, cwd=tmp_path)
    assert_one_error_line(other_split, "different validation examples")
    assert not output.exists()


def damage(run_dir: Path, how: str) -> None:
    path = run_dir / "predictions.npz"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif how == "missing":
        path.unlink()
    elif how == "a key short":
        arrays = dict(np.load(path))
        del arrays["test_labels"]
        np.savez(path, **arrays)
    elif how == "wrong shape":
        arrays = dict(np.load(path))
        arrays["validation_probabilities"] = arrays["validation_probabilities"][:10]
        np.savez(path, **arrays)
    elif how == "not probabilities":
        arrays = dict(np.load(path))
        arrays["train_probabilities"][0, 0] = np.nan
        np.savez(path, **arrays)
    elif how == "train width":
        arrays = dict(np.load(path))
        arrays["train_probabilities"] = arrays["train_probabilities"][:, :5]
        np.savez(path, **arrays)
    elif how == "replaced":
        # Well-formed probabilities of other examples: only the run's own counts can tell.
        arrays = dict(np.load(path))
        arrays["test_probabilities"] = np.roll(arrays["test_probabilities"], 1, axis=0)
        np.savez(path, **arrays)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "garbage",
        "missing",
        "a key short",
        "wrong shape",
        "not probabilities",
        "train width",
        "replaced",
    ],
)
def test_damaged_predictions_are_one_line(sweep: Path, tmp_path: Path, how: str) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    damage(copy / "1", how)
    result = combine(copy, cwd=tmp_path)
    assert_one_error_line(result, str((copy / "1" / "predictions.npz").resolve()))
    assert not (copy / "ensemble").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{sweep}", "--top", "0"], "--top 0"),
        (["{sweep}", "--top", "4"], "[1, 3]"),
        (["{sweep}", "{sweep}/0"], "--output"),
        (["{tmp}/nowhere"], "not a directory"),
        (["{tmp}"], "no mnist-lab runs"),
        (["{sweep}", "--output", "{sweep}/0"], "run folder"),
        (["{sweep}", "--output", "{sweep}/0/ensemble"], "inside the run"),
        (["{sweep}/0"], "is inside the run"),
        (["{sweep}", "--output", "{sweep}/0/metrics.json"], "not a directory"),
    ],
)
def test_user_errors_are_one_line(
    sweep: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    before = (sweep / "0" / "metrics.json").read_bytes()
    argv = [a.format(sweep=sweep, tmp=tmp_path) for a in args]
    assert_one_error_line(combine(*argv, cwd=tmp_path), needle)
    assert (sweep / "0" / "metrics.json").read_bytes() == before
    assert not (sweep / "0" / "ensemble").exists()


def test_a_sweep_with_no_finished_job_is_one_line(sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    for job in jobs(copy):
        (job / "metrics.json").unlink()
    assert_one_error_line(combine(copy, cwd=tmp_path), "no finished runs")


def test_the_command_does_not_import_tensorflow() -> None:
    code = "import sys, mnist_lab.commands.ensemble; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------- folders written by hand (no training)


def fake_run(
    run_dir: Path,
    probabilities: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    fingerprint: str = "sha256:same",
) -> Path:
    """A finished run folder as mnist-lab writes one, holding these predictions."""
    (run_dir / ".hydra").mkdir(parents=True)
    arrays: dict[str, Any] = {}
    for split in SPLITS:
        arrays[f"{split}_probabilities"] = probabilities[split].astype(np.float32)
        arrays[f"{split}_labels"] = labels[split].astype(np.int32)
    np.savez(run_dir / "predictions.npz", **arrays)
    metrics = {
        split: ensemble.score(probabilities[split], labels[split]).as_dict() for split in SPLITS
    }
    metrics["data"] = {"name": "fake", "location": "here", "fingerprint": fingerprint}
    metrics["step"] = 10
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def one_hot(classes: list[int], confidence: float = 0.9) -> np.ndarray:
    p = np.full((len(classes), 10), (1 - confidence) / 9)
    p[np.arange(len(classes)), classes] = confidence
    return p


def test_members_trained_on_other_examples_have_no_train_figures(tmp_path: Path) -> None:
    shared = {"validation": np.array([1, 2, 3]), "test": np.array([4, 5])}
    for i, train in enumerate(([0, 1, 2, 3], [0, 1])):  # data.train_limit 4 and 2
        labels = {"train": np.array(train), **shared}
        fake_run(
            tmp_path / "sweep" / str(i), {s: one_hot(list(y)) for s, y in labels.items()}, labels
        )
    built, _ = ensemble.build([tmp_path / "sweep"])
    assert set(built.results) == {"validation", "test"}
    ensemble.write(built, tmp_path / "out", [], 0.0)
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["train"] is None and metrics["test"]["num_correct"] == 2


def test_a_probability_that_underflowed_gives_a_finite_loss() -> None:
    p = np.zeros((2, 10))
    p[0, 3], p[1, 5] = 1.0, 1.0
    result = ensemble.score(p, np.array([3, 4]))  # the second is certain, and wrong
    assert result.num_correct == 1
    assert result.loss == pytest.approx(-np.log(np.finfo(np.float32).tiny) / 2)


def test_greedy_stops_when_no_run_improves_validation(tmp_path: Path) -> None:
    """Two runs right where the others are wrong: greedy takes one strong run and stops."""
    y = np.arange(10) % 10
    good = one_hot(list(y), 0.6)
    bad = one_hot(list((y + 1) % 10), 0.95)
    labels = {s: y for s in SPLITS}
    fake_run(tmp_path / "s" / "0", {s: bad for s in SPLITS}, labels)
    fake_run(tmp_path / "s" / "1", {s: good for s in SPLITS}, labels)
    fake_run(tmp_path / "s" / "2", {s: good for s in SPLITS}, labels)
    fake_run(tmp_path / "s" / "3", {s: bad for s in SPLITS}, labels)
    everything, _ = ensemble.build([tmp_path / "s"])
    assert everything.results["validation"].num_correct == 0  # 2 x 0.95 outvotes 2 x 0.6
    chosen, _ = ensemble.build([tmp_path / "s"], ensemble.GREEDY)
    assert [m.dir.name for m in chosen.members] == ["1"]  # 2 ties 1, which ranks first
    assert chosen.results["test"].num_correct == 10
    top, _ = ensemble.build([tmp_path / "s"], ensemble.TOP, 2)
    assert [m.dir.name for m in top.members] == ["1", "2"]


# ------------------------------------------------- members that disagree with their records


def rewrite(run_dir: Path, change: Any) -> None:
    """predictions.npz with ``change(arrays)`` applied, saved as mnist-lab saves it."""
    path = run_dir / "predictions.npz"
    arrays = dict(np.load(path))
    change(arrays)
    np.savez(path, **arrays)


def flip_one(arrays: dict[str, np.ndarray]) -> None:
    """One validation example's two most likely classes swapped: one count off."""
    p = arrays["validation_probabilities"]
    first, second = np.argsort(p[0])[-2:][::-1]
    p[0, [first, second]] = p[0, [second, first]]


CHANGES: dict[str, Any] = {
    "another run's file": None,  # job 0's predictions.npz copied over job 1's
    "one example flipped": flip_one,
    "labels as floats": lambda a: a.update(test_labels=a["test_labels"].astype(np.float32)),
    "probabilities as integers": lambda a: a.update(
        test_probabilities=(a["test_probabilities"] > 0.5).astype(np.int32)
    ),
    "rows not summing to 1": lambda a: a.update(
        validation_probabilities=a["validation_probabilities"] * 0.5
    ),
    "train one class wider": lambda a: a.update(
        train_probabilities=np.pad(a["train_probabilities"], ((0, 0), (0, 1)))
    ),
}


@pytest.mark.parametrize("how", list(CHANGES))
def test_a_member_whose_predictions_disagree_with_its_record_is_refused(
    sweep: Path, tmp_path: Path, how: str
) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    if CHANGES[how] is None:
        shutil.copy(copy / "0" / "predictions.npz", copy / "1" / "predictions.npz")
    else:
        rewrite(copy / "1", CHANGES[how])
    line = assert_one_error_line(combine(copy, cwd=tmp_path), "predictions.npz")
    assert str((copy / "1" / "predictions.npz").resolve()) in line
    assert not (copy / "ensemble").exists()


def test_a_member_with_a_damaged_record_is_refused_not_left_out(
    sweep: Path, tmp_path: Path
) -> None:
    """Leaving it out would change the ensemble's figures without a word."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    metrics = read_json(copy / "1" / "metrics.json")
    metrics["validation"]["precision"] = "0.99"
    (copy / "1" / "metrics.json").write_text(json.dumps(metrics))
    line = assert_one_error_line(combine(copy, cwd=tmp_path), "validation.precision is '0.99'")
    assert f"{(copy / '1').resolve()}/metrics.json is damaged" in line
    assert not (copy / "ensemble").exists()


def test_a_tie_at_the_top_may_count_either_way(tmp_path: Path) -> None:
    """The run counted the argmax of its logits; their float32 softmax can round the top two
    to one probability. The label among tied tops is right or wrong; a clear miss is not."""
    labels = {split: np.array([1, 2]) for split in SPLITS}
    p = one_hot([1, 2])
    p[0, :] = 0.0
    p[0, [0, 1]] = 0.5  # example 0: classes 0 and 1 tie; the logits chose 1, its label
    fake_run(tmp_path / "s" / "0", {s: p for s in SPLITS}, labels)
    metrics = read_json(tmp_path / "s" / "0" / "metrics.json")
    assert metrics["test"]["num_correct"] == 1  # numpy's argmax takes class 0 of the tie
    for split in SPLITS:
        metrics[split] = {**metrics[split], "num_correct": 2, "precision": 1.0}
    (tmp_path / "s" / "0" / "metrics.json").write_text(json.dumps(metrics))
    built, _ = ensemble.build([tmp_path / "s"])  # accepted: 2 is what the logits may count
    assert built.results["test"].num_correct == 1
    p[0, [0, 1]] = [0.6, 0.4]  # no tie: the saved file says 1 correct, the record 2
    np.savez(
        tmp_path / "s" / "0" / "predictions.npz",
        **{f"{s}_probabilities": p.astype(np.float32) for s in SPLITS},
        **{f"{s}_labels": labels[s].astype(np.int32) for s in SPLITS},
    )
    with pytest.raises(UserError, match="argmax counts 1 correct, its metrics.json records 2"):
        ensemble.build([tmp_path / "s"])


def test_a_single_run_is_combined_only_into_a_folder_named_outside_it(
    sweep: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(sweep / "0", run)
    before = sorted(p.name for p in run.iterdir())
    refused = assert_one_error_line(combine(run, cwd=tmp_path), "--output")
    assert "is inside the run" in refused
    assert sorted(p.name for p in run.iterdir()) == before
    result = combine(run, "--output", tmp_path / "alone", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    single = read_json(tmp_path / "alone" / "metrics.json")
    own = read_json(run / "metrics.json")
    assert [single[s]["num_correct"] for s in SPLITS] == [own[s]["num_correct"] for s in SPLITS]


# ---------------------------------------------------------------- no room for the output


def test_a_full_stdout_is_one_line_exit_1_and_writes_nothing(sweep: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = run_without_room(
        "mnist-lab-ensemble", [str(sweep), "--output", str(output)], tmp_path, Path("/dev/full")
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == "error: cannot write the standard output: No space left on device\n"
    assert not output.exists()  # the first line printed failed: nothing was written yet


def test_a_file_size_limit_is_one_line_exit_1_and_leaves_no_record(
    sweep: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    assert combine(sweep, "--output", output, cwd=tmp_path).returncode == 0
    result = run_without_room(
        "mnist-lab-ensemble",
        [str(sweep), "--top", "1", "--output", str(output)],
        tmp_path,
        file_size=1000,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [f"error: cannot write {output / 'predictions.npz'}: File too large"]
    # The earlier ensemble's record went first: no metrics.json beside predictions it does not
    # describe; the earlier predictions are whole, and no temporary file is left.
    assert sorted(p.name for p in output.iterdir()) == ["predictions.npz"]
    np.load(output / "predictions.npz")["test_probabilities"]
