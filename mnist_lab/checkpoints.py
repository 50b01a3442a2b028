"""Checkpoints, resume, Ctrl-C/SIGTERM handling and the exported model.

Layout of ``<run>/checkpoints/``::

    checkpoint                  TensorFlow's state file: the valid checkpoints, newest last
    ckpt-<step>.index           one checkpoint per saved step (the number is the global step)
    ckpt-<step>.data-00000-of-00001
    config.yaml                 the run's config, written before its checkpoints
    best/                       the best checkpoint by validation precision (its own state file)

A checkpoint holds the model's weights, the optimizer's state (its slots and ``iterations``, so
the learning-rate schedule continues), the state of every dropout seed generator (so the masks
after a resume are the ones an uninterrupted run draws), the global step and the seed. The
data order is a pure function of (seed, step) (see ``mnist_lab.data.pipeline``): those two are
the whole data-order state.

Atomicity is TensorFlow's (checkpoint_management.py, functional_saver.py, tensor_bundle.cc):
``CheckpointManager.save`` writes the shards under ``ckpt-N_temp/``, merges them into
``ckpt-N.index`` / ``.data-*``, and only then, in a write callback, rewrites the ``checkpoint``
state file with ``file_io.atomic_write_string_to_file`` (a temp file renamed over the old one).
Readers go through that state file, so a checkpoint exists for them only once it is complete:
a crash, a kill or a full disk mid-write leaves the state naming the previous checkpoints, and
old ones are deleted only after the new state is recorded. Every tensor in the data file has a
crc32c checked on read, so a checkpoint damaged later is detected and skipped. (Nothing is
fsynced: this covers crashes of the process, not of the machine.)

Not checkpointed: the running means of the training loss/precision of the period in progress
(they restart at the resume step; validation and final metrics are exact).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lab.backend import keras, tf
from mnist_lab.callbacks import EvalRecord
from mnist_lab.config import GROUP_OPTIONS, Config
from mnist_lab.errors import UserError

log = logging.getLogger(__name__)

PREFIX = "ckpt"
CONFIG_FILE = "config.yaml"
BEST_DIR = "best"
MODEL_FILE = "model.keras"
STATE_FILE = "checkpoint"
# What the weights mean and which data (in which order) they saw: a resume must not change it.
# Mixed precision wraps the optimizer (loss scale): its state would not fit either.
# The batch size, with the step, fixes which examples come next.
RESUME_KEYS = (
    "model",
    "optimizer",
    "data",
    "seed",
    "trainer.mixed_precision",
    "trainer.batch_size",
)
# Where the data is found, not what it is: these may change between two starts.
RESUME_IGNORED = ("data.dir", "data.download")
# What reading a damaged checkpoint raises varies with the damage (DataLossError, IndexError
# from a short read, AssertionError from an unmatched object ...): any of it means "unreadable".
UNREADABLE = (Exception,)


class Checkpoints:
    """Saves and restores one run's checkpoints; see the module docstring for what they hold."""

    def __init__(self, directory: Path, model: keras.Model, cfg: DictConfig) -> None:
        self.directory = Path(directory)
        self.model = model
        self.cfg = cfg
        self.seconds = 0.0  # time spent saving, kept out of the training throughput
        self.current_step = 0
        self._saved_step: int | None = None
        self._best_precision = -1.0
        self._signal: int | None = None
        _make_dir(self.directory / BEST_DIR)

        # Keras creates optimizer slots lazily; create them now so a restore fills them at once
        # instead of deferring (and so the checkpoint always has the same shape).
        model.optimizer.build(model.trainable_variables)
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._precision = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        state = tracked_state(model, self._step)
        seed = tf.Variable(cfg.seed, dtype=tf.int64, trainable=False)
        self._manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**state, optimizer=model.optimizer, seed=seed),
            self.directory,
            max_to_keep=cfg.trainer.keep_checkpoints,
            checkpoint_name=PREFIX,
        )
        # The model tracks its optimizer, so the best checkpoint holds the slots too; only the
        # step and its precision differ.
        self._best = tf.train.CheckpointManager(
            tf.train.Checkpoint(**state, precision=self._precision),
            self.directory / BEST_DIR,
            max_to_keep=1,
            checkpoint_name=PREFIX,
        )

    # ------------------------------------------------------------ restore

    def restore_latest(self) -> int:
        """Restore the newest readable checkpoint and return its step (0 when there is none)."""
        candidates = list(reversed(self._manager.checkpoints))
        if not candidates:
            return 0
        check_resumable(self.directory / CONFIG_FILE, self.cfg)
        for path in candidates:
            try:
                restore(self._manager.checkpoint, path, partial=False)
            except UNREADABLE as ex:
                log.warning("checkpoint %s is unreadable, using the one before: %s", path, _why(ex))
                continue
            return self._resumed_from(path)
        raise UserError(
            f"no readable checkpoint in {self.directory} (all of {len(candidates)} are damaged); "
            "use another hydra.run.dir to start over"
        )

    def _resumed_from(self, path: str) -> int:
        step = int(self._step.numpy())
        if step > self.cfg.trainer.steps:
            raise UserError(
                f"trainer.steps={self.cfg.trainer.steps} is not valid: the run was already "
                f"checkpointed at step {step}; expected trainer.steps >= {step}"
            )
        spe = self.cfg.trainer.steps_per_execution
        if (self.cfg.trainer.steps - step) % spe:
            raise UserError(
                f"trainer.steps_per_execution={spe} is not valid for resuming at step {step}: "
                f"expected a divisor of the {self.cfg.trainer.steps - step} steps left"
            )
        self._saved_step = self.current_step = step
        self._best_precision = self._recorded_best()
        log.info("resuming from %s at step %d", path, step)
        return step

    def _recorded_best(self) -> float:
        path = self._best.latest_checkpoint
        if path is None:
            return -1.0
        try:
            return float(tf.train.load_variable(path, "precision/.ATTRIBUTES/VARIABLE_VALUE"))
        except UNREADABLE as ex:
            log.warning("best checkpoint %s is unreadable, it will be replaced: %s", path, _why(ex))
            return -1.0

    # ------------------------------------------------------------ save

    def save(self, step: int) -> None:
        """Checkpoint the current state as ``step`` (once per step); UserError if it fails."""
        if step == self._saved_step:
            return
        started = time.perf_counter()
        if self._saved_step is None or not (self.directory / CONFIG_FILE).exists():
            write_config(self.directory / CONFIG_FILE, self.cfg)
        self._step.assign(step)
        _write(self._manager, step)
        self._saved_step = step
        self.seconds += time.perf_counter() - started

    def on_evaluation(self, record: EvalRecord) -> None:
        """Keep the best checkpoint by validation precision (strictly better replaces it)."""
        # Not added to self.seconds: the evaluation callback already times its listeners.
        precision = record.validation.precision
        if precision is None or precision <= self._best_precision:
            return
        self._step.assign(record.step)
        self._precision.assign(precision)
        _write(self._best, record.step, quiet=True)
        self._best_precision = precision

    def callback(self, start_step: int) -> keras.callbacks.Callback:
        return _PeriodicSave(self, start_step)

    # ------------------------------------------------------------ interrupts

    @contextmanager
    def saved_on_interrupt(self) -> Iterator[None]:
        """On SIGINT/SIGTERM: stop after the current step, save, print how to resume, exit.

        The exit status is 128 + the signal (130 for Ctrl-C, 143 for SIGTERM), as a shell
        reports it. A second signal exits at once: the atomic state file means an interrupted
        write is never read as a checkpoint.
        """
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._signal is not None:
            self._save_and_exit(self._signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signal is not None:
            log.warning("%s again: exiting now", signal.Signals(signum).name)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)  # no cleanup to wait for: nothing half-written is ever read
        self._signal = signum
        log.warning(
            "%s: stopping after the current step to save a checkpoint (again to quit at once)",
            signal.Signals(signum).name,
        )

    def _save_and_exit(self, signum: int) -> None:
        self.save(self.current_step)
        log.warning("stopped at step %d, checkpoint saved in %s", self.current_step, self.directory)
        log.warning("to resume: %s", resume_command(self.directory.parent))
        raise SystemExit(128 + signum)

    @property
    def stop_requested(self) -> bool:
        return self._signal is not None

    # ------------------------------------------------------------ export

    def export(self, run_dir: Path) -> None:
        """Write ``<run>/model.keras``: the model alone, loadable by plain Keras."""
        export_model(self.model, Path(run_dir) / MODEL_FILE)


class _PeriodicSave(keras.callbacks.Callback):
    """Saves every ``trainer.checkpoint_every`` steps and at the last step; stops on a signal."""

    def __init__(self, checkpoints: Checkpoints, start_step: int) -> None:
        super().__init__()
        self.checkpoints = checkpoints
        self.start_step = start_step
        self.every = checkpoints.cfg.trainer.checkpoint_every
        self.total_steps = checkpoints.cfg.trainer.steps

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self.start_step + batch + 1  # with steps_per_execution, batch is the last one
        self.checkpoints.current_step = step
        if self.checkpoints.stop_requested:
            self.model.stop_training = True  # saved by saved_on_interrupt, once fit returns
            return
        previous = step - self.model.steps_per_execution
        if step // self.every != previous // self.every or step == self.total_steps:
            self.checkpoints.save(step)


# ---------------------------------------------------------------- helpers shared with the CLIs


def tracked_state(model: keras.Model, step: tf.Variable) -> dict[str, Any]:
    """What every checkpoint holds besides the optimizer: the model, its RNG state, the step."""
    # Keras seed generators are not TensorFlow trackables, so tf.train.Checkpoint(model=...)
    # misses their state; Model.variables lists it (it is the part not in Model.weights).
    weights = {id(w) for w in model.weights}
    rng = [v for v in model.variables if id(v) not in weights]
    return {"model": model, "rng": rng, "step": step}


def restore(checkpoint: tf.train.Checkpoint, path: str, partial: bool) -> None:
    """Restore ``path`` into ``checkpoint`` now; raise if any existing object was left out.

    ``partial``: the checkpoint may hold more than ``checkpoint`` tracks (evaluation needs no
    optimizer state).
    """
    status = checkpoint.restore(path)
    if partial:
        status.expect_partial()
        status.assert_existing_objects_matched()
    else:
        status.assert_consumed()


def restore_model(model: keras.Model, path: str) -> int:
    """Load the weights (and RNG state) of checkpoint ``path`` into ``model``; return its step."""
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    try:
        restore(tf.train.Checkpoint(**tracked_state(model, step)), path, partial=True)
    except UNREADABLE as ex:
        raise UserError(f"cannot read checkpoint {path}: {_why(ex)}") from ex
    return int(step.numpy())


def latest_checkpoint(path: Path) -> str:
    """``path`` if it is a checkpoint prefix, else the newest checkpoint of the folder ``path``."""
    if not Path(path).is_dir():
        return str(path)
    latest = tf.train.latest_checkpoint(str(path))
    if latest is None:
        raise UserError(f"no checkpoint in {path}: the run saved none yet")
    return latest


def export_model(model: keras.Model, path: Path) -> None:
    """Save ``model`` without its optimizer (its schedule is ours, not Keras's) atomically."""
    # A new functional model over the same layers: same weights, nothing compiled.
    plain = keras.Model(model.inputs, model.outputs, name=model.name)
    tmp = path.with_name(f".{path.stem}.tmp.keras")  # Keras insists on the .keras suffix
    try:
        plain.save(tmp)
        os.replace(tmp, path)
    except OSError as ex:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {_why(ex)}") from ex
    log.info("model: %s", path)


def write_config(path: Path, cfg: DictConfig) -> None:
    """The run's own copy of its config (Hydra rewrites .hydra/config.yaml at every start)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        os.replace(tmp, path)
    except OSError as ex:
        raise UserError(f"cannot write {path}: {_why(ex)}") from ex


def load_config(path: Path) -> DictConfig:
    """A run's saved config, over the current schema: keys added since then get defaults."""
    if not path.is_file():
        raise UserError(f"{path} is missing: expected the config that mnist-lab saves there")
    try:
        saved = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, yaml.YAMLError) as ex:
        raise UserError(f"cannot read {path}: {ex}") from ex
    assert isinstance(saved, DictConfig)
    try:
        return OmegaConf.merge(_schema_of(saved), saved)  # type: ignore[return-value]
    except OmegaConfBaseException as ex:  # a key since removed: the saved config as it is
        log.warning("%s does not match the current schema (%s)", path, str(ex).splitlines()[0])
        return saved


def _schema_of(saved: DictConfig) -> DictConfig:
    """The structured config of the group options ``saved`` names (model=cnn, data=fake ...)."""
    base = OmegaConf.structured(Config)
    for group, options in GROUP_OPTIONS.items():
        name = OmegaConf.select(saved, f"{group}.name", default="default")
        if name in options:
            base[group] = OmegaConf.structured(options[name])
    return base


def check_resumable(saved_path: Path, cfg: DictConfig) -> None:
    """Refuse (UserError) to resume with a model, optimizer, data or seed the run did not have."""
    if not saved_path.is_file():
        log.warning("%s is missing: cannot check the config matches the checkpoints", saved_path)
        return
    saved = _flatten(OmegaConf.to_container(load_config(saved_path), resolve=True))
    now = _flatten(OmegaConf.to_container(cfg, resolve=True))
    checked: tuple[str, ...] = RESUME_KEYS
    if "cosine" in (saved.get("optimizer.schedule.name"), now.get("optimizer.schedule.name")):
        checked += ("trainer.steps",)  # the cosine decays over the run's length
    keys = sorted(
        k
        for k in saved.keys() | now.keys()
        if any(k == p or k.startswith(p + ".") for p in checked)
        and k not in RESUME_IGNORED
        and saved.get(k, "<unset>") != now.get(k, "<unset>")
    )
    # A group switched to another option (model=cnn -> mlp): its name says it all.
    switched = [k.removesuffix(".name") + "." for k in keys if k.endswith(".name")]
    keys = [k for k in keys if k.endswith(".name") or not k.startswith(tuple(switched))]
    if keys:
        changes = ", ".join(f"{k} (was {saved.get(k)!r}, now {now.get(k)!r})" for k in keys)
        raise UserError(
            f"cannot resume the run in {saved_path.parent.parent}: its checkpoints were made "
            f"with a different config: {changes}; use the same values or another hydra.run.dir"
        )


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run: the same overrides, the same run dir."""
    from hydra.core.hydra_config import HydraConfig

    try:
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.")]
    except ValueError:  # not under Hydra (train() called directly)
        overrides = []
    return shlex.join(["mnist-lab", *overrides, f"hydra.run.dir={Path(run_dir).resolve()}"])


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"filters": [4, 8]}} -> {"model.filters": [4, 8]}."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _write(manager: tf.train.CheckpointManager, step: int, quiet: bool = False) -> None:
    try:
        path = manager.save(checkpoint_number=step)
    except (OSError, tf.errors.OpError) as ex:
        raise UserError(
            f"cannot write a checkpoint in {manager.directory}: {_why(ex)} "
            "(the previous checkpoints are intact)"
        ) from ex
    log.log(logging.DEBUG if quiet else logging.INFO, "checkpoint: %s", path)


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise UserError(f"cannot create the checkpoint folder {path}: {_why(ex)}") from ex


def _why(ex: BaseException) -> str:
    """One line: OSError's strerror, or the first line of a TensorFlow message."""
    if isinstance(ex, OSError) and ex.strerror:
        return ex.strerror
    if isinstance(ex, tf.errors.OpError):
        return ex.message.splitlines()[0]
    return (str(ex).strip().splitlines() or [type(ex).__name__])[0]
