"""``mnist_lab.run()``: the same run as ``mnist-lab`` with the same overrides, in the calling
process, twice in a row; its errors as ``mnist_lab.UserError`` with the CLI's line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import mnist_lab
from mnist_lab.rundir import locks
from tests.conftest import SPLITS, TRAINED, error_lines, read_json, run_cli

# Deterministic ops: the API's run and the CLI's must agree to the last bit.
SAME = [
    "data=fake",
    "model=mlp",
    "trainer.batch_size=32",
    "trainer.steps=40",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=20",
    "trainer.deterministic=true",
]
DIVERGES = [
    "data=fake",
    "model=mlp",
    "optimizer=sgd",
    "optimizer.lr=1e6",
    "trainer.batch_size=32",
    "trainer.steps=20",
]
# One process calls mnist_lab.run() several times, as a notebook would, and reports.
NOTEBOOK = textwrap.dedent(
    """
    import json, sys
    import mnist_lab
    from mnist_lab.rundir import locks

    same, diverges = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    report = {}
    first = mnist_lab.run([*same, "hydra.run.dir=api"])
    report["first"], report["first_dir"] = first, str(first.dir)
    report["held_after"] = locks.holder(first.dir)
    again = mnist_lab.run([*same, "hydra.run.dir=api"])  # the same folder: its results, reused
    report["again"] = again
    report["default_dirs"] = [str(mnist_lab.run(same).dir), str(mnist_lab.run(same).dir)]
    try:
        mnist_lab.run([*diverges, "hydra.run.dir=diverged"])
    except mnist_lab.UserError as ex:
        report["diverged"] = str(ex)
    print("REPORT " + json.dumps(report))
    """
)


@dataclass
class Runs:
    cwd: Path
    cli: Path  # the CLI's run folder
    report: dict[str, Any]  # what the notebook process saw
    cli_diverged: str  # the CLI's error line


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    cwd = tmp_path_factory.mktemp("api")
    cli = run_cli([*SAME, "hydra.run.dir=cli"], cwd=cwd)
    assert cli.returncode == 0, cli.stderr
    diverged = run_cli([*DIVERGES, "hydra.run.dir=cli-diverged"], cwd=cwd)
    assert diverged.returncode == 2
    (line,) = error_lines(diverged)
    notebook = subprocess.run(
        [sys.executable, "-c", NOTEBOOK, json.dumps(SAME), json.dumps(DIVERGES)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert notebook.returncode == 0, notebook.stdout[-3000:] + notebook.stderr[-3000:]
    (report,) = [ln for ln in notebook.stdout.splitlines() if ln.startswith("REPORT ")]
    return Runs(cwd, cwd / "cli", json.loads(report.removeprefix("REPORT ")), line)


def test_the_api_returns_exactly_the_metrics_of_the_cli(runs: Runs) -> None:
    from_cli = read_json(runs.cli / "metrics.json")
    first = runs.report["first"]
    for split in SPLITS:
        assert first[split]["num_correct"] == from_cli[split]["num_correct"], split
        assert first[split]["loss"] == from_cli[split]["loss"], split
        assert first[split] == from_cli[split], split
    assert first["config"] == from_cli["config"] and first["overrides"] == SAME
    # What it returns is what it wrote.
    assert first == read_json(runs.cwd / "api" / "metrics.json")
    assert runs.report["first_dir"] == str(runs.cwd / "api")


def test_the_api_writes_the_run_folder_the_cli_writes(runs: Runs) -> None:
    api = runs.cwd / "api"

    def names(folder: Path) -> set[str]:
        # TensorBoard's event files are named after their host, pid and time.
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if "tfevents" not in p.name}

    assert names(api) == names(runs.cli)
    for name in ("config.yaml", "overrides.yaml"):  # the same composition
        assert (api / ".hydra" / name).read_text() == (runs.cli / ".hydra" / name).read_text()
    assert (api / "checkpoints" / "config.yaml").read_text() == (
        runs.cli / "checkpoints" / "config.yaml"
    ).read_text()
    log = (api / "mnist-lab.log").read_text()
    assert "model: mlp" in log and "metrics:" in log


def test_run_twice_in_one_process_releases_the_folder_and_reuses_it(runs: Runs) -> None:
    assert runs.report["held_after"] is None  # a notebook may rerun into the same folder
    assert runs.report["again"] == runs.report["first"]
    one, two = (Path(d) for d in runs.report["default_dirs"])
    assert one != two  # Hydra's own folder each time, below outputs/ of the current folder
    for folder in (one, two):
        assert folder.parent.parent == runs.cwd / "outputs"
        assert (folder / "metrics.json").is_file()


def test_an_error_in_training_is_a_user_error_with_the_cli_line(runs: Runs) -> None:
    assert "diverged" in runs.cli_diverged
    assert f"error: {runs.report['diverged']}" == runs.cli_diverged


# ---------------------------------------------------------------- errors before TensorFlow


def cli_line(args: list[str], cwd: Path) -> str:
    result = run_cli(args, cwd=cwd)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    return line


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["model=nope"], "model/nope"),  # Hydra's composition
        (["optimizer.lr=-1"], "optimizer.lr"),  # the callback's value check
        (["optimizer.lr=0.1,0.2"], "multirun"),  # a sweep is the command line's
        (["trainer.stepz=3"], "stepz"),  # the schema
    ],
)
def test_a_bad_override_raises_the_cli_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], needle: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mnist_lab.UserError) as raised:
        mnist_lab.run(["data=fake", *overrides])
    assert needle in str(raised.value)
    assert cli_line(["data=fake", *overrides], tmp_path) == f"error: {raised.value}"
    assert not GlobalHydra.instance().is_initialized()
    assert not (tmp_path / "outputs").exists()  # refused before Hydra wrote anything


def test_a_refused_folder_raises_the_cli_line_and_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained_run: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    seed = read_json(run_dir / "metrics.json")["config"]["seed"]
    other = [*TRAINED, f"seed={seed + 1}", f"hydra.run.dir={run_dir}"]
    with pytest.raises(
        mnist_lab.UserError, match=rf"seed \(was {seed}, now {seed + 1}\)"
    ) as raised:
        mnist_lab.run(other)
    assert cli_line(other, tmp_path) == f"error: {raised.value}"
    assert locks.holder(run_dir) is None  # the callback took the lock; the API gave it back


def test_an_unwritable_log_file_raises_the_cli_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run" / "mnist-lab.log").mkdir(parents=True)  # a folder where the log goes
    args = ["data=fake", f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises(mnist_lab.UserError, match="mnist-lab.log") as raised:
        mnist_lab.run(args)
    assert cli_line(args, tmp_path) == f"error: {raised.value}"
    assert locks.holder(tmp_path / "run") is None


def test_a_notebook_keeps_its_own_hydra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with initialize_config_module(config_module="mnist_lab.conf", version_base="1.3"):
        with pytest.raises(mnist_lab.UserError):
            mnist_lab.run(["model=nope"])
        assert compose(config_name="config", overrides=["model=mlp"]).model.name == "mlp"


def test_flags_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mnist_lab.UserError, match="overrides only"):
        mnist_lab.run(["-m", "model=mlp,cnn"])


def test_import_mnist_lab_starts_neither_tensorflow_nor_hydra() -> None:
    code = (
        "import sys, mnist_lab\n"
        "mnist_lab.run, mnist_lab.runs, mnist_lab.UserError, mnist_lab.__version__\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'hydra') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
