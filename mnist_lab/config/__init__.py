"""Config schemas (dataclasses in Hydra's ConfigStore) and the value checks Hydra cannot do.

The schemas give every key its type; the values live in the YAML files of ``conf/``. Each group
option (``conf/model/cnn.yaml``, ...) extends its schema through its defaults list, so a
typo or a wrong type fails at composition. Where every option of a group shares a default
(the schedule's parameters, ``data.dir``, the augmentation ranges ...), it is written here
once; an option's own values are written in its YAML file only.

``validate`` then checks ranges, combinations and keys added with ``+``. Nothing here imports
TensorFlow: a bad value must be reported in about a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from mnist_lab.core.errors import UserError

# ---------------------------------------------------------------- model


@dataclass
class ModelConfig:
    # Which architecture to build: softmax | mlp | cnn (a variant of yours keeps its base's).
    name: str = MISSING
    # Keras initializer name for the dense/conv kernels ("zeros", "glorot_uniform", ...).
    kernel_initializer: str = MISSING


@dataclass
class SoftmaxConfig(ModelConfig):
    pass


@dataclass
class MLPConfig(ModelConfig):
    hidden_units: list[int] = MISSING
    activation: str = MISSING
    dropout: float = MISSING


@dataclass
class CNNConfig(ModelConfig):
    filters: list[int] = MISSING
    kernel_size: int = MISSING
    dense_units: int = MISSING
    dropout: float = MISSING
    activation: str = MISSING
    # none | batch | layer after each conv.
    normalization: str = MISSING


# ---------------------------------------------------------------- optimizer


@dataclass
class ScheduleConfig:
    # constant | cosine | exponential; any of them may start with a linear warmup.
    name: str = MISSING
    warmup_steps: int = MISSING
    # cosine: the final lr as a fraction of optimizer.lr.
    alpha: float = 0.0
    # exponential: lr * decay_rate ** (step / decay_steps).
    decay_rate: float = 0.96
    decay_steps: int = 1000


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Optional global-norm gradient clipping.
    clipnorm: float | None = None


@dataclass
class SGDConfig(OptimizerConfig):
    pass


@dataclass
class MomentumConfig(OptimizerConfig):
    momentum: float = MISSING
    nesterov: bool = MISSING


@dataclass
class AdamConfig(OptimizerConfig):
    beta_1: float = MISSING
    beta_2: float = MISSING
    epsilon: float = MISSING


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = MISSING


@dataclass
class RMSpropConfig(OptimizerConfig):
    rho: float = MISSING
    momentum: float = MISSING
    epsilon: float = MISSING


@dataclass
class AdagradConfig(OptimizerConfig):
    initial_accumulator_value: float = MISSING
    epsilon: float = MISSING


# ---------------------------------------------------------------- data


@dataclass
class AugmentConfig:
    """Random transforms of each training batch, drawn from (seed, step): see data/augment.py."""

    enabled: bool = False
    # Shift each image by up to this many pixels in each direction.
    translate: float = 2.0
    # Rotate by up to this many degrees either way.
    rotate: float = 10.0
    # Scale by up to this fraction either way (0.1: 90% to 110%).
    zoom: float = 0.1


@dataclass
class DataConfig:
    # mnist | fashion_mnist | fake
    name: str = MISSING
    # A folder of your own that holds the files: then only that folder is read.
    dir: str | None = None
    # The first validation_size images of the official training file, as the tutorials did.
    validation_size: int = MISSING
    # Cap on the number of training examples (after the validation split); null = all.
    train_limit: int | None = None
    # false forbids any network access.
    download: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class FakeDataConfig(DataConfig):
    # Size of the synthetic "official training file" (before the validation split) and test file.
    train_size: int = MISSING
    test_size: int = MISSING


# ---------------------------------------------------------------- trainer


@dataclass
class TrainerConfig:
    batch_size: int = MISSING
    steps: int = MISSING
    eval_every: int = MISSING
    checkpoint_every: int = MISSING
    keep_checkpoints: int = MISSING
    eval_batch_size: int = MISSING
    deterministic: bool = MISSING
    mixed_precision: bool = MISSING
    jit_compile: bool = MISSING
    steps_per_execution: int = MISSING
    tensorboard: bool = MISSING
    intra_op_threads: int = MISSING
    inter_op_threads: int = MISSING


# ---------------------------------------------------------------- root


@dataclass
class Config:
    model: Any = MISSING
    optimizer: Any = MISSING
    data: Any = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = MISSING
    # What a run returns to Hydra's sweeper, e.g. "validation.precision"; null: all metrics.
    optimized_metric: str | None = None


# The schema of each option that mnist-lab ships; a YAML file of conf/ names it in its defaults
# list (``- /schema_model_cnn@_here_``). Your own option (conf/model/cnn_wide.yaml in your
# --config-dir) names one of these too.
SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"softmax": SoftmaxConfig, "mlp": MLPConfig, "cnn": CNNConfig},
    "optimizer": {
        "sgd": SGDConfig,
        "momentum": MomentumConfig,
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "rmsprop": RMSpropConfig,
        "adagrad": AdagradConfig,
    },
    "data": {"mnist": DataConfig, "fashion_mnist": DataConfig, "fake": FakeDataConfig},
    "trainer": {"default": TrainerConfig},
}
# The architectures, optimizers and data sets the code knows: ``<group>.name`` is one of them.
NAMES = {
    "model": ("softmax", "mlp", "cnn"),
    "optimizer": ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"),
    "data": ("mnist", "fashion_mnist", "fake"),
}


def schema_name(group: str, option: str) -> str:
    """The ConfigStore name of an option's schema: a root config, so ``--help`` lists no
    schema group beside the real ones."""
    return f"schema_{group}_{option}"


def register_configs() -> None:
    """Register the root schema, every option's schema and the resolvers with Hydra."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in SCHEMAS.items():
        for option, node in options.items():
            cs.store(name=schema_name(group, option), node=node)
    OmegaConf.register_new_resolver(
        "auto_steps_per_execution", auto_steps_per_execution, replace=True
    )


# ---------------------------------------------------------------- steps per execution

# Steps per compiled call chosen when the config leaves it to us: callbacks then run once a
# call, which is what makes small models fast (benchmarks/README.md). Bounded so that Ctrl-C,
# the progress bar and the divergence check still answer within a fraction of a second.
AUTO_STEPS_PER_EXECUTION_MAX = {"softmax": 100, "mlp": 100, "cnn": 20}


def auto_steps_per_execution(model: str, steps: int, eval_every: int, checkpoint_every: int) -> int:
    """The largest divisor of the evaluation and checkpoint cadence and of the step count,
    within the model's bound: every evaluation and checkpoint then falls where it would with
    one step per call, so the results are the same."""
    try:
        cadence = math.gcd(int(steps), int(eval_every), int(checkpoint_every))
    except (TypeError, ValueError):
        return 1  # a bad value: validate() names it
    bound = AUTO_STEPS_PER_EXECUTION_MAX.get(str(model), 1)
    return max((d for d in range(1, min(cadence, bound) + 1) if cadence % d == 0), default=1)


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
MNIST_TRAIN_FILE_SIZE = 60000
# Upper bounds: beyond them TensorFlow overflows or the machine runs out of memory long
# before anything useful happens, so they are refused before TensorFlow starts.
MAX_STEPS = 10**9
MAX_BATCH = 2**20
MAX_UNITS = 2**16
MAX_THREADS = 1024
MAX_FAKE_EXAMPLES = 200_000
MAX_LR = 1e6


def _fail(key: str, value: Any, expected: str) -> None:
    raise UserError(f"{key}={value!r} is not valid: expected {expected}")


def _int(key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        _fail(key, value, f"an integer in [{low}, {high}]")


def _num(key: str, value: float, low: float, high: float, *, open_low: bool = False) -> None:
    ok = (low < value if open_low else low <= value) and value <= high
    if not ok:
        _fail(key, value, f"a number in {'(' if open_low else '['}{low:g}, {high:g}]")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, value, f"one of {', '.join(allowed)}")


def validate(cfg: DictConfig) -> None:
    """Check every value Hydra's types cannot judge; raise UserError naming the key."""
    _check_known_keys(cfg)
    for group in ("model", "optimizer", "data", "trainer"):
        _check_finite(cfg[group], group)
    _check_trainer(cfg.trainer)
    _check_optimizer(cfg.optimizer)
    _check_model(cfg.model)
    _check_data(cfg.data)
    _int("seed", cfg.seed, 0, 2**32 - 1)
    if cfg.optimized_metric is not None:
        split, _, name = cfg.optimized_metric.partition(".")
        if split not in ("train", "validation") or name not in ("precision", "loss"):
            _fail(
                "optimized_metric",
                cfg.optimized_metric,
                "null or <train|validation>.<precision|loss> (the test split is never for "
                "selection)",
            )


def _check_trainer(t: DictConfig) -> None:
    _int("trainer.batch_size", t.batch_size, 1, MAX_BATCH)
    _int("trainer.steps", t.steps, 1, MAX_STEPS)
    _int("trainer.eval_every", t.eval_every, 1, MAX_STEPS)
    _int("trainer.checkpoint_every", t.checkpoint_every, 1, MAX_STEPS)
    _int("trainer.keep_checkpoints", t.keep_checkpoints, 1, 1000)
    _int("trainer.eval_batch_size", t.eval_batch_size, 1, MAX_BATCH)
    _int("trainer.steps_per_execution", t.steps_per_execution, 1, MAX_STEPS)
    if t.steps % t.steps_per_execution:
        _fail(
            "trainer.steps_per_execution",
            t.steps_per_execution,
            f"a divisor of trainer.steps ({t.steps})",
        )
    _int("trainer.intra_op_threads", t.intra_op_threads, 0, MAX_THREADS)
    _int("trainer.inter_op_threads", t.inter_op_threads, 0, MAX_THREADS)


def _check_optimizer(o: DictConfig) -> None:
    _one_of("optimizer.name", o.name, NAMES["optimizer"])
    _num("optimizer.lr", o.lr, 0, MAX_LR, open_low=True)
    if o.clipnorm is not None:
        _num("optimizer.clipnorm", o.clipnorm, 0, 1e9, open_low=True)
    s = o.schedule
    _one_of("optimizer.schedule.name", s.name, SCHEDULES)
    _int("optimizer.schedule.warmup_steps", s.warmup_steps, 0, MAX_STEPS)
    _num("optimizer.schedule.alpha", s.alpha, 0, 1)
    _num("optimizer.schedule.decay_rate", s.decay_rate, 0, 1, open_low=True)
    _int("optimizer.schedule.decay_steps", s.decay_steps, 1, MAX_STEPS)
    for key in ("momentum", "rho", "beta_1", "beta_2"):
        if key in o and not 0 <= o[key] < 1:
            _fail(f"optimizer.{key}", o[key], "a number in [0, 1)")
    for key, high in (("epsilon", 1.0), ("weight_decay", 1.0), ("initial_accumulator_value", 1e6)):
        if key in o:
            _num(f"optimizer.{key}", o[key], 0, high)


def _check_model(m: DictConfig) -> None:
    _one_of("model.name", m.name, NAMES["model"])
    expected = architecture_of(m)
    if expected in NAMES["model"] and m.name != expected:
        _fail("model.name", m.name, f"{expected!r}, the architecture of this option's schema")
    _one_of("model.kernel_initializer", m.kernel_initializer, INITIALIZERS)
    if "hidden_units" in m:
        units = list(m.hidden_units)
        if not 1 <= len(units) <= 16 or not all(1 <= h <= MAX_UNITS for h in units):
            _fail("model.hidden_units", units, f"a list of 1 to 16 integers in [1, {MAX_UNITS}]")
    if "filters" in m:
        filters = list(m.filters)
        if not 1 <= len(filters) <= MAX_CONV_LAYERS or not all(1 <= f <= 4096 for f in filters):
            _fail(
                "model.filters",
                filters,
                f"a list of 1 to {MAX_CONV_LAYERS} integers in [1, 4096]",
            )
        _int("model.kernel_size", m.kernel_size, 1, 28)
        _int("model.dense_units", m.dense_units, 0, MAX_UNITS)
        _one_of("model.normalization", m.normalization, NORMALIZATIONS)
    if "dropout" in m and not 0 <= m.dropout < 1:
        _fail("model.dropout", m.dropout, "a number in [0, 1)")
    if "activation" in m:
        _one_of("model.activation", m.activation, MODEL_ACTIVATIONS)


def _check_data(d: DictConfig) -> None:
    _one_of("data.name", d.name, NAMES["data"])
    _int("data.validation_size", d.validation_size, 0, MNIST_TRAIN_FILE_SIZE - 1)
    if d.train_limit is not None:
        _int("data.train_limit", d.train_limit, 1, MNIST_TRAIN_FILE_SIZE)
    if d.dir is not None and not str(d.dir).strip():
        _fail("data.dir", d.dir, "null or the path of a folder")
    if d.name == "fake":
        if d.dir is not None:
            _fail("data.dir", d.dir, "null: the synthetic set is generated, not read from files")
        _int("data.train_size", d.train_size, 2, MAX_FAKE_EXAMPLES)
        _int("data.test_size", d.test_size, 1, MAX_FAKE_EXAMPLES)
        if d.validation_size >= d.train_size:
            _fail(
                "data.validation_size",
                d.validation_size,
                f"less than data.train_size ({d.train_size})",
            )
    a = d.augment
    _num("data.augment.translate", a.translate, 0, 14)
    _num("data.augment.rotate", a.rotate, 0, 180)
    _num("data.augment.zoom", a.zoom, 0, 0.9)


def architecture_of(model: DictConfig) -> str | None:
    """The architecture a model node's schema describes ("cnn" for CNNConfig), if known."""
    schema = OmegaConf.get_type(model)
    return next((name for name, cls in SCHEMAS["model"].items() if cls is schema), None)


def _check_known_keys(cfg: DictConfig) -> None:
    """Refuse keys the schemas do not know: ``+trainer.stepz=5`` would otherwise be ignored."""
    # "hydra" is there when a Hydra callback checks the config before the job starts.
    allowed_top = set(OmegaConf.structured(Config).keys()) | {"hydra"}
    for key in cfg.keys():
        if key not in allowed_top:
            _fail(str(key), cfg[key], f"no such key: the top-level keys are {sorted(allowed_top)}")
    for group in ("model", "optimizer", "data", "trainer", "seed", "optimized_metric"):
        _check_node_keys(cfg[group], group)


def _check_node_keys(node: Any, prefix: str) -> None:
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if schema is not None and schema is not dict:
        known = {str(k) for k in OmegaConf.structured(schema).keys()}
        for key in map(str, node.keys()):
            if key not in known:
                _fail(
                    f"{prefix}.{key}",
                    OmegaConf.select(node, key),
                    f"no such key in {prefix}: it has {', '.join(sorted(known))}",
                )
    for key in map(str, node.keys()):
        _check_node_keys(node[key], f"{prefix}.{key}")


def _check_finite(node: Any, prefix: str = "") -> None:
    """inf and nan are never a valid setting: name the key that holds one."""
    if isinstance(node, DictConfig):
        for key in map(str, node.keys()):
            _check_finite(node[key], f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, ListConfig):
        for item in node:
            _check_finite(item, prefix)
    elif isinstance(node, float) and not math.isfinite(node):
        _fail(prefix, node, "a finite number")
