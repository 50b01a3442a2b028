"""Config schemas: dataclasses in Hydra's ConfigStore, one per group option.

The schemas give every key its type; the values live in the YAML files of ``conf/``. Each group
option (``conf/model/cnn.yaml``, ...) extends its schema through its defaults list, so a
typo or a wrong type fails at composition. Where every option of a group shares a default
(the schedule's parameters, ``data.dir``, the augmentation ranges ...), it is written here
once; an option's own values are written in its YAML file only. Ranges and combinations are
checked by ``checks.validate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

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
class EarlyStoppingConfig:
    # Evaluations without an improvement before the run stops; null: never stop early.
    patience: int | None = MISSING
    # validation.precision | validation.loss
    monitor: str = MISSING
    # The smallest change of the monitored metric that counts as an improvement.
    min_delta: float = MISSING
    # Stop with the weights of the best evaluation rather than the last one.
    restore_best: bool = MISSING


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
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # Stop once validation precision reaches this; null: never.
    target_precision: float | None = MISSING
    # The embedding projector at the end of a run, of at most embeddings_size validation images.
    embeddings: bool = MISSING
    embeddings_size: int = MISSING


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
    cadence = math.gcd(steps, eval_every, checkpoint_every)
    bound = AUTO_STEPS_PER_EXECUTION_MAX.get(str(model), 1)
    return max((d for d in range(1, min(cadence, bound) + 1) if cadence % d == 0), default=1)
