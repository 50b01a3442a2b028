"""The runs an ensemble may combine: finished runs whose saved predictions are the ones their
own ``metrics.json`` reports, evaluated on the same examples as each other.

A member is believed only when its ``predictions.npz`` agrees with its ``metrics.json``: each
split's probabilities and labels have the run's shape (one row an example, one column a class,
the same classes on every split), they are probabilities, and their argmax counts the
``num_correct`` the run recorded. A file that was replaced, truncated or written by something
else is refused with one line naming it: an ensemble's figures never change silently.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab.core.errors import UserError
from mnist_lab.listing.folders import is_run_folder
from mnist_lab.rundir import layout, records

# How far a row's probabilities may sum from 1: float32 softmax rounding is about 1e-6.
_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class Member:
    """A finished run, with its saved predictions."""

    dir: Path
    overrides: list[str]
    data: dict[str, Any]  # metrics.json's "data": name, location, fingerprint
    # As its metrics.json reports them (what the sweep summary ranks by).
    validation_precision: float | None
    validation_loss: float | None
    probabilities: dict[str, np.ndarray]  # split -> float [n, classes]
    labels: dict[str, np.ndarray]  # split -> int [n]

    def describe(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "overrides": self.overrides,
            "validation_precision": self.validation_precision,
            "validation_loss": self.validation_loss,
        }


@dataclass(frozen=True)
class Skipped:
    dir: Path
    status: str


def find_runs(paths: Sequence[Path]) -> tuple[list[records.RunInfo], list[Skipped]]:
    """The finished runs in ``paths`` (sweep folders or run folders), each once, in order;
    and the runs that are not finished. A damaged ``metrics.json`` is refused: leaving its run
    out would change the ensemble without a word."""
    finished: list[records.RunInfo] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for path in paths:
        if not path.is_dir():
            raise UserError(f"not a directory: {path}")
        for run_dir in _run_dirs(path.resolve()):
            if run_dir in seen:
                continue
            seen.add(run_dir)
            info = records.read_run(run_dir)
            if info.damaged:
                raise UserError(
                    f"{run_dir}/{info.damaged}: an ensemble combines only runs whose records "
                    "can be believed; run it again to complete it, or leave its folder out"
                )
            if info.finished:
                finished.append(info)
            else:
                skipped.append(Skipped(run_dir, info.status))
    return finished, skipped


def _run_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is a run folder, else the job folders of the sweep it holds (an
    ensemble's own folder holds a metrics.json, and is neither)."""
    if is_run_folder(path):
        return [path]
    jobs = layout.job_dirs(path)  # in the sweep summary's order
    if not jobs:
        raise UserError(f"no mnist-lab runs in {path}: expected a sweep folder or a run folder")
    return jobs


def load_member(info: records.RunInfo) -> Member:
    """A finished run and its ``predictions.npz``, checked against its ``metrics.json``."""
    path = info.dir / layout.PREDICTIONS
    metrics = info.metrics or {}  # sound: records.read_run judged it (rundir/judge.py)
    if not path.is_file():
        raise UserError(
            f"{path} is missing: the run finished without saving its predictions "
            "(an older mnist-lab?); delete its metrics.json and run it again to re-evaluate"
        )
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as ex:
        raise UserError(f"cannot read {path}: damaged ({_reason(ex)})") from ex
    probabilities, labels = {}, {}
    classes = None
    for split in layout.SPLITS:
        p, y = arrays.get(f"{split}_probabilities"), arrays.get(f"{split}_labels")
        if p is None or y is None:
            raise UserError(f"{path} is damaged: it has no {split}_probabilities or labels")
        n = metrics[split]["num_examples"]
        classes = p.shape[1] if classes is None and p.ndim == 2 else classes
        if p.ndim != 2 or p.shape != (n, classes) or y.shape != (n,) or not _usable(p, y):
            raise UserError(
                f"{path} is damaged: {split}_probabilities {p.shape} ({p.dtype}) and "
                f"{split}_labels {y.shape} ({y.dtype}) do not hold the run's {n} {split} "
                f"examples as probabilities of {classes} classes and class indices"
            )
        _check_counts(path, split, p, y, metrics[split]["num_correct"])
        probabilities[split], labels[split] = p, y
    return Member(
        dir=info.dir,
        overrides=info.overrides,
        data=metrics.get("data") or {},
        validation_precision=metrics["validation"].get("precision"),
        validation_loss=metrics["validation"].get("loss"),
        probabilities=probabilities,
        labels=labels,
    )


def _usable(p: np.ndarray, y: np.ndarray) -> bool:
    if p.dtype.kind != "f" or y.dtype.kind not in "iu" or p.shape[1] < 2:
        return False
    if len(y) and not (0 <= y.min() and y.max() < p.shape[1]):
        return False
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        return False
    return bool(np.all(np.abs(p.sum(axis=1, dtype=np.float64) - 1) <= _SUM_TOLERANCE))


def _check_counts(path: Path, split: str, p: np.ndarray, y: np.ndarray, recorded: int) -> None:
    """The saved probabilities count the run's own ``num_correct``.

    The run counted the argmax of its float32 logits; their softmax can round two nearly equal
    logits to one probability, so an example whose label ties for the top may count either way.
    """
    chosen = p[np.arange(len(y)), y]
    top = p.max(axis=1) if len(y) else chosen
    ties = (p == top[:, None]).sum(axis=1) if len(y) else np.zeros(0, int)
    surely = int(((chosen == top) & (ties == 1)).sum())
    possibly = int((chosen == top).sum())
    if not surely <= recorded <= possibly:
        counted = f"{surely}" if surely == possibly else f"{surely} to {possibly}"
        raise UserError(
            f"{path} does not hold this run's predictions: its {split} argmax counts "
            f"{counted} correct, its {layout.METRICS} records {recorded}; was it replaced?"
        )


def _reason(ex: BaseException) -> str:
    return " ".join(str(ex).split()) or type(ex).__name__


def check_comparable(members: list[Member]) -> bool:
    """Refuse members evaluated on different examples; True when their train splits agree.

    The data fingerprint says the files are the same; the labels say the splits are cut the
    same way (``data.validation_size``), in the same order.
    """
    first = members[0]
    for other in members[1:]:
        mine, theirs = first.data.get("fingerprint"), other.data.get("fingerprint")
        if mine is None or mine != theirs:
            raise UserError(
                f"{first.dir} and {other.dir} were trained on different data "
                f"({_data_name(first)} and {_data_name(other)}): an ensemble averages "
                "predictions for the same examples"
            )
        for split in ("validation", "test"):
            a, b = first.probabilities[split], other.probabilities[split]
            if a.shape != b.shape or not np.array_equal(first.labels[split], other.labels[split]):
                raise UserError(
                    f"{first.dir} and {other.dir} have different {split} examples "
                    f"({len(first.labels[split])} and {len(other.labels[split])}; is "
                    "data.validation_size the same?): an ensemble averages predictions for the "
                    "same examples"
                )
    return all(
        np.array_equal(first.labels["train"], other.labels["train"]) for other in members[1:]
    )


def _data_name(member: Member) -> str:
    fingerprint = str(member.data.get("fingerprint") or "no fingerprint")
    return f"{member.data.get('name', '?')}, {fingerprint[:19]}"
