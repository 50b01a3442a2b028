"""A run's checkpoints: saved, kept, restored, and the best one by validation precision.

Layout of ``<run>/checkpoints/`` (see ``mnist_lab.rundir.layout`` for the rest of the run folder)::

    checkpoint                  TensorFlow's state file: the valid checkpoints, newest last
    ckpt-<step>.index           one checkpoint per saved step (the number is the global step)
    ckpt-<step>.data-00000-of-00001
    best/                       the best evaluation's checkpoint (its own state file): by
                                validation precision, or by the early-stopping monitor

A checkpoint holds the model's weights, the optimizer's state (its slots and ``iterations``, so
the learning-rate schedule continues), the state of every dropout seed generator (so the masks
after a resume are the ones an uninterrupted run draws), the global step and the seed. The
data order is a pure function of (seed, step) (see ``mnist_lab.data.pipeline``): those two are
the whole data-order state. With a stopping rule on, it holds the rules' state too (the best
value and step, the evaluations without improvement, the target's figures), so a resumed run
stops where an uninterrupted one does.

Atomicity is TensorFlow's (checkpoint_management.py, functional_saver.py, tensor_bundle.cc):
``CheckpointManager.save`` writes the shards under ``ckpt-N_temp/``, merges them into
``ckpt-N.index`` / ``.data-*``, and only then, in a write callback, rewrites the ``checkpoint``
state file with ``file_io.atomic_write_string_to_file`` (a temp file renamed over the old one).
Readers go through that state file, so a checkpoint exists for them only once it is complete:
a crash, a kill or a full disk mid-write leaves the state naming the previous checkpoints, and
old ones are deleted only after the new state is recorded. Every tensor in the data file has a
crc32c checked on read, so a checkpoint damaged later is detected and skipped. A state file
damaged from outside is rebuilt from the ``ckpt-N`` files. (Nothing is fsynced: this covers
crashes of the process, not of the machine.)

Not checkpointed: the running means of the training loss/precision of the period in progress
(they restart at the resume step; validation and final metrics are exact).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

from mnist_lab.core.backend import keras, tf
from mnist_lab.core.errors import UserError
from mnist_lab.core.files import replacing
from mnist_lab.rundir.layout import BEST, CHECKPOINT_PREFIX, STATE_FILE, checkpoint_steps

log = logging.getLogger(__name__)

# What reading a damaged checkpoint raises varies with the damage (DataLossError, IndexError
# from a short read, AssertionError from an unmatched object ...): any of it means "unreadable".
UNREADABLE = (Exception,)


class CheckpointedState(Protocol):
    """State of the loop's own that checkpoints keep as a vector of numbers (stopping rules)."""

    def as_vector(self) -> list[float]: ...

    def load_vector(self, vector: list[float]) -> None: ...


class Checkpoints:
    """Saves and restores one run's checkpoints; see the module docstring for what they hold."""

    def __init__(
        self,
        directory: Path,
        model: keras.Model,
        seed: int,
        keep: int,
        state: CheckpointedState | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.model = model
        self._saved_step: int | None = None
        self._state = state
        for folder in (self.directory, self.directory / BEST):
            _make_dir(folder)
            remove_leftovers(folder)
            repair_state_file(folder)

        # Keras creates optimizer slots lazily; create them now so a restore fills them at once
        # instead of deferring (and so the checkpoint always has the same shape).
        model.optimizer.build(model.trainable_variables)
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._precision = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        tracked = tracked_state(model, self._step)
        self._seed = seed
        seed_variable = self._seed_variable = tf.Variable(seed, dtype=tf.int64, trainable=False)
        # Only runs that have such state track it: older checkpoints keep their shape.
        extra = {}
        if self._state is not None:
            self._vector = tf.Variable(self._state.as_vector(), dtype=tf.float64, trainable=False)
            extra["stopping"] = self._vector
        self._manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**tracked, optimizer=model.optimizer, seed=seed_variable, **extra),
            self.directory,
            max_to_keep=keep,
            checkpoint_name=CHECKPOINT_PREFIX,
        )
        # The model tracks its optimizer, so the best checkpoint holds the slots too; only the
        # step and its precision differ.
        self._best = tf.train.CheckpointManager(
            tf.train.Checkpoint(**tracked, precision=self._precision),
            self.directory / BEST,
            max_to_keep=1,
            checkpoint_name=CHECKPOINT_PREFIX,
        )

    # ------------------------------------------------------------ restore

    def restore_latest(self) -> int:
        """Restore the newest readable checkpoint and return its step (0 when there is none)."""
        candidates = list(reversed(self._manager.checkpoints))
        for path in candidates:
            try:
                restore(self._manager.checkpoint, path, partial=False)
            except UNREADABLE as ex:
                log.warning("checkpoint %s is unreadable, using the one before: %s", path, _why(ex))
                continue
            if int(self._seed_variable.numpy()) != self._seed:
                # The records said this seed; the weights and the data order say another.
                raise UserError(
                    f"cannot resume from {path}: it was trained with seed "
                    f"{int(self._seed_variable.numpy())}, and the run's records say seed "
                    f"{self._seed} (were they changed?); use another hydra.run.dir"
                )
            step = int(self._step.numpy())
            self._saved_step = step
            if self._state is not None:
                self._state.load_vector([float(x) for x in self._vector.numpy()])
            log.info("resuming from %s at step %d", path, step)
            return step
        if candidates:
            raise UserError(
                f"no readable checkpoint in {self.directory} (all of {len(candidates)} are "
                "damaged); use another hydra.run.dir to start over"
            )
        return 0

    def recorded_best(self) -> float | None:
        """The value the best checkpoint was kept for (None when there is none): what a run
        without checkpointed stopping state compares its next evaluations with."""
        path = self._best.latest_checkpoint
        if path is None:
            return None
        try:
            return float(tf.train.load_variable(path, "precision/.ATTRIBUTES/VARIABLE_VALUE"))
        except UNREADABLE as ex:
            log.warning("best checkpoint %s is unreadable, it will be replaced: %s", path, _why(ex))
            return None

    @property
    def best_path(self) -> str | None:
        return self._best.latest_checkpoint

    # ------------------------------------------------------------ save

    def save(self, step: int) -> None:
        """Checkpoint the current state as ``step`` (once per step); UserError if it fails."""
        if step == self._saved_step:
            return
        self._step.assign(step)
        if self._state is not None:
            self._vector.assign(self._state.as_vector())
        _write(self._manager, step)
        self._saved_step = step

    def keep_best(self, step: int, value: float) -> None:
        """Keep the current weights as the best evaluation's, at ``step``, chosen for ``value``
        (the caller's rule decides what is better; the variable keeps its old name)."""
        self._step.assign(step)
        self._precision.assign(value)
        _write(self._best, step, quiet=True)


# ---------------------------------------------------------------- helpers shared with eval/predict


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


def checkpoint_files(folder: Path) -> list[str]:
    """The checkpoint prefixes in ``folder``, oldest first: each ``ckpt-N`` with its index and
    its data file (``layout.checkpoint_steps``)."""
    return [str(Path(folder) / f"{CHECKPOINT_PREFIX}-{s}") for s in checkpoint_steps(folder)]


def latest_checkpoint(path: Path) -> str:
    """``path`` if it is a checkpoint prefix, else the newest checkpoint of the folder ``path``.

    Read-only: a damaged state file is read around (the files themselves), not rewritten.
    """
    if not Path(path).is_dir():
        return str(path)
    latest = None
    if _plain_file(Path(path) / STATE_FILE):  # a FIFO there would block TensorFlow's read
        try:
            latest = tf.train.latest_checkpoint(str(path))
        except UNREADABLE:
            latest = None
    found = checkpoint_files(path)
    if latest is not None and not _inside(path, latest):
        # A state file may name any path: only this folder's own checkpoints count.
        log.warning("%s: the state file names %s, outside the folder; not used", path, latest)
        latest = found[-1] if found else None
    if latest is None and found:
        log.warning("%s: the state file is damaged; using the newest ckpt file", path)
        latest = found[-1]
    if latest is None:
        raise UserError(f"no checkpoint in {path}: the run saved none yet")
    return latest


def repair_state_file(folder: Path) -> None:
    """Rewrite a damaged or emptied ``checkpoint`` state file from the ckpt files found."""
    found = checkpoint_files(folder)
    if not found:
        return
    state = None
    if _plain_file(folder / STATE_FILE):
        try:
            state = tf.train.get_checkpoint_state(str(folder))
        except UNREADABLE:
            state = None
    if state is not None and state.model_checkpoint_path and state.all_model_checkpoint_paths:
        listed = [state.model_checkpoint_path, *state.all_model_checkpoint_paths]
        # Each one this folder's own (a path elsewhere would resume another run's weights).
        if all(
            _inside(folder, p) and Path(folder, Path(p).name + ".index").is_file() for p in listed
        ):
            return
    log.warning(
        "%s/%s is damaged or empty: rebuilt from %d ckpt files", folder, STATE_FILE, len(found)
    )
    names = [Path(p).name for p in found]
    # The timestamps make CheckpointManager take the files as its own (to keep and rotate).
    times = [Path(p + ".index").stat().st_mtime for p in found]
    lines = [f'model_checkpoint_path: "{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
    lines += [f"all_model_checkpoint_timestamps: {t}" for t in times]
    lines += [f"last_preserved_timestamp: {min(times) - 1}"]
    with replacing(folder / STATE_FILE) as partial:  # atomically, as TensorFlow writes it
        partial.write_text("\n".join(lines) + "\n")


def _inside(folder: Path, checkpoint: str) -> bool:
    """Whether ``checkpoint`` (as TensorFlow reads a state file: joined to ``folder`` when the
    file names it relatively) is a checkpoint of ``folder`` itself."""
    return Path(checkpoint).resolve().parent == Path(folder).resolve()


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def remove_leftovers(folder: Path) -> None:
    """Remove the ``ckpt-N_temp`` folders a kill left mid-save (no reader ever uses them)."""
    for leftover in Path(folder).glob(f"{CHECKPOINT_PREFIX}-*_temp"):
        shutil.rmtree(leftover, ignore_errors=True)
        log.info("removed %s, left by an interrupted save", leftover)


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
