"""``mnist-lab-runs`` and ``mnist_lab.runs()`` over folders made by real tiny runs in every
status: finished, failed (a diverging sweep job), interrupted (kill -9), running (a live
process holds the folder) and pruned."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

import mnist_lab
from mnist_lab import listing
from mnist_lab.commands import runs as command
from mnist_lab.core.errors import UserError
from mnist_lab.listing import Run, table
from mnist_lab.listing.read import timestamp
from mnist_lab.rundir import records, resume
from tests.conftest import (
    TRAINED,
    assert_one_error_line,
    error_lines,
    latest_step,
    read_json,
    run_cli,
    run_tool,
    run_without_room,
    start_cli,
    wait_for_checkpoint,
)

TINY_SWEEP = [
    "-m",
    "data=fake",
    "model=mlp",
    "optimizer=sgd",
    "optimizer.lr=0.05,1e6",  # job 1 diverges: a failed job
    "trainer.batch_size=32",
    "trainer.steps=40",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=20",
]
# Long enough to be killed long before its end.
LONG = [
    "data=fake",
    "model=mlp",
    "trainer.batch_size=32",
    "trainer.steps=400",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=10",
]
HOLD = """
import sys, time
from mnist_lab.rundir import locks
locks.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


@dataclass
class Tree:
    root: Path  # the folder holding every run below
    dirs: dict[str, Path]  # finished, job0, job1 (failed), interrupted, running, pruned
    holder_pid: int

    def config(self, name: str) -> dict[str, Any]:
        """A run's flat config from its files: what the listing's answers are checked against."""
        folder = self.dirs[name]
        if (folder / "metrics.json").exists():
            return records.flatten(read_json(folder / "metrics.json")["config"])
        return records.flatten(yaml.safe_load((folder / "checkpoints/config.yaml").read_text()))

    def facts(self) -> dict[str, dict[str, Any]]:
        """Each run's flat config with the status and step the fixture gave it."""
        steps = {name: run.step for name, run in listed(self).items()}
        return {
            name: {**self.config(name), "status": STATUSES[name], "step": steps[name]}
            for name in self.dirs
        }


STATUSES = {
    "finished": "finished",
    "job0": "finished",
    "job1": "failed",
    "interrupted": "interrupted",
    "running": "running",
    "pruned": "pruned",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> Any:
    root = tmp_path_factory.mktemp("runs") / "outputs"
    finished = root / "2026-11-20" / "09-00-00-000000"
    shutil.copytree(trained_run, finished)

    sweep = root / "multirun" / "2026-11-21" / "10-00-00-000000"
    result = run_cli([*TINY_SWEEP, f"hydra.sweep.dir={sweep}"], cwd=root.parent)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]

    interrupted = root / "2026-11-22" / "11-00-00-000000"
    process = start_cli([*LONG, f"hydra.run.dir={interrupted}"], cwd=root.parent)
    wait_for_checkpoint(process, interrupted, at_least=10)
    process.kill()  # kill -9: no handler, nothing saved at the end
    process.communicate()

    # A search's pruned trial: the pruner's marker on a stopped run (the search is elsewhere).
    pruned = root / "2026-11-22" / "12-00-00-000000"
    shutil.copytree(interrupted, pruned)
    started = read_json(interrupted / "checkpoints" / "run.json")["started"]
    records.write_json(pruned / "pruned.json", {"step": latest_step(pruned), "started": started})

    running = root / "2026-11-20" / "13-00-00-000000"
    shutil.copytree(trained_run, running)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(running)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    dirs = {
        "finished": finished,
        "job0": sweep / "0",
        "job1": sweep / "1",
        "interrupted": interrupted,
        "running": running,
        "pruned": pruned,
    }
    yield Tree(root, dirs, holder.pid)
    holder.kill()
    holder.wait()


def listed(tree: Tree, *filters: str, **options: Any) -> dict[str, Run]:
    """mnist_lab.runs() over the tree, by the fixture's names for the folders."""
    names = {str(path): name for name, path in tree.dirs.items()}
    return {names[r.dir]: r for r in mnist_lab.runs(tree.root, list(filters), **options)}


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# ---------------------------------------------------------------- statuses and records


def test_every_run_and_sweep_job_is_listed_with_its_status(tree: Tree) -> None:
    runs = listed(tree)
    assert {name: r.status for name, r in runs.items()} == STATUSES
    assert runs["job1"].error is not None and "diverged" in runs["job1"].error
    assert runs["running"].pid == tree.holder_pid
    assert runs["job0"].sweep == runs["job1"].sweep == str(tree.dirs["job0"].parent)
    assert runs["finished"].sweep is None
    # The same statuses as the records that resume reads, and the sweep's own summary.
    for run in runs.values():
        assert records.read_run(Path(run.dir)).status == run.status
    summary = read_json(tree.dirs["job0"].parent / "summary.json")
    assert {j["dir"]: j["status"] for j in summary["jobs"]} == {
        str(tree.dirs[n]): runs[n].status for n in ("job0", "job1")
    }


def test_records_hold_results_steps_durations_and_the_command_that_resumes(tree: Tree) -> None:
    runs = listed(tree)
    metrics = read_json(tree.dirs["finished"] / "metrics.json")
    finished = runs["finished"]
    assert finished.metrics is not None and finished.config == metrics["config"]
    assert finished.metrics["validation"] == metrics["validation"]
    assert finished.validation_precision == metrics["validation"]["precision"]
    assert finished.test_precision == metrics["test"]["precision"]
    assert finished.duration == metrics["wall_seconds"]
    assert finished.step == metrics["step"] and finished.started == metrics["started"]
    assert finished.overrides == TRAINED and finished.resume is None

    interrupted = runs["interrupted"]
    step = latest_step(tree.dirs["interrupted"])
    assert step is not None and interrupted.step == step < 400
    assert interrupted.metrics is None and interrupted.duration is not None
    assert interrupted.resume == resume.resume_command(tree.dirs["interrupted"], LONG)
    assert runs["pruned"].step == step and runs["pruned"].resume is None


def test_a_sweep_job_resumes_with_its_sweep_command(tree: Tree, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(tree.dirs["job0"].parent, sweep)
    (sweep / "0" / "metrics.json").unlink()  # interrupted at its last checkpoint
    (run,) = mnist_lab.runs(sweep, ["status=interrupted"])
    assert run.dir == str(sweep / "0")
    argv = shlex.split(run.resume or "")
    assert argv[:2] == ["mnist-lab", "-m"]
    assert "optimizer.lr=0.05,1e6" in argv and argv[-1] == f"hydra.sweep.dir={sweep}"
    # Naming the job folder alone still finds its sweep.
    assert mnist_lab.runs(sweep / "0")[0].resume == run.resume


def test_newest_first_and_only_the_differing_config_keys(tree: Tree) -> None:
    runs = mnist_lab.runs(tree.root)
    times = [timestamp(r.started) or 0.0 for r in runs]
    assert times == sorted(times, reverse=True)
    assert runs[-1].dir in (str(tree.dirs["finished"]), str(tree.dirs["running"]))
    jobs = [r.dir for r in runs if r.sweep]
    assert jobs == [str(tree.dirs["job1"]), str(tree.dirs["job0"])]  # the later job first
    # The keys whose values differ among the runs that have them, from the files themselves.
    configs = {name: tree.config(name) for name in tree.dirs}
    keys = {k for c in configs.values() for k in c}
    differ = {k for k in keys if len({repr(c[k]) for c in configs.values() if k in c}) > 1}
    assert {"optimizer.name", "optimizer.lr", "trainer.steps"} <= differ
    assert "data.name" not in differ and "model.name" not in differ
    for name, run in listed(tree).items():
        assert run.differs == {k: v for k, v in configs[name].items() if k in differ}, name


def test_folders_below_a_run_are_not_runs_and_hidden_folders_are_skipped(tmp_path: Path) -> None:
    outer = tmp_path / "a" / "run"
    (outer / ".hydra").mkdir(parents=True)
    (outer / "inner" / ".hydra").mkdir(parents=True)  # inside a run: its own business
    (tmp_path / ".trash" / "old" / ".hydra").mkdir(parents=True)
    (tmp_path / "b" / "c" / "checkpoints").mkdir(parents=True)  # killed before Hydra's copy
    (tmp_path / "b" / "notes").mkdir()
    found = [(str(d), s) for d, s in listing.find([tmp_path])]
    assert found == [(str(outer), None), (str(tmp_path / "b" / "c"), None)]
    (run,) = mnist_lab.runs(outer)  # killed before it wrote anything: a start time all the same
    assert run.status == "interrupted" and run.started is not None and run.overrides == []


# ---------------------------------------------------------------- filters, sort, limit

# Each filter, and what it means in plain Python on a run's flat config, status and step.
FILTERS: list[tuple[list[str], Any]] = [
    (["model=mlp"], lambda f: f["model.name"] == "mlp"),
    (["optimizer=sgd"], lambda f: f["optimizer.name"] == "sgd"),
    (
        ["optimizer.name==sgd", "optimizer.lr<1"],
        lambda f: f["optimizer.name"] == "sgd" and f["optimizer.lr"] < 1,
    ),
    (["optimizer.lr<0.01"], lambda f: f["optimizer.lr"] < 0.01),
    (["optimizer.lr>=1e6"], lambda f: f["optimizer.lr"] >= 1e6),
    (["optimizer.lr!=0.001"], lambda f: f["optimizer.lr"] != 0.001),
    (["optimizer.lr<=0.05", "optimizer.lr>0.001"], lambda f: 0.001 < f["optimizer.lr"] <= 0.05),
    (["status=interrupted"], lambda f: f["status"] == "interrupted"),
    (
        ["status!=finished", "trainer.steps<=40"],
        lambda f: f["status"] != "finished" and f["trainer.steps"] <= 40,
    ),
    (["trainer.steps>60"], lambda f: f["trainer.steps"] > 60),
    (["step>=40"], lambda f: f["step"] is not None and f["step"] >= 40),
    (
        ["seed=0", "trainer.deterministic=false"],
        lambda f: f["seed"] == 0 and f["trainer.deterministic"] is False,
    ),
    (["model.hidden_units=[128,32]"], lambda f: f.get("model.hidden_units") == [128, 32]),
    (["optimizer.clipnorm=null"], lambda f: f["optimizer.clipnorm"] is None),
]


@pytest.mark.parametrize("filters, meaning", FILTERS, ids=[" ".join(f) for f, _ in FILTERS])
def test_filters(tree: Tree, filters: list[str], meaning: Any) -> None:
    expected = {name for name, facts in tree.facts().items() if meaning(facts)}
    assert set(listed(tree, *filters)) == expected
    result = run_tool("mnist-lab-runs", [str(tree.root), *filters, "--json"], cwd=tree.root)
    assert {Run.from_dict(d).dir for d in json.loads(result.stdout)} == {
        str(tree.dirs[name]) for name in expected
    }


def test_most_filters_above_tell_the_runs_apart(tree: Tree) -> None:
    # A filter that keeps every run, or none, tests little: most of them must not.
    facts = tree.facts().values()
    kept = [sum(map(meaning, facts)) for _, meaning in FILTERS]
    assert sum(0 < n < len(facts) for n in kept) >= len(FILTERS) - 4, kept


def test_filters_on_results(tree: Tree) -> None:
    runs = listed(tree)
    precisions = {n: r.validation_precision for n, r in runs.items() if r.metrics}
    threshold = precisions["finished"]
    expected = {n for n, p in precisions.items() if p is not None and p >= threshold}
    assert set(listed(tree, f"validation.precision>={threshold}")) == expected
    assert "finished" in expected and "job1" not in expected
    assert set(listed(tree, "wall_seconds>0")) == set(precisions)
    assert set(listed(tree, "test.loss!=-1")) == set(tree.dirs)  # no key: matches only !=


def test_sort_and_limit(tree: Tree) -> None:
    ranked = mnist_lab.runs(tree.root, sort="validation.precision")
    precisions = [r.validation_precision for r in ranked if r.validation_precision is not None]
    assert len(precisions) == 3 and precisions == sorted(precisions, reverse=True)  # best first
    assert all(r.metrics is None for r in ranked[len(precisions) :])  # runs without it last
    lrs = sorted(tree.config(name)["optimizer.lr"] for name in tree.dirs)
    by_lr = mnist_lab.runs(tree.root, sort="optimizer.lr", limit=3)
    assert [r.get("optimizer.lr") for r in by_lr] == lrs[:3]
    highest = mnist_lab.runs(tree.root, sort="optimizer.lr", reverse=True)
    assert [r.get("optimizer.lr") for r in highest] == lrs[::-1]
    assert highest[0].dir == str(tree.dirs["job1"])  # lr 1e6
    assert mnist_lab.runs(tree.root, limit=0) == []


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("optimizer.lr<abc", "needs a number"),
        ("status=done", "not a status"),
        ("optimizer.lrr=0.1", "optimizer.lrr"),
        ("model=", "not a filter"),
        ("started>yesterday", "not a time"),
    ],
)
def test_a_bad_filter_is_one_error_line(tree: Tree, bad: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        mnist_lab.runs(tree.root, [bad])
    result = run_tool("mnist-lab-runs", [str(tree.root), "-f", bad], cwd=tree.root.parent)
    assert_one_error_line(result, needle)


def test_a_missing_folder_is_one_error_line(tmp_path: Path) -> None:
    result = run_tool("mnist-lab-runs", [str(tmp_path / "nope")], cwd=tmp_path)
    assert_one_error_line(result, "no such folder")
    result = run_tool("mnist-lab-runs", [], cwd=tmp_path)  # no outputs/ here
    assert_one_error_line(result, "outputs/")
    result = run_tool("mnist-lab-runs", [str(tmp_path), "--limit", "x"], cwd=tmp_path)
    assert_one_error_line(result, "--limit")


# ---------------------------------------------------------------- the command's outputs


def test_plain_lines_in_a_pipe(tree: Tree) -> None:
    out = lines(run_tool("mnist-lab-runs", [], cwd=tree.root.parent))  # outputs/ by default
    header, rows = out[0].split(), out[1:]
    assert header[:3] == ["status", "started", "time"]
    assert {"optimizer.name", "optimizer.lr", "trainer.steps", "validation", "test"} <= set(header)
    assert "data.name" not in header and "model.name" not in header
    assert len(rows) == len(tree.dirs)
    runs = listed(tree)
    for run in runs.values():
        (row,) = [r for r in rows if str(Path(run.dir).relative_to(tree.root.parent)) in r]
        assert row.startswith(table.status(run)), row
        if run.validation_precision is not None:
            assert f"{run.validation_precision:.4f}" in row
    (interrupted,) = [r for r in rows if r.startswith("interrupted")]
    assert interrupted.endswith(f"to resume: {runs['interrupted'].resume}")
    assert any(r.startswith(f"running (pid {tree.holder_pid})") for r in rows)
    assert any(r.startswith("failed") and "DivergedError" in r for r in rows)


def test_a_rich_table_on_a_terminal(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    screen = Console(force_terminal=True, color_system=None, width=250, file=io.StringIO())
    monkeypatch.setattr(command, "console", screen)
    command.main([str(tree.root), "model=mlp"])
    text = screen.file.getvalue()  # type: ignore[attr-defined]
    assert "6 runs (2 finished, 1 running, 1 pruned, 1 failed, 1 interrupted)" in text
    header = next(line for line in text.splitlines() if "status" in line and "folder" in line)
    assert header.split()[:3] == ["status", "started", "time"]
    assert "interrupted at step" in text and "failed [" in text
    # Below the table, whole: commands to paste, errors to read.
    resume_line = next(line for line in text.splitlines() if "to resume:" in line)
    (interrupted,) = mnist_lab.runs(tree.root, ["status=interrupted"])
    assert resume_line.endswith(f"to resume: {interrupted.resume}")


def test_json_round_trips_to_the_python_records(tree: Tree) -> None:
    args = [str(tree.root), "model=mlp", "--sort", "validation.precision", "--json"]
    result = run_tool("mnist-lab-runs", args, cwd=tree.root.parent)
    assert result.returncode == 0, result.stderr
    loaded = [Run.from_dict(d) for d in json.loads(result.stdout)]
    expected = mnist_lab.runs(tree.root, ["model=mlp"], sort="validation.precision")
    assert loaded == expected and len(loaded) == len(tree.dirs)
    empty = run_tool("mnist-lab-runs", [str(tree.root), "seed=7", "--json"], cwd=tree.root)
    assert json.loads(empty.stdout) == []


def test_csv_for_scripts(tree: Tree) -> None:
    result = run_tool("mnist-lab-runs", [str(tree.root), "--csv"], cwd=tree.root)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    runs = {r.dir: r for r in mnist_lab.runs(tree.root)}
    assert {row["dir"] for row in rows} == set(runs)
    for row in rows:
        run = runs[row["dir"]]
        assert row["status"] == run.status
        precision = run.validation_precision
        assert row["validation.precision"] == ("" if precision is None else str(precision))
        assert row["optimizer.lr"] == table.value(run.differs["optimizer.lr"])


def test_diff_names_the_keys_that_differ_and_puts_metrics_side_by_side(tree: Tree) -> None:
    a, b = tree.dirs["finished"], tree.dirs["job0"]
    out = lines(run_tool("mnist-lab-runs", ["diff", str(a), str(b)], cwd=tree.root))
    rows = {line.split()[0]: line.split()[1:] for line in out if line.strip()}
    ca, cb = tree.config("finished"), tree.config("job0")
    for key in ca.keys() | cb.keys():
        values = [c.get(key, "<unset>") for c in (ca, cb)]
        if values[0] != values[1]:
            assert rows[key] == [table.value(v) for v in values], key
        else:
            assert key not in rows, key
    assert rows["optimizer.name"] == [ca["optimizer.name"], "sgd"]
    assert rows["trainer.steps"] == [str(ca["trainer.steps"]), "40"]
    ma, mb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    for split in ("train", "validation", "test"):
        for name in ("precision", "loss"):
            x, y = ma[split][name], mb[split][name]
            assert rows[f"{split}.{name}"] == [f"{x:.4f}", f"{y:.4f}", f"{y - x:+.4f}"]
    assert rows["wall_seconds"][:2] == [f"{ma['wall_seconds']:.1f}s", f"{mb['wall_seconds']:.1f}s"]
    assert rows["train_examples_per_second"][0] == f"{ma['train_examples_per_second']:,.0f}"

    same = lines(run_tool("mnist-lab-runs", ["diff", str(a), str(a)], cwd=tree.root))
    assert same[-1] == "same config"
    result = run_tool("mnist-lab-runs", ["diff", str(a), str(tree.root)], cwd=tree.root)
    assert_one_error_line(result, "not a run folder")


def test_diff_in_python(tree: Tree) -> None:
    result = listing.diff(tree.dirs["finished"], tree.dirs["interrupted"])
    steps = tree.config("finished")["trainer.steps"]
    assert ("trainer.steps", steps, 400) in result.config
    metrics = {key: (a, b, d) for key, a, b, d in result.metrics}
    assert metrics["validation.precision"][1:] == (None, None)  # not finished: no results


def test_best_is_the_finished_run_with_the_best_validation_precision(tree: Tree) -> None:
    runs = listed(tree)
    finished = {n: r for n, r in runs.items() if r.status == "finished"}
    name = max(finished, key=lambda n: finished[n].validation_precision or 0.0)
    out = lines(run_tool("mnist-lab-runs", ["best", str(tree.root)], cwd=tree.root))
    assert out[0].endswith(f": {tree.dirs[name].relative_to(tree.root)}")
    assert out[-1] == f"to train it again: {shlex.join(['mnist-lab', *runs[name].overrides])}"

    args = ["best", str(tree.root), "optimizer=sgd"]
    sgd = lines(run_tool("mnist-lab-runs", args, cwd=tree.root))
    expected = shlex.join(["mnist-lab", *runs["job0"].overrides])
    assert sgd[-1] == f"to train it again: {expected}" and "optimizer.lr=0.05" in expected

    as_json = run_tool("mnist-lab-runs", ["best", str(tree.root), "--json"], cwd=tree.root)
    assert Run.from_dict(json.loads(as_json.stdout)["best"]).dir == str(tree.dirs[name])
    none = run_tool("mnist-lab-runs", ["best", str(tree.root), "status=failed"], cwd=tree.root)
    assert_one_error_line(none, "no finished run")


def test_listing_starts_no_tensorflow(tree: Tree) -> None:
    code = (
        "import sys\n"
        "from mnist_lab.commands.runs import main\n"
        f"main([{str(tree.root)!r}, '--json'])\n"
        f"main(['diff', {str(tree.dirs['finished'])!r}, {str(tree.dirs['job0'])!r}])\n"
        f"main(['best', {str(tree.root)!r}])\n"
        "import mnist_lab\n"
        f"mnist_lab.runs({str(tree.root)!r})\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'keras' not in sys.modules, 'keras imported'\n"
        "print('no tensorflow')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tree.root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("no tensorflow")
    assert not error_lines(result)


@pytest.mark.slow
def test_the_listed_command_resumes_the_interrupted_run(tree: Tree, tmp_path: Path) -> None:
    run_dir = tmp_path / "a run"  # the command must survive a space
    shutil.copytree(tree.dirs["interrupted"], run_dir)
    (run,) = mnist_lab.runs(run_dir)
    argv = shlex.split(run.resume or "")
    assert argv[0] == "mnist-lab"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr
    (done,) = mnist_lab.runs(run_dir)
    assert done.status == "finished" and done.step == 400
    assert done.metrics is not None and done.metrics["resumed_from_step"] == run.step


def test_a_search_trial_is_trained_again_as_one_run() -> None:
    # A trial's overrides name its search preset, which is a sweep (hydra.mode: MULTIRUN).
    def run(overrides: list[str]) -> listing.Run:
        return listing.Run("/s/3", "finished", None, None, None, overrides, None, None)

    command = listing.reproduce_command(run(["hparams_search=optuna", "optimizer.lr=0.01"]))
    assert command == "mnist-lab hparams_search=optuna optimizer.lr=0.01 hydra.mode=RUN"
    assert listing.reproduce_command(run(["model=mlp"])) == "mnist-lab model=mlp"


# ---------------------------------------------------------------- damaged records

# A metrics.json field set to what a damaged or hand-edited file holds; what the line says.
BEST = "a precision of 1, disagreeing with the counts"
DAMAGES: list[tuple[str, Any, str]] = [
    ("started", 123, "started is 123, expected an ISO 8601 time"),
    ("started", "yesterday", "started is 'yesterday'"),
    ("wall_seconds", "abc", "wall_seconds is 'abc'"),
    ("step", "60", "step is '60'"),
    ("stop.best_step", [1], "stop.best_step is [1]"),
    ("data", "fake", "data is 'fake', expected an object"),
    ("validation.precision", float("nan"), "validation.precision is nan"),
    ("validation.precision", float("inf"), "validation.precision is inf"),
    ("validation.precision", "0.99", "validation.precision is '0.99'"),
    ("validation.precision", 1.5, "validation.precision is 1.5, expected a number in [0, 1]"),
    ("validation.precision", BEST, "but num_correct / num_examples is"),  # best, if believed
    ("test.num_correct", True, "test.num_correct is True"),
    ("train.loss", -1, "train.loss is -1"),
    ("per_class.test.recall", "x", "per_class.test.recall is 'x'"),
]


def damaged_copy(source: Path, target: Path, key: str, value: Any) -> Path:
    shutil.copytree(source, target)
    metrics = read_json(target / "metrics.json")
    node = metrics
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    if value == BEST:
        node[last] = 1.0
        if node["num_correct"] == node["num_examples"]:
            node["num_correct"] -= 1
    (target / "metrics.json").write_text(json.dumps(metrics))  # NaN and Infinity as JSON has them
    return target


@pytest.mark.parametrize("key, value, says", DAMAGES, ids=[f"{k}={v!r}" for k, v, _ in DAMAGES])
def test_a_damaged_record_is_shown_as_such_and_never_ranked(
    tree: Tree, tmp_path: Path, key: str, value: Any, says: str
) -> None:
    """The listing, best, sort and the sweep summary judge a record alike (rundir/judge.py)."""
    from mnist_lab.sweeps import summary

    sweep = tmp_path / "sweep"
    shutil.copytree(tree.dirs["job0"].parent, sweep)
    shutil.rmtree(sweep / "0")
    damaged_copy(tree.dirs["job0"], sweep / "0", key, value)
    (run,) = mnist_lab.runs(sweep / "0")
    assert run.status == "interrupted" and run.metrics is None and run.validation_precision is None
    assert run.damaged is not None and says in run.damaged, run.damaged
    assert run.damaged.startswith("metrics.json is damaged: ")
    assert listing.best(mnist_lab.runs(sweep)) is None  # job 1 failed: nothing to choose
    jobs = summary.rank(summary.collect(sweep))
    assert {j.job: j.status for j in jobs} == {"0": "interrupted", "1": "failed"}
    assert [j.rank for j in jobs] == [None, None] and summary.best(jobs) is None
    assert jobs[[j.job for j in jobs].index("0")].error == run.damaged


def test_one_damaged_record_does_not_stop_the_listing(tree: Tree, tmp_path: Path) -> None:
    """Every damage at once below one folder: each command lists the others, and says which."""
    root = tmp_path / "outputs"
    good = root / "good"
    shutil.copytree(tree.dirs["finished"], good)
    for i, (key, value, _) in enumerate(DAMAGES):
        damaged_copy(tree.dirs["finished"], root / f"bad{i:02d}", key, value)
    out = lines(run_tool("mnist-lab-runs", [str(root)], cwd=tmp_path))
    (good_row,) = [row for row in out if row.startswith("finished")]
    assert str(good.relative_to(tmp_path)) in good_row
    assert len([row for row in out if row.startswith("interrupted")]) == len(DAMAGES)
    for i, (_, _, says) in enumerate(DAMAGES):
        (row,) = [row for row in out if f"outputs/bad{i:02d} " in row]
        assert row.startswith("interrupted"), row
        assert "metrics.json is damaged: " in row and says in row and "to resume: " in row, row
    as_json = run_tool("mnist-lab-runs", [str(root), "--json"], cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    records_ = {Path(d["dir"]).name: Run.from_dict(d) for d in json.loads(as_json.stdout)}
    assert records_["good"].status == "finished" and records_["good"].damaged is None
    assert all(r.damaged and r.metrics is None for n, r in records_.items() if n != "good")
    as_csv = run_tool("mnist-lab-runs", [str(root), "--csv"], cwd=tmp_path)
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert sorted(row["status"] for row in rows) == ["finished"] + ["interrupted"] * len(DAMAGES)
    best = lines(run_tool("mnist-lab-runs", ["best", str(root)], cwd=tmp_path))
    assert best[0].endswith(": outputs/good")
    by_precision = run_tool(
        "mnist-lab-runs", [str(root), "--sort", "validation.precision", "--json"], cwd=tmp_path
    )
    assert Path(json.loads(by_precision.stdout)[0]["dir"]).name == "good"


def test_damaged_run_json_pruned_json_and_multirun_yaml_are_read_around(
    tree: Tree, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(tree.dirs["job0"].parent, sweep)
    (sweep / "0" / "metrics.json").unlink()  # interrupted: its run.json is what is read
    record = sweep / "0" / "checkpoints" / "run.json"
    record.write_text(json.dumps({**read_json(record), "started": 5, "overrides": [1, 2]}))
    (sweep / "multirun.yaml").write_text("hydra:\n  sweeper: a string\n  overrides: [1]\n")
    pruned = tmp_path / "pruned"
    shutil.copytree(tree.dirs["pruned"], pruned)
    (pruned / "pruned.json").write_text(json.dumps({"step": "ten"}))
    runs = {Path(r.dir).name: r for r in mnist_lab.runs([sweep, pruned])}
    job = runs["0"]
    assert job.status == "interrupted" and job.started is not None  # the folder's time
    assert isinstance(timestamp(job.started), float)
    assert job.overrides == yaml.safe_load((sweep / "0" / ".hydra" / "overrides.yaml").read_text())
    assert job.resume is not None and job.resume.startswith("mnist-lab ")  # its own command
    assert runs["pruned"].status == "pruned"
    assert runs["pruned"].step == latest_step(pruned)  # its checkpoint's, not "ten"
    result = run_tool("mnist-lab-runs", [str(sweep), str(pruned)], cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------- no room for the output


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["PYTHONUNBUFFERED", "buffered"])
@pytest.mark.parametrize(
    "args",
    [["--json"], ["--csv"], [], ["best"], ["diff"]],
    ids=["json", "csv", "plain", "best", "diff"],
)
def test_a_full_disk_or_a_file_size_limit_is_one_line_and_exit_1(
    tree: Tree, tmp_path: Path, args: list[str], unbuffered: str
) -> None:
    if args == ["diff"]:
        args = ["diff", str(tree.dirs["finished"]), str(tree.dirs["job0"])]
    elif args == ["best"]:
        args = ["best", str(tree.root)]
    else:
        args = [str(tree.root), *args]
    env = {"PYTHONUNBUFFERED": unbuffered}
    full = run_without_room("mnist-lab-runs", args, tmp_path, Path("/dev/full"), env=env)
    limited = run_without_room(
        "mnist-lab-runs", args, tmp_path, tmp_path / "out", file_size=100, env=env
    )
    for result, reason in ((full, "No space left on device"), (limited, "File too large")):
        assert result.returncode == 1, result.stderr
        assert result.stderr == f"error: cannot write the standard output: {reason}\n"
    assert (tmp_path / "out").stat().st_size == 100


def test_a_reader_that_goes_away_ends_the_listing_quietly(tree: Tree) -> None:
    """``mnist-lab-runs | head -1``: a pipe whose reader has closed it, before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "mnist-lab-runs"), str(tree.root), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""  # 128 + SIGPIPE, as a shell reports
