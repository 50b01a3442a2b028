"""The config tree: composition, presets, a user's own configs, and the value checks that run
before TensorFlow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from mnist_lab.config import SCHEMAS, validate
from mnist_lab.core.errors import UserError
from tests.conftest import assert_one_error_line, compose_config, read_json, run_cli

CONF = Path(__file__).resolve().parent.parent / "conf"


def test_default_config_is_the_showcase() -> None:
    cfg = compose_config([])
    assert cfg.model.name == "cnn"
    assert list(cfg.model.filters) == [32, 64]
    assert cfg.model.kernel_size == 5 and cfg.model.dense_units == 1024
    assert cfg.optimizer.name == "adam" and cfg.optimizer.schedule.name == "cosine"
    assert cfg.data.name == "mnist" and cfg.data.validation_size == 5000
    validate(cfg)


def test_every_option_has_its_yaml_file_extending_its_schema() -> None:
    for group, options in SCHEMAS.items():
        for option in options:
            text = (CONF / group / f"{option}.yaml").read_text()
            assert f"/schema_{group}_{option}@_here_" in text, (group, option)
            validate(compose_config([f"{group}={option}"]))


@pytest.mark.parametrize(
    "preset, model, optimizer, lr, batch, steps",
    [
        ("softmax_tutorial", "softmax", "sgd", 0.5, 100, 1000),
        ("mechanics101", "mlp", "sgd", 0.01, 100, 2000),
        ("deep_mnist", "cnn", "adam", 1e-4, 50, 20000),
    ],
)
def test_presets_are_the_tutorials_recipes(preset, model, optimizer, lr, batch, steps) -> None:
    cfg = compose_config([f"experiment={preset}"])
    assert cfg.model.name == model
    assert cfg.optimizer.name == optimizer
    assert cfg.optimizer.lr == pytest.approx(lr)
    assert cfg.optimizer.schedule.name == "constant"
    assert cfg.trainer.batch_size == batch
    assert cfg.trainer.steps == steps
    validate(cfg)


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_preset_validates(preset: str) -> None:
    validate(compose_config([f"experiment={preset}"]))


def test_wrong_type_unknown_key_unknown_option_fail_at_composition() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(["optimizer.lr=abc"])
    assert isinstance(info.value.__cause__, ValidationError)
    with pytest.raises(ConfigCompositionException):
        compose_config(["trainer.stepz=5"])
    with pytest.raises(MissingConfigException):
        compose_config(["model=resnet"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=1e30", "optimizer.lr"),  # beyond what the backend takes
        ("optimizer.lr=inf", "optimizer.lr"),
        ("optimizer.lr=nan", "optimizer.lr"),
        ("optimizer.clipnorm=inf", "optimizer.clipnorm"),
        ("optimizer.schedule.alpha=nan", "optimizer.schedule.alpha"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.steps=0", "trainer.steps"),
        ("trainer.steps=100000000000000000000", "trainer.steps"),
        ("trainer.intra_op_threads=2147483648", "trainer.intra_op_threads"),
        ("trainer.eval_every=0", "trainer.eval_every"),
        ("trainer.checkpoint_every=0", "trainer.checkpoint_every"),
        ("trainer.keep_checkpoints=0", "trainer.keep_checkpoints"),
        ("data.validation_size=60000", "data.validation_size"),
        ("data.validation_size=-1", "data.validation_size"),
        ("data.train_limit=0", "data.train_limit"),
        ("data.augment.rotate=500", "data.augment.rotate"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.filters=[32,0]", "model.filters"),
        ("model.filters=[8,8,8,8,8]", "model.filters"),
        ("model.dense_units=-1", "model.dense_units"),
        ("model.dense_units=100000000", "model.dense_units"),
        ("model.normalization=group", "model.normalization"),
        ("model.kernel_initializer=gaussian", "model.kernel_initializer"),
        ("optimizer.schedule.name=linear", "optimizer.schedule.name"),
        ("seed=-1", "seed"),
        ("seed=4294967296", "seed"),
        ("trainer.steps_per_execution=7", "trainer.steps_per_execution"),
        ("+trainer.stepz=5", "trainer.stepz"),
        ("+model.extra.deep=1", "model.extra"),
        ("+learning_rate=0.1", "learning_rate"),
        ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience"),
        ("trainer.early_stopping.patience=-2", "trainer.early_stopping.patience"),
        ("trainer.early_stopping.min_delta=-0.01", "trainer.early_stopping.min_delta"),
        ("trainer.early_stopping.min_delta=inf", "trainer.early_stopping.min_delta"),
        ("trainer.early_stopping.monitor=validation.accuracy", "trainer.early_stopping.monitor"),
        ("trainer.early_stopping.monitor=precision", "trainer.early_stopping.monitor"),
        ("+trainer.early_stopping.patiense=3", "trainer.early_stopping.patiense"),
        ("trainer.target_precision=0", "trainer.target_precision"),
        ("trainer.target_precision=1.5", "trainer.target_precision"),
        ("trainer.target_precision=-0.5", "trainer.target_precision"),
        ("trainer.target_precision=nan", "trainer.target_precision"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    cfg = compose_config([override])
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as info:
        validate(cfg)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["data.train_limit=10", "trainer.batch_size=32"], "trainer.batch_size=32"),
        (["data=fake", "data.train_size=600", "trainer.batch_size=101"], "the 100 examples"),
        (["data.validation_size=59990", "trainer.batch_size=11"], "the 10 examples"),
        (["data.validation_size=0", "optimized_metric=validation.loss"], "optimized_metric"),
        (["hparams_search=optuna", "data.validation_size=0"], "data.validation_size is 0"),
    ],
)
def test_values_that_only_fail_together_are_refused_before_a_folder(
    tmp_path: Path, overrides: list[str], says: str
) -> None:
    """Before the run (or the search) writes a folder: a batch larger than the training split
    would be refused once the data is loaded, leaving a run listed as interrupted; a search
    would rank its trials by a validation figure none of them can have."""
    with pytest.raises(UserError, match=re.escape(says)):
        validate(compose_config(overrides))
    mode = ["-m"] if overrides[0].startswith("hparams_search") else []
    result = run_cli([*mode, *overrides, "hydra.run.dir=run", "hydra.sweep.dir=sweep"], tmp_path)
    assert_one_error_line(result, says)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("metric", ["precision", "loss"])
def test_early_stopping_monitors_a_validation_metric(split: str, metric: str) -> None:
    cfg = compose_config([f"trainer.early_stopping.monitor={split}.{metric}"])
    with pytest.raises(UserError, match=r"trainer\.early_stopping\.monitor") as info:
        validate(cfg)
    assert "a validation metric" in str(info.value)


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.early_stopping.patience=3", "trainer.early_stopping.patience"),
        ("trainer.target_precision=0.99", "trainer.target_precision"),
    ],
)
def test_stopping_rules_need_a_validation_split(override: str, key: str) -> None:
    validate(compose_config([override]))
    cfg = compose_config([override, "data.validation_size=0"])
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as info:
        validate(cfg)
    assert "a validation split" in str(info.value)


def test_stopping_rules_edge_values_are_allowed() -> None:
    defaults = compose_config([]).trainer
    assert defaults.early_stopping.patience is None and defaults.target_precision is None
    validate(compose_config(["data.validation_size=0"]))  # no stopping rule: no split needed
    validate(
        compose_config(
            [
                "trainer.early_stopping.patience=1",
                "trainer.early_stopping.monitor=validation.loss",
                "trainer.early_stopping.min_delta=0",
                "trainer.early_stopping.restore_best=false",
                "trainer.target_precision=1",
            ]
        )
    )


def test_a_bad_stopping_rule_is_one_error_line_and_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(
        ["data=fake", "trainer.early_stopping.patience=0", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert_one_error_line(result, "trainer.early_stopping.patience")
    assert not run_dir.exists()  # refused before Hydra wrote anything


def test_fake_data_sizes_have_bounds() -> None:
    for override in ("data.train_size=1000000000", "data.test_size=0"):
        with pytest.raises(UserError, match=override.split("=")[0].replace(".", r"\.")):
            validate(compose_config(["data=fake", override]))


def test_a_model_option_must_name_its_own_architecture() -> None:
    with pytest.raises(UserError, match=r"model\.name"):
        validate(compose_config(["model=cnn", "model.name=mlp"]))


def test_bad_hidden_size() -> None:
    cfg = compose_config(["model=mlp", "model.hidden_units=[128,0]"])
    with pytest.raises(UserError, match=r"model\.hidden_units"):
        validate(cfg)


def test_edge_values_are_allowed() -> None:
    validate(compose_config(["data.validation_size=0", "seed=0", "model.dropout=0"]))
    # One training example is enough for a batch of one.
    edge = ["data.validation_size=59999", "trainer.batch_size=1", "optimizer.lr=1e6"]
    validate(compose_config(edge))


# ---------------------------------------------------------------- a user's own configs


def write_user_configs(folder: Path) -> Path:
    """A model variant and a preset of one's own, as the README's example shows them."""
    (folder / "model").mkdir(parents=True)
    (folder / "experiment").mkdir()
    (folder / "model" / "cnn_tiny.yaml").write_text(
        "defaults:\n  - cnn\n  - _self_\n\nfilters: [4, 8]\nkernel_size: 3\ndense_units: 16\n"
    )
    (folder / "experiment" / "my_smoke.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: cnn_tiny\n  - override /data: fake\n\n"
        "trainer:\n  batch_size: 16\n  steps: 20\n  eval_every: 10\n  checkpoint_every: 20\n"
    )
    return folder


def test_a_users_config_folder_composes_runs_and_shows_in_help(tmp_path: Path) -> None:
    mine = write_user_configs(tmp_path / "my-mnist")
    helped = run_cli(["--config-dir", str(mine), "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "cnn_tiny" in helped.stdout and "my_smoke" in helped.stdout
    assert "schema" not in helped.stdout.split("== Config ==")[0]  # no schema group listed
    run_dir = tmp_path / "run"
    result = run_cli(
        ["--config-dir", str(mine), "experiment=my_smoke", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    config = read_json(run_dir / "metrics.json")["config"]
    assert config["model"]["name"] == "cnn" and config["model"]["filters"] == [4, 8]
    assert config["model"]["dropout"] == 0.5  # the rest from the built-in cnn option
    assert config["trainer"]["steps"] == 20


def test_a_users_typo_fails_at_composition(tmp_path: Path) -> None:
    mine = write_user_configs(tmp_path / "my-mnist")
    (mine / "model" / "cnn_typo.yaml").write_text("defaults:\n  - cnn\n  - _self_\nfilterz: [4]\n")
    result = run_cli(["--config-dir", str(mine), "model=cnn_typo"], cwd=tmp_path)
    assert_one_error_line(result, "filterz")


def test_every_config_folder_is_a_package_of_the_wheel() -> None:
    # A new group folder under conf/ that pyproject.toml does not list would be left out of
    # the wheel (and setuptools would warn on every install).
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    packages = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(("mnist_lab", *p.relative_to(root).parts))
        for p in (root / "conf").rglob("*")
        if p.is_dir() and p.name != "__pycache__"
    } | {"mnist_lab.conf"}
    assert folders <= set(packages["packages"])
