"""The real ``mnist-lab`` console script: help, config printing and user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_one_error_line, run_cli


def test_help_lists_groups(tmp_path: Path) -> None:
    result = run_cli(["--help"], cwd=tmp_path)
    assert result.returncode == 0
    for text in ("model: cnn, mlp, softmax", "experiment:", "optimizer:", "trainer.steps"):
        assert text in result.stdout
    assert "schema" not in result.stdout.split("== Config ==")[0]
    assert not (tmp_path / "outputs").exists()


def test_cfg_job_prints_the_resolved_config(tmp_path: Path) -> None:
    result = run_cli(["--cfg", "job", "model=mlp"], cwd=tmp_path)
    assert result.returncode == 0
    assert "hidden_units:" in result.stdout
    assert "${" not in result.stdout  # values, not formulas


@pytest.mark.parametrize("search", ["optuna", "optuna_cnn"])
@pytest.mark.parametrize("shown", ["--cfg=hydra", "--cfg=job", "--cfg=all"])
def test_every_part_of_a_search_config_prints(tmp_path: Path, search: str, shown: str) -> None:
    """`--cfg hydra` prints Hydra's node without the job's keys, which a search's sampler seed
    interpolates: printed as written there, resolved for the job and all."""
    result = run_cli([f"hparams_search={search}", shown], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if shown == "--cfg=hydra":
        assert "sampler:" in result.stdout and "seed: ${seed}" in result.stdout
    else:
        assert "${" not in result.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model=resnet", "model/resnet"),
        ("optimizer.lr=abc", "optimizer.lr"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=1e39", "optimizer.lr"),
        ("optimizer.clipnorm=inf", "optimizer.clipnorm"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.stepz=3", "stepz"),
        ("+trainer.stepz=5", "trainer.stepz"),
        ("trainer.steps=100000000000000000000", "trainer.steps"),
        ("trainer.intra_op_threads=2147483648", "trainer.intra_op_threads"),
        ("data.validation_size=70000", "data.validation_size"),
        ("data=fake data.train_size=10000000000", "data.train_size"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, override: str, needle: str) -> None:
    result = run_cli(override.split(), cwd=tmp_path)
    assert_one_error_line(result, needle)
    # Nothing was started: no run directory was created.
    assert not (tmp_path / "outputs").exists()


def test_bad_value_in_a_sweep_fails_before_any_job(tmp_path: Path) -> None:
    result = run_cli(["-m", "data=fake", "optimizer.lr=0.1,-1"], cwd=tmp_path)
    assert result.returncode == 2
    assert "optimizer.lr" in result.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "relative, text, args, says",
    [
        ("experiment/mine.yaml", "", ["experiment=mine"], "holds no keys"),
        ("experiment/mine.yaml", "null\n", ["+experiment=mine"], "holds no keys"),
        ("experiment/mine.yaml", "# @package _global_\n", ["experiment=mine"], "holds no keys"),
        ("experiment/mine.yaml", "- model: mlp\n", ["experiment=mine"], "holds a YAML list"),
        ("model/mine.yaml", "", ["model=mine"], "holds no keys"),
        ("mine.yaml", "", ["--config-name=mine"], "holds no keys"),
        ("mine.yaml", "- a\n", ["-cn", "mine"], "holds a YAML list"),
        ("mine.yaml", "42\n", ["--config-name", "mine"], "holds a single int"),
    ],
)
def test_a_user_config_file_without_keys_is_named(
    tmp_path: Path, relative: str, text: str, args: list[str], says: str
) -> None:
    """Not an error about a key the user never wrote (`model.name`, `experiment`)."""
    path = tmp_path / "conf" / relative
    path.parent.mkdir(parents=True)
    path.write_text(text)
    result = run_cli(["--config-dir", str(tmp_path / "conf"), *args, "data=fake"], cwd=tmp_path)
    assert says in assert_one_error_line(result, f"{path}: the config file")
    assert not (tmp_path / "outputs").exists()


def test_an_empty_file_named_through_a_defaults_list_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "model").mkdir()
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: empty\n"
    )
    (conf / "model" / "empty.yaml").write_text("")
    result = run_cli(["-cd", str(conf), "experiment=mine", "--cfg", "job"], cwd=tmp_path)
    assert_one_error_line(result, str(conf / "model" / "empty.yaml"))
    (conf / "model" / "empty.yaml").write_text("defaults:\n  - mlp\n  - _self_\n")
    assert (
        run_cli(["-cd", str(conf), "experiment=mine", "--cfg", "job"], cwd=tmp_path).returncode == 0
    )
