"""Models: output shapes and the parameter counts of the classic tutorials."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_lab.core.backend import keras
from mnist_lab.training.models import build_model
from tests.conftest import compose_config


@pytest.mark.parametrize(
    "overrides, params",
    [
        (["model=softmax"], 7_850),
        (["model=mlp"], 104_938),  # Mechanics 101: 784-128-32-10
        (["model=cnn"], 3_274_634),  # Deep MNIST for Experts
        (["experiment=deep_mnist"], 3_274_634),
    ],
)
def test_parameter_counts(overrides: list[str], params: int) -> None:
    model = build_model(compose_config(overrides).model)
    assert model.count_params() == params


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=softmax"],
        ["model=mlp", "model.hidden_units=[64]", "model.dropout=0.2"],
        ["model=cnn", "model.filters=[8,16]", "model.kernel_size=3", "model.dense_units=32"],
        ["model=cnn", "model.filters=[8]", "model.dense_units=0", "model.normalization=batch"],
        ["model=cnn", "model.filters=[8,8]", "model.normalization=layer"],
    ],
)
def test_models_map_uint8_images_to_ten_logits(overrides: list[str]) -> None:
    model = build_model(compose_config(overrides).model)
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert logits.shape == (4, 10)
    assert np.isfinite(logits).all()


def test_softmax_tutorial_starts_from_zeros() -> None:
    model = build_model(compose_config(["experiment=softmax_tutorial"]).model)
    for weights in model.get_weights():
        assert not weights.any()
