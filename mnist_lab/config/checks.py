"""The value checks Hydra cannot do: ranges, upper bounds, combinations, keys added with ``+``.

``validate`` runs before TensorFlow is imported (a bad value is reported in about a second)
and raises ``UserError`` with one line naming the key. Types, unknown keys and missing values
are Hydra's and OmegaConf's to refuse, at composition.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_lab.config.schemas import SCHEMAS, Config
from mnist_lab.core.console import one_line
from mnist_lab.core.errors import UserError

# The architectures, optimizers and data sets the code knows: ``<group>.name`` is one of them.
NAMES = {
    "model": ("softmax", "mlp", "cnn"),
    "optimizer": ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"),
    "data": ("mnist", "fashion_mnist", "fake"),
}
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
MONITORS = ("validation.precision", "validation.loss")
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
    _check_values(cfg)
    _check_new_run(cfg)


def _check_values(cfg: DictConfig) -> None:
    """What any run's config must be, the recorded config of a finished run too."""
    _check_known_keys(cfg)
    for group in ("model", "optimizer", "data", "trainer"):
        _check_finite(cfg[group], group)
    _check_trainer(cfg.trainer)
    _check_optimizer(cfg.optimizer)
    _check_model(cfg.model)
    _check_data(cfg.data)
    _check_stopping(cfg.trainer, cfg.data)
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


def _check_new_run(cfg: DictConfig) -> None:
    """Values that only fail together, refused before a new run starts (runs recorded before
    these checks existed are still read, evaluated and listed)."""
    _check_batch_fits(cfg.trainer, cfg.data)
    if cfg.optimized_metric is not None:
        if cfg.optimized_metric.startswith("validation.") and cfg.data.validation_size == 0:
            # A sweep or search would rank by a figure no job can have.
            _fail(
                "optimized_metric",
                cfg.optimized_metric,
                "a train metric, or a validation split: data.validation_size is 0",
            )


def _check_batch_fits(t: DictConfig, d: DictConfig) -> None:
    """A batch larger than the training split, refused before a run folder is written (the
    pipeline checks again once the data is loaded: a user's files, ``data.dir``, may hold
    another number of examples, so only the pipeline judges those)."""
    if d.get("dir") is not None:
        return
    total = d.train_size if d.name == "fake" else MNIST_TRAIN_FILE_SIZE
    train = total - d.validation_size
    if d.train_limit is not None:
        train = min(train, d.train_limit)
    if t.batch_size > train:
        _fail(
            "trainer.batch_size",
            t.batch_size,
            f"at most the {train} examples of the training split",
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
    # At most the whole validation split is shown: a larger size than any split is a mistake.
    _int("trainer.embeddings_size", t.embeddings_size, 1, MNIST_TRAIN_FILE_SIZE - 1)


def _check_stopping(t: DictConfig, d: DictConfig) -> None:
    e = t.early_stopping
    if e.patience is not None:
        _int("trainer.early_stopping.patience", e.patience, 1, MAX_STEPS)
    split, _, metric = e.monitor.partition(".")
    if split in ("train", "test") and metric in ("precision", "loss"):
        _fail(
            "trainer.early_stopping.monitor",
            e.monitor,
            f"a validation metric ({', '.join(MONITORS)}): the {split} split is not for stopping",
        )
    _one_of("trainer.early_stopping.monitor", e.monitor, MONITORS)
    if not e.min_delta >= 0:
        _fail("trainer.early_stopping.min_delta", e.min_delta, "a number >= 0")
    if t.target_precision is not None:
        _num("trainer.target_precision", t.target_precision, 0, 1, open_low=True)
    # Both judge the validation split, after the data checks so that its size is known good.
    for key, value in (
        ("trainer.early_stopping.patience", e.patience),
        ("trainer.target_precision", t.target_precision),
    ):
        if value is not None and d.validation_size == 0:
            _fail(key, value, "null when data.validation_size=0: stopping needs a validation split")


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


def check_recorded(config: Any, source: str) -> DictConfig:
    """A run's recorded config (what eval and predict rebuild the model from), typed by the
    option schemas and checked as the run's own was: a damaged one is one line naming
    ``source``, never a traceback from deep in the model code."""
    try:
        if not isinstance(config, dict):
            raise UserError(f"expected a mapping, found {type(config).__name__}")
        typed: dict[str, Any] = {}
        for group, options in SCHEMAS.items():
            node = config.get(group)
            name = node.get("name") if isinstance(node, dict) else None
            schema = options.get("default" if group == "trainer" else str(name))
            if schema is None:
                raise UserError(f"{group}.name={name!r}: expected one of {', '.join(options)}")
            typed[group] = OmegaConf.structured(schema)
        cfg = OmegaConf.merge(OmegaConf.structured(Config), typed, config)
        assert isinstance(cfg, DictConfig)
        _check_values(cfg)
    except UserError as ex:
        raise UserError(f"{source} holds a damaged config: {ex}") from None
    except Exception as ex:  # OmegaConf's type errors, and whatever a wrong shape raises
        raise UserError(f"{source} holds a damaged config: {one_line(ex)}") from None
    return cfg
