"""The config tree: composition, presets, and the value checks that run before TensorFlow."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from mnist_lab.config import GROUP_OPTIONS, validate
from mnist_lab.errors import UserError
from tests.conftest import compose_config


def test_default_config_is_the_showcase() -> None:
    cfg = compose_config([])
    assert cfg.model.name == "cnn"
    assert list(cfg.model.filters) == [32, 64]
    assert cfg.model.kernel_size == 5 and cfg.model.dense_units == 1024
    assert cfg.model.dropout == 0.5
    assert cfg.optimizer.name == "adam"
    assert cfg.data.name == "mnist" and cfg.data.validation_size == 5000
    validate(cfg)


@pytest.mark.parametrize("group", sorted(GROUP_OPTIONS))
def test_every_group_option_composes_and_validates(group: str) -> None:
    for option in GROUP_OPTIONS[group]:
        cfg = compose_config([f"{group}={option}"])
        validate(cfg)
        if group != "trainer":
            assert cfg[group].name == option


def test_contract_groups_and_options() -> None:
    assert set(GROUP_OPTIONS["model"]) == {"softmax", "mlp", "cnn"}
    assert set(GROUP_OPTIONS["optimizer"]) == {
        "sgd",
        "momentum",
        "adam",
        "adamw",
        "rmsprop",
        "adagrad",
    }
    assert {"mnist", "fake"} <= set(GROUP_OPTIONS["data"])


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


def test_mlp_default_is_mechanics101() -> None:
    cfg = compose_config(["model=mlp"])
    assert list(cfg.model.hidden_units) == [128, 32]


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
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("trainer.steps=0", "trainer.steps"),
        ("trainer.eval_every=0", "trainer.eval_every"),
        ("trainer.checkpoint_every=0", "trainer.checkpoint_every"),
        ("data.validation_size=60000", "data.validation_size"),
        ("data.validation_size=-1", "data.validation_size"),
        ("data.train_limit=0", "data.train_limit"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.filters=[32,0]", "model.filters"),
        ("model.dense_units=-1", "model.dense_units"),
        ("model.normalization=group", "model.normalization"),
        ("optimizer.schedule.name=linear", "optimizer.schedule.name"),
        ("seed=-1", "seed"),
        ("seed=4294967296", "seed"),
        ("model.kernel_initializer=gaussian", "model.kernel_initializer"),
        ("model.filters=[8,8,8,8,8]", "model.filters"),
        ("trainer.steps_per_execution=7", "trainer.steps_per_execution"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    cfg = compose_config([override])
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as info:
        validate(cfg)
    assert "\n" not in str(info.value)


def test_bad_hidden_size() -> None:
    cfg = compose_config(["model=mlp", "model.hidden_units=[128,0]"])
    with pytest.raises(UserError, match=r"model\.hidden_units"):
        validate(cfg)


def test_edge_values_are_allowed() -> None:
    validate(compose_config(["data.validation_size=0", "seed=0", "model.dropout=0"]))
    validate(compose_config(["data.validation_size=59999"]))
