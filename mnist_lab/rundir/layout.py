"""What a run folder holds, by name: every module that reads or writes one uses these.

::

    <run>/                      Hydra's output dir (hydra.run.dir, or <sweep>/<job>)
      .lock                     held by the one process writing the run (locks.py)
      .hydra/                   Hydra's copy of the config and overrides (rewritten at each start)
      mnist-lab.log             everything the run logged
      checkpoints/
        config.yaml             the run's config, written once the run may start
        run.json                overrides, data fingerprint, start time; training figures at the end
        checkpoint, ckpt-N.*    TensorFlow's checkpoints; best/ the best by validation precision
      tensorboard/              the summaries
      model.keras               the trained model, for plain Keras
      predictions.npz           each split's labels and predicted probabilities (for ensembles)
      metrics.json              the results and the config that produced them: written last,
                                so a run is finished exactly when it exists (and is sound)
      error.json                a sweep job that failed
      pruned.json               a search trial stopped early by the pruner
      eval.json                 what mnist-lab-eval wrote

No TensorFlow here: the CLI, the sweep summary and ``mnist-lab-runs`` read folders fast.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "validation", "test")

LOCK = ".lock"
HYDRA = ".hydra"
LOG = "mnist-lab.log"
CHECKPOINTS = "checkpoints"
BEST = "best"
SAVED_CONFIG = "config.yaml"
RUN_RECORD = "run.json"
STATE_FILE = "checkpoint"  # TensorFlow's checkpoint state file
CHECKPOINT_PREFIX = "ckpt"
TENSORBOARD = "tensorboard"
MODEL = "model.keras"
PREDICTIONS = "predictions.npz"
METRICS = "metrics.json"
ERROR = "error.json"
PRUNED = "pruned.json"
EVAL = "eval.json"
# The files a sweep folder holds besides its jobs.
MULTIRUN = "multirun.yaml"  # Hydra's record of the sweep's config and command line
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"

# The files that Hydra or TensorFlow open in place (not written beside and renamed, as ours
# are): a link there would be written through, and a FIFO would block the command.
OPENED_IN_PLACE = (
    LOG,
    f"{HYDRA}/config.yaml",
    f"{HYDRA}/hydra.yaml",
    f"{HYDRA}/overrides.yaml",
    f"{CHECKPOINTS}/{STATE_FILE}",
    f"{CHECKPOINTS}/{BEST}/{STATE_FILE}",
)
SWEEP_OPENED_IN_PLACE = (MULTIRUN,)


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def saved_config(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / SAVED_CONFIG


def run_record(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / RUN_RECORD


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders below ``sweep_dir`` (each holds a ``.hydra/``): numbered ones in numeric
    order (2 before 10), then the others by name."""

    def order(job: Path) -> tuple[int, str]:
        name = str(job)
        return (int(name), "") if name.isdigit() else (1 << 62, name)

    jobs = [marker.parent.relative_to(sweep_dir) for marker in sweep_dir.glob(f"**/{HYDRA}")]
    return [sweep_dir / job for job in sorted(jobs, key=order)]


def checkpoint_steps(folder: Path) -> list[int]:
    """The steps of the checkpoints in ``folder`` (a run's ``checkpoints/``), oldest first: those
    with both their ``ckpt-N.index`` and their data file (a stray index is no checkpoint)."""
    prefix = f"{CHECKPOINT_PREFIX}-"
    indexed, with_data = set(), set()
    for path in Path(folder).glob(f"{prefix}*"):
        step, _, kind = path.name[len(prefix) :].partition(".")
        if not (step.isdigit() and path.is_file()):
            continue
        if kind == "index":
            indexed.add(int(step))
        elif kind.startswith("data-"):
            with_data.add(int(step))
    return sorted(indexed & with_data)


def has_checkpoint(run_dir: Path) -> bool:
    folder = checkpoints_dir(run_dir)
    return (folder / STATE_FILE).is_file() or bool(checkpoint_steps(folder))
