"""Keras models: built from the ``model`` config group, compiled, exported, loaded back.

Evaluation and prediction rebuild a run's model here, without the training loop. Every model
takes raw uint8 28x28 images and normalises them in the graph, so the data pipeline stays uint8
(4x less memory traffic) and an exported model accepts raw digits.
All models output float32 logits for the 10 classes (float32 even under mixed precision,
so the softmax and the loss stay numerically safe).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from omegaconf import DictConfig

from mnist_lab.core.backend import keras  # first: imports TensorFlow quietly
from mnist_lab.core.errors import UserError
from mnist_lab.core.files import replacing
from mnist_lab.data.idx import COLS, NUM_CLASSES, ROWS
from mnist_lab.training.optimizers import build_optimizer

log = logging.getLogger(__name__)
layers = keras.layers

IMAGE_SHAPE = (ROWS, COLS)


def _initializer(name: str) -> keras.initializers.Initializer:
    """A new initializer for each layer: an unseeded Keras initializer fixes its seed when it is
    created, so one instance shared by several layers would give them the same random stream."""
    # The tutorials' truncated normal used stddev 0.1; Keras's default (0.05) is close enough
    # only for small layers, so spell it out.
    if name == "truncated_normal":
        return keras.initializers.TruncatedNormal(stddev=0.1)
    return keras.initializers.get(name)


def _inputs() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    images = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="images")
    return images, layers.Rescaling(1.0 / 255, name="normalize")(images)


def _logits(x: keras.KerasTensor, init: keras.initializers.Initializer) -> keras.KerasTensor:
    # float32 even under mixed precision: the softmax and the loss need the range.
    return layers.Dense(NUM_CLASSES, kernel_initializer=init, name="logits", dtype="float32")(x)


def softmax_regression(cfg: DictConfig) -> keras.Model:
    images, x = _inputs()
    x = layers.Flatten()(x)
    logits = _logits(x, _initializer(cfg.kernel_initializer))
    return keras.Model(images, logits, name="softmax")


def mlp(cfg: DictConfig) -> keras.Model:
    images, x = _inputs()
    x = layers.Flatten()(x)
    for i, units in enumerate(cfg.hidden_units):
        x = layers.Dense(
            units,
            activation=cfg.activation,
            kernel_initializer=_initializer(cfg.kernel_initializer),
            name=f"hidden{i + 1}",
        )(x)
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout)(x)
    logits = _logits(x, _initializer(cfg.kernel_initializer))
    return keras.Model(images, logits, name="mlp")


def _normalization(kind: str) -> keras.layers.Layer | None:
    if kind == "batch":
        return layers.BatchNormalization()
    if kind == "layer":
        return layers.LayerNormalization()
    return None


def cnn(cfg: DictConfig) -> keras.Model:
    images, x = _inputs()
    x = layers.Reshape((*IMAGE_SHAPE, 1))(x)
    for i, filters in enumerate(cfg.filters):
        norm = _normalization(cfg.normalization)
        # With a normalisation layer the conv's bias is redundant.
        x = layers.Conv2D(
            filters,
            cfg.kernel_size,
            padding="same",
            use_bias=norm is None,
            kernel_initializer=_initializer(cfg.kernel_initializer),
            name=f"conv{i + 1}",
        )(x)
        if norm is not None:
            x = norm(x)
        x = layers.Activation(cfg.activation)(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten()(x)
    if cfg.dense_units > 0:
        x = layers.Dense(
            cfg.dense_units,
            activation=cfg.activation,
            kernel_initializer=_initializer(cfg.kernel_initializer),
            name="dense",
        )(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout)(x)
    logits = _logits(x, _initializer(cfg.kernel_initializer))
    return keras.Model(images, logits, name="cnn")


BUILDERS = {"softmax": softmax_regression, "mlp": mlp, "cnn": cnn}


def build_model(cfg: DictConfig) -> keras.Model:
    return BUILDERS[cfg.name](cfg)


def build_compiled_model(cfg: DictConfig) -> keras.Model:
    """The model of ``cfg.model`` compiled with ``cfg.optimizer``, ready to train or restore."""
    t = cfg.trainer
    model = build_model(cfg.model)
    model.compile(
        optimizer=build_optimizer(cfg.optimizer, total_steps=t.steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="precision")],
        steps_per_execution=t.steps_per_execution,
        jit_compile=t.jit_compile,
    )
    return model


def export_model(model: keras.Model, path: Path) -> None:
    """Save ``model`` without its optimizer (its schedule is ours, not Keras's), atomically."""
    # A new functional model over the same layers: same weights, nothing compiled.
    plain = keras.Model(model.inputs, model.outputs, name=model.name)
    with replacing(path) as tmp:
        plain.save(tmp)
    log.info("model: %s", path)


def load_exported(path: Path) -> keras.Model:
    """A ``.keras`` file back as a model; a damaged or foreign file is one UserError."""
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"cannot load the model {path}: not a Keras archive (damaged, or not a .keras file)"
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as ex:  # any file Keras cannot load is the user's to fix
        first = (str(ex).strip().splitlines() or [type(ex).__name__])[0]
        raise UserError(f"cannot load the model {path}: {first}") from ex
