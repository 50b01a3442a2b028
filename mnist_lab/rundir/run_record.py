"""``checkpoints/run.json``, the run's own record: written first (what the run is: overrides,
data, start), updated when training ends (its figures), read by a rerun that only completes
the run's end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_lab.core.errors import UserError
from mnist_lab.data import Dataset
from mnist_lab.rundir import judge, layout, records, resume


def start(
    run_dir: Path, cfg: DictConfig, overrides: list[str], data: Dataset, started_at: str
) -> None:
    """Write what the run is, before anything else: its config and its record.

    A rerun of a run that had finished with another config (more steps, say) makes its old
    results stale, and a pruned or failed run is trying again: their markers go first.
    """
    for stale in (layout.METRICS, layout.PRUNED, layout.ERROR, layout.PREDICTIONS):
        (run_dir / stale).unlink(missing_ok=True)
    folder = layout.checkpoints_dir(run_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{layout.SAVED_CONFIG}.tmp"
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        tmp.replace(folder / layout.SAVED_CONFIG)
    except OSError as ex:
        raise UserError(f"cannot write in {folder}: {ex.strerror or ex}") from ex
    previous = records.read_json(layout.run_record(run_dir)) or {}
    if judge.run_record_damage(previous):
        previous = {}  # a run that starts over (a resume was checked by resume.plan)
    records.write_json(
        layout.run_record(run_dir),
        {
            "started": started_at,
            "overrides": overrides,
            "data": {"name": data.name, "location": data.location, "fingerprint": data.fingerprint},
            # Kept when the run had finished training: a rerun completes only its end.
            "training": previous.get("training"),
        },
    )


def update(run_dir: Path, **fields: Any) -> None:
    record = records.read_json(layout.run_record(run_dir)) or {}
    records.write_json(layout.run_record(run_dir), {**record, **fields})


def recorded_training(run_dir: Path, step: int) -> dict[str, Any]:
    """The training figures of a run whose training ended at ``step`` in an earlier process
    (judged first: a damaged figure is never carried into metrics.json)."""
    training = resume.read_run_record(run_dir).get("training") or {}
    if training.get("step") == step:
        return {k: v for k, v in training.items() if k != "stop"}
    return {
        "step": step,
        "resumed_from_step": step,
        "train_examples_per_second": None,
        "loop_examples_per_second": None,
    }
