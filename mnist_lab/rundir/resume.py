"""Starting a run in a folder that already holds one: continue it, reuse it, or refuse.

No TensorFlow here: the CLI decides before Hydra writes anything into the folder (a refused
command leaves the folder exactly as it was), and the loop asks again for the Python API.

- A folder with checkpoints continues from the newest one when the model, optimizer, data,
  seed, batch size and precision are the same (and the length, for a cosine schedule, whose
  decay depends on it); anything else is refused with the keys that changed.
- A finished run (``metrics.json``) is reused when its config is the one asked for, keys that
  only say where the data is aside. A single run may go on training for more steps (where its
  schedule allows); anything else, and for a sweep job any difference, is refused: results
  are never relabelled with a config that did not produce them.
- A folder that holds files but no run is refused: a run does not scatter its files among
  yours.
- The data: a run records a fingerprint of its files; resuming on other data is refused.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_lab.core.errors import FolderRefused, UserError
from mnist_lab.rundir import judge, layout, records

# What the weights mean and which data (in which order) they saw: a resume must not change it.
# Mixed precision wraps the optimizer (loss scale): its state would not fit either.
# The batch size, with the step, fixes which examples come next.
# Determinism and XLA change the arithmetic too: a run is trained one way or the other.
RESUME_KEYS = (
    "model",
    "optimizer",
    "data",
    "seed",
    "trainer.mixed_precision",
    "trainer.batch_size",
    "trainer.deterministic",
    "trainer.jit_compile",
)
# With a stopping rule on, the evaluations decide where the run stops: their cadence, the
# rules and the run's length are fixed from its first checkpoint on. Only restore_best may
# change, as it chooses what is reported at the end and nothing computed before.
STOPPING_KEYS = (
    "trainer.early_stopping.patience",
    "trainer.early_stopping.monitor",
    "trainer.early_stopping.min_delta",
    "trainer.target_precision",
    "trainer.eval_every",
    "trainer.steps",
)
NEW, FINISHED, CONTINUE = "new", "finished", "continue"


def as_dict(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The job's config as plain data, interpolations resolved, without Hydra's own node."""
    if isinstance(cfg, dict):
        return cfg
    # Without the hydra node: parts of it cannot be resolved before the job runs.
    job = OmegaConf.masked_copy(cfg, [str(k) for k in cfg.keys() if k != "hydra"])
    container = OmegaConf.to_container(job, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def plan(run_dir: Path, cfg: DictConfig | dict[str, Any], *, exact: bool = False) -> str:
    """What starting ``cfg`` in ``run_dir`` means: NEW, FINISHED (reuse the results) or
    CONTINUE (resume from its checkpoints); FolderRefused when it must be refused.

    ``exact``: a finished run is reused only when its config is the same (sweep jobs); else a
    finished run whose config changed in a resumable way continues.
    """
    config = as_dict(cfg)
    info = records.read_run(run_dir)
    if info.status == records.RUNNING:  # another process: this one's own lock is no obstacle
        raise FolderRefused(
            f"{run_dir} is in use by process {info.pid}: one process writes a run folder; "
            "wait for it to end, or choose another folder"
        )
    if (info.finished or layout.has_checkpoint(run_dir)) and info.config is None:
        raise FolderRefused(
            f"{run_dir} holds a run whose config is not recorded (made by an older mnist-lab?): "
            "nothing shows which config its results or checkpoints belong to; use another folder"
        )
    steps = records.flatten(config).get("trainer.steps")
    if info.checkpoint_step is not None and isinstance(steps, int) and info.checkpoint_step > steps:
        raise FolderRefused(
            f"trainer.steps={steps} is not valid: the run in {run_dir} was already "
            f"checkpointed at step {info.checkpoint_step}; expected trainer.steps >= "
            f"{info.checkpoint_step}, or another hydra.run.dir"
        )
    if info.finished:
        assert info.config is not None
        changes = records.differences(info.config, config)
        if not changes:
            return FINISHED
        longer = (
            steps is not None
            and info.checkpoint_step is not None
            and steps > (info.checkpoint_step)
        )
        if exact or not longer:
            key, was, now = changes[0]
            what = "job" if exact else "run"
            raise FolderRefused(
                f"{run_dir} holds a finished {what} with another config: {key} (was {was!r}, "
                f"now {now!r}); use the same values (a finished run may only train for more "
                "trainer.steps), or another folder"
            )
        check_resumable(run_dir, info.config, config)
        return CONTINUE
    if not layout.has_checkpoint(run_dir):
        return NEW
    assert info.config is not None
    check_resumable(run_dir, info.config, config)
    read_run_record(run_dir)  # refused here, before Hydra rewrites anything in the folder
    return CONTINUE


def check_resumable(run_dir: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse (UserError) to continue a run with a model, optimizer, data or seed it did not
    have, naming every key that changed."""
    checked: tuple[str, ...] = RESUME_KEYS
    flat = [records.flatten(c) for c in (saved, now)]
    if "cosine" in {c.get("optimizer.schedule.name") for c in flat}:
        checked += ("trainer.steps",)  # the cosine decays over the run's length
    if any(stopping_rule_on(c) for c in flat):
        checked += STOPPING_KEYS
    changes = [
        change
        for change in records.differences(saved, now)
        if any(change[0] == p or change[0].startswith(p + ".") for p in checked)
    ]
    if changes:
        raise FolderRefused(
            f"cannot resume the run in {run_dir}: its checkpoints were made with a different "
            f"config: {records.described(changes)}; use the same values or another folder"
        )


def stopping_rule_on(flat_config: dict[str, Any]) -> bool:
    return any(
        flat_config.get(key) is not None
        for key in ("trainer.early_stopping.patience", "trainer.target_precision")
    )


def recorded_config(run_dir: Path) -> DictConfig:
    """The config of a run's results (its metrics.json) or of its checkpoints (their
    config.yaml), checked against the schemas: what eval and predict rebuild the model from."""
    info = records.read_run(run_dir)
    if info.config is None:
        raise UserError(
            f"{run_dir} has no readable config (checkpoints/config.yaml or metrics.json): "
            "expected a run folder written by mnist-lab"
        )
    from mnist_lab.config.checks import check_recorded  # Hydra's schemas: not for listings

    source = layout.METRICS if info.finished else f"{layout.CHECKPOINTS}/{layout.SAVED_CONFIG}"
    return check_recorded(records.with_keys_added_later(info.config), f"{run_dir}/{source}")


def read_run_record(run_dir: Path, action: str = "resume") -> dict[str, Any]:
    """``checkpoints/run.json``, judged (``judge.run_record_damage``): what the run trained on
    and, once trained, its figures, which a rerun carries into metrics.json. FolderRefused
    when it is missing or damaged: nothing else shows which data the checkpoints saw."""
    path = layout.run_record(run_dir)
    record = records.read_json(path)
    damage = "missing" if not path.exists() else judge.run_record_damage(record)
    if record is None or damage:
        raise FolderRefused(
            f"cannot {action} the run in {run_dir}: {path} is "
            + ("missing" if damage == "missing" else f"damaged ({damage or 'not JSON'})")
            + ", so nothing shows which data its checkpoints were trained on, or how; use "
            "another folder"
        )
    return record


def check_same_data(run_dir: Path, fingerprint: str, action: str = "resume") -> None:
    """Refuse to continue (or evaluate) a run on data other than the data it was trained on:
    a finished run's metrics.json says which, else its run.json."""
    info = records.read_run(run_dir)
    recorded = (info.metrics or {}).get("data") if info.finished else None
    if not isinstance(recorded, dict) or recorded.get("fingerprint") is None:
        recorded = read_run_record(run_dir, action)["data"]
    before = str(recorded["fingerprint"])
    if before != fingerprint:
        raise FolderRefused(
            f"cannot {action} the run in {run_dir}: it was trained on other data "
            f"({recorded.get('location')}, {before[:19]}...), and the data named now "
            f"differs ({fingerprint[:19]}...); name the same data"
            + (" or use another folder" if action == "resume" else "")
        )


# What only mnist-lab writes in a run folder: a folder with other files and none of these is
# somebody's own folder, not a run.
_RUN_MARKS = (layout.LOCK, layout.HYDRA, layout.CHECKPOINTS, layout.METRICS, layout.LOG)


def check_is_a_run_folder(run_dir: Path) -> None:
    """Refuse a folder that holds files but no run (checked before the lock file is made)."""
    try:
        names = {entry.name for entry in Path(run_dir).iterdir()}
    except OSError:
        return  # not there yet (or not a folder: the lock names that)
    if names and not names & set(_RUN_MARKS):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise FolderRefused(
            f"{run_dir} holds files that are not an mnist-lab run ({shown}); expected a new or "
            "empty folder, or a run's folder"
        )


def check_own_files(folder: Path, names: Sequence[str] = layout.OPENED_IN_PLACE) -> None:
    """Refuse a link, FIFO or device where a file that is opened in place belongs (checked
    before anything opens it): a write would land outside the folder, a read would block."""
    hydra = Path(folder) / layout.HYDRA  # Hydra writes its three files in it
    if hydra.is_symlink() or (hydra.exists() and not hydra.is_dir()):
        raise FolderRefused(f"{hydra}: a file or a link, not a folder; remove it")
    for name in names:
        path = Path(folder) / name
        if path.is_symlink() or (path.exists() and not (path.is_file() or path.is_dir())):
            kind = "a link" if path.is_symlink() else "a FIFO, socket or device"
            raise FolderRefused(
                f"{path} is {kind}, not a file: a run or sweep folder holds only mnist-lab's "
                "own files; remove it, or choose another folder"
            )


# ---------------------------------------------------------------- commands to paste

# What Hydra's override grammar takes unquoted: anything else goes in single quotes.
_PLAIN = re.compile(r"[A-Za-z0-9_/.+\-%@~]*")


def hydra_value(value: str) -> str:
    """``value`` as Hydra's override grammar reads it back verbatim (spaces, non-ASCII ...)."""
    if _PLAIN.fullmatch(value):
        return value
    # In quotes, a quote is escaped with a backslash, and so is a run of backslashes that
    # comes before a quote (or before the closing one).
    escaped = re.sub(r"(\\*)(')", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    # OmegaConf would resolve ${...} in the folder's name: escape it.
    return "'" + escaped.replace("${", "\\${") + "'"


def command(arguments: Sequence[str], dir_key: str, folder: Path) -> str:
    """A shell command line: ``mnist-lab <arguments> <dir_key>=<folder>``, quoted twice over
    (for Hydra, then for the shell), so that it works when pasted."""
    kept = [a for a in arguments if not a.startswith(f"{dir_key}=")]
    folder_arg = f"{dir_key}={hydra_value(str(Path(folder).absolute()))}"
    return shlex.join(["mnist-lab", *kept, folder_arg])


def tensorboard_command(log_dir: Path) -> str:
    return shlex.join(["tensorboard", "--logdir", str(log_dir)])


def resume_command(run_dir: Path, overrides: Sequence[str]) -> str:
    return command(overrides, "hydra.run.dir", run_dir)


def sweep_resume_command(sweep_dir: Path, arguments: Sequence[str]) -> str:
    args = list(arguments)
    if "-m" not in args and "--multirun" not in args and not is_search(args):
        args.insert(0, "-m")
    return command(args, "hydra.sweep.dir", sweep_dir)


def is_search(arguments: Sequence[str]) -> bool:
    return any(a.startswith("hparams_search=") for a in arguments)
