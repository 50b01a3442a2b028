"""Config schemas (dataclasses in Hydra's ConfigStore) and the value checks Hydra cannot do.

Each config group option is one of these dataclasses, and ``conf/config.yaml`` and the
experiment presets are merged onto them, so a wrong type or an unknown key fails at composition.
``validate`` then checks ranges and combinations. Nothing here
imports TensorFlow: a bad value must be reported in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from mnist_lab.errors import UserError

# ---------------------------------------------------------------- model


@dataclass
class ModelConfig:
    name: str = MISSING
    # Keras initializer name for the dense/conv kernels ("zeros", "glorot_uniform",
    # "truncated_normal", ...). The tutorials used zeros for softmax, truncated normal elsewhere.
    kernel_initializer: str = "glorot_uniform"


@dataclass
class SoftmaxConfig(ModelConfig):
    name: str = "softmax"
    kernel_initializer: str = "zeros"


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    # TensorFlow Mechanics 101: two hidden layers of 128 and 32 units.
    hidden_units: list[int] = field(default_factory=lambda: [128, 32])
    activation: str = "relu"
    dropout: float = 0.0


@dataclass
class CNNConfig(ModelConfig):
    name: str = "cnn"
    # Deep MNIST for Experts: 5x5 convs of 32 then 64 filters, each followed by 2x2 max-pool,
    # a 1024-unit dense layer and dropout 0.5.
    filters: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 5
    dense_units: int = 1024
    dropout: float = 0.5
    activation: str = "relu"
    # none | batch | layer. BatchNormalization is slow on this CPU's TensorFlow path.
    normalization: str = "none"


# ---------------------------------------------------------------- optimizer


@dataclass
class ScheduleConfig:
    # constant | cosine | exponential; any of them may start with a linear warmup.
    name: str = "constant"
    warmup_steps: int = 0
    # cosine: the final lr as a fraction of optimizer.lr.
    alpha: float = 0.0
    # exponential: lr * decay_rate ** (step / decay_steps).
    decay_rate: float = 0.96
    decay_steps: int = 1000


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 0.01
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Optional global-norm gradient clipping.
    clipnorm: float | None = None


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"


@dataclass
class MomentumConfig(OptimizerConfig):
    name: str = "momentum"
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    lr: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float = 0.004


@dataclass
class RMSpropConfig(OptimizerConfig):
    name: str = "rmsprop"
    lr: float = 0.001
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7


@dataclass
class AdagradConfig(OptimizerConfig):
    name: str = "adagrad"
    initial_accumulator_value: float = 0.1
    epsilon: float = 1e-7


# ---------------------------------------------------------------- data


@dataclass
class DataConfig:
    # mnist | fashion_mnist | fake
    name: str = MISSING
    # A folder that already holds the files; looked at before the cache ($MNIST_LAB_DATA).
    dir: str | None = None
    # The first validation_size images of the official training file, as the tutorials did.
    validation_size: int = 5000
    # Cap on the number of training examples (after the validation split); null = all.
    train_limit: int | None = None
    # false forbids any network access.
    download: bool = True


@dataclass
class FakeDataConfig(DataConfig):
    name: str = "fake"
    validation_size: int = 500
    # Size of the synthetic "official training file" (before the validation split) and test file.
    train_size: int = 3000
    test_size: int = 1000


# ---------------------------------------------------------------- trainer


@dataclass
class TrainerConfig:
    batch_size: int = 128
    steps: int = 2000
    eval_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    # Batch size used for evaluation only (does not change results).
    eval_batch_size: int = 1000
    # Turns on TensorFlow's op determinism (slower, bit-identical reruns).
    deterministic: bool = False
    # Half-precision compute, float32 weights: float16 on a GPU, bfloat16 on a CPU with
    # AVX-512 BF16 or AMX; float32 (with a warning) elsewhere.
    mixed_precision: bool = False
    # XLA compilation of the train step: measured about 2x slower for conv nets on this
    # machine's CPU, so off by default; try it on a GPU.
    jit_compile: bool = False
    # Keras runs this many steps per compiled call: fewer Python round trips.
    steps_per_execution: int = 1
    # Summaries to TensorBoard; histograms and images are written at each evaluation.
    tensorboard: bool = True
    # TensorFlow thread pools; 0 lets TensorFlow choose.
    intra_op_threads: int = 0
    inter_op_threads: int = 0


# ---------------------------------------------------------------- root


@dataclass
class Config:
    model: Any = MISSING
    optimizer: Any = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    # Seeds Python, NumPy, TensorFlow and the data order. 0 is a seed like any other.
    seed: int = 0
    # What a run returns to Hydra's sweeper, e.g. "validation.precision" for Optuna;
    # null returns the whole metrics dict.
    optimized_metric: str | None = None


# The options of each config group. They live in the ConfigStore rather than in YAML files so
# that each option is exactly its schema: one place to read, nothing to keep in step.
GROUP_OPTIONS: dict[str, dict[str, Any]] = {
    "model": {"softmax": SoftmaxConfig, "mlp": MLPConfig, "cnn": CNNConfig},
    "optimizer": {
        "sgd": SGDConfig,
        "momentum": MomentumConfig,
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "rmsprop": RMSpropConfig,
        "adagrad": AdagradConfig,
    },
    "data": {
        "mnist": DataConfig(name="mnist"),
        "fashion_mnist": DataConfig(name="fashion_mnist"),
        "fake": FakeDataConfig,
    },
    "trainer": {"default": TrainerConfig},
}


def register_configs() -> None:
    """Register the root schema and every group option with Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in GROUP_OPTIONS.items():
        for name, node in options.items():
            cs.store(group=group, name=name, node=node)


# ---------------------------------------------------------------- value checks

INITIALIZERS = (
    "zeros",
    "ones",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "truncated_normal",
    "random_normal",
    "random_uniform",
    "orthogonal",
)
# Each conv layer halves the image with its max-pool: 28 -> 14 -> 7 -> 3 -> 1.
MAX_CONV_LAYERS = 4
MODEL_ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "elu", "selu", "swish", "linear")
NORMALIZATIONS = ("none", "batch", "layer")
SCHEDULES = ("constant", "cosine", "exponential")
DATASETS = ("mnist", "fashion_mnist", "fake")
MNIST_TRAIN_FILE_SIZE = 60000


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is not valid: expected {allowed}")


def validate(cfg: DictConfig) -> None:
    """Check every value Hydra's types cannot judge; raise UserError naming the key."""
    t = cfg.trainer
    _check(t.batch_size >= 1, "trainer.batch_size", t.batch_size, "an integer >= 1")
    _check(t.steps >= 1, "trainer.steps", t.steps, "an integer >= 1")
    _check(t.eval_every >= 1, "trainer.eval_every", t.eval_every, "an integer >= 1")
    _check(
        t.checkpoint_every >= 1, "trainer.checkpoint_every", t.checkpoint_every, "an integer >= 1"
    )
    _check(t.keep_checkpoints >= 1, "trainer.keep_checkpoints", t.keep_checkpoints, ">= 1")
    _check(t.eval_batch_size >= 1, "trainer.eval_batch_size", t.eval_batch_size, ">= 1")
    _check(t.steps_per_execution >= 1, "trainer.steps_per_execution", t.steps_per_execution, ">= 1")
    _check(
        t.steps % t.steps_per_execution == 0,
        "trainer.steps_per_execution",
        t.steps_per_execution,
        f"a divisor of trainer.steps ({t.steps})",
    )
    _check(t.intra_op_threads >= 0, "trainer.intra_op_threads", t.intra_op_threads, ">= 0")
    _check(t.inter_op_threads >= 0, "trainer.inter_op_threads", t.inter_op_threads, ">= 0")

    o = cfg.optimizer
    _check(o.lr > 0, "optimizer.lr", o.lr, "a number > 0")
    if o.clipnorm is not None:
        _check(o.clipnorm > 0, "optimizer.clipnorm", o.clipnorm, "null or a number > 0")
    s = o.schedule
    _check(s.name in SCHEDULES, "optimizer.schedule.name", s.name, f"one of {', '.join(SCHEDULES)}")
    _check(s.warmup_steps >= 0, "optimizer.schedule.warmup_steps", s.warmup_steps, ">= 0")
    _check(0 <= s.alpha <= 1, "optimizer.schedule.alpha", s.alpha, "a number in [0, 1]")
    _check(0 < s.decay_rate <= 1, "optimizer.schedule.decay_rate", s.decay_rate, "in (0, 1]")
    _check(s.decay_steps >= 1, "optimizer.schedule.decay_steps", s.decay_steps, ">= 1")
    for key in ("momentum", "rho", "beta_1", "beta_2"):
        if key in o:
            _check(0 <= o[key] < 1, f"optimizer.{key}", o[key], "a number in [0, 1)")
    for key in ("epsilon", "weight_decay", "initial_accumulator_value"):
        if key in o:
            _check(o[key] >= 0, f"optimizer.{key}", o[key], "a number >= 0")

    _check(0 <= cfg.seed < 2**32, "seed", cfg.seed, "an integer in [0, 2**32)")

    m = cfg.model
    _check(
        m.kernel_initializer in INITIALIZERS,
        "model.kernel_initializer",
        m.kernel_initializer,
        f"one of {', '.join(INITIALIZERS)}",
    )
    if "hidden_units" in m:
        _check(
            all(h >= 1 for h in m.hidden_units),
            "model.hidden_units",
            list(m.hidden_units),
            "a list of integers >= 1",
        )
    if "filters" in m:
        _check(
            1 <= len(m.filters) <= MAX_CONV_LAYERS and all(f >= 1 for f in m.filters),
            "model.filters",
            list(m.filters),
            f"a list of 1 to {MAX_CONV_LAYERS} integers >= 1",
        )
        _check(m.kernel_size >= 1, "model.kernel_size", m.kernel_size, "an integer >= 1")
        _check(m.dense_units >= 0, "model.dense_units", m.dense_units, "an integer >= 0")
        _check(
            m.normalization in NORMALIZATIONS,
            "model.normalization",
            m.normalization,
            f"one of {', '.join(NORMALIZATIONS)}",
        )
    if "dropout" in m:
        _check(0 <= m.dropout < 1, "model.dropout", m.dropout, "a number in [0, 1)")
    if "activation" in m:
        _check(
            m.activation in MODEL_ACTIVATIONS,
            "model.activation",
            m.activation,
            f"one of {', '.join(MODEL_ACTIVATIONS)}",
        )

    if cfg.optimized_metric is not None:
        split, _, name = cfg.optimized_metric.partition(".")
        _check(
            split in ("train", "validation") and name in ("precision", "loss"),
            "optimized_metric",
            cfg.optimized_metric,
            "null or <train|validation>.<precision|loss> (the test split is never for selection)",
        )

    d = cfg.data
    _check(d.name in DATASETS, "data.name", d.name, f"one of {', '.join(DATASETS)}")
    _check(
        0 <= d.validation_size < MNIST_TRAIN_FILE_SIZE,
        "data.validation_size",
        d.validation_size,
        "an integer in [0, 59999]",
    )
    if d.train_limit is not None:
        _check(d.train_limit >= 1, "data.train_limit", d.train_limit, "null or an integer >= 1")
    if d.name == "fake":
        _check(d.train_size >= 2, "data.train_size", d.train_size, "an integer >= 2")
        _check(d.test_size >= 1, "data.test_size", d.test_size, "an integer >= 1")
        _check(
            d.validation_size < d.train_size,
            "data.validation_size",
            d.validation_size,
            f"less than data.train_size ({d.train_size})",
        )
