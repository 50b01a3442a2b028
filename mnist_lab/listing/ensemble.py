"""Ensembles of finished runs: choose members by validation, average their probabilities.

Every finished run leaves ``predictions.npz`` (each split's labels and softmax probabilities,
in the split's order), so an ensemble needs no model and no TensorFlow: it averages those
arrays and counts. Members are chosen on the validation split only; the test split is
counted once, for the chosen ensemble, as for a single run.

Members must have been evaluated on the same examples: the same data files (fingerprint) and
the same validation and test labels. Training examples may differ (``data.train_limit``): then
the ensemble has no train figures.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab.core.errors import UserError
from mnist_lab.rundir import layout, records
from mnist_lab.rundir.results import SplitResult

ALL, TOP, GREEDY = "all", "top", "greedy"
# A probability that underflowed to 0 in float32 counts as the smallest normal float32 (a loss
# of 87.3 for that example): the mean cross-entropy stays finite and is otherwise exact.
_FLOOR = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True, eq=False)
class Member:
    """A finished run, with its saved predictions."""

    dir: Path
    overrides: list[str]
    data: dict[str, Any]  # metrics.json's "data": name, location, fingerprint
    # As its metrics.json reports them (what the sweep summary ranks by).
    validation_precision: float | None
    validation_loss: float | None
    probabilities: dict[str, np.ndarray]  # split -> float32 [n, classes]
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


@dataclass(frozen=True, eq=False)
class Ensemble:
    members: list[Member]  # in the order they were chosen
    candidates: int  # the finished runs they were chosen from
    method: str  # all | top | greedy
    results: dict[str, SplitResult]  # the splits it has figures for (train may be missing)
    probabilities: dict[str, np.ndarray]  # split -> the averaged probabilities, float32

    @property
    def chosen_by(self) -> str:
        if self.method == TOP:
            return f"the {len(self.members)} best of {self.candidates} by validation precision"
        if self.method == GREEDY:
            return (
                f"greedy forward selection on validation precision: {len(self.members)} of "
                f"{self.candidates}"
            )
        return f"all {self.candidates} finished runs"


# ------------------------------------------------------------------------------ finding runs


def find_runs(paths: Sequence[Path]) -> tuple[list[records.RunInfo], list[Skipped]]:
    """The finished runs in ``paths`` (sweep folders or run folders), each once, in order;
    and the runs that are not finished."""
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
            if info.finished:
                finished.append(info)
            else:
                skipped.append(Skipped(run_dir, info.status))
    return finished, skipped


def _run_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is a run folder, else the job folders of the sweep it holds."""
    if (path / layout.HYDRA).is_dir() or (path / layout.METRICS).is_file():
        return [path]
    jobs = layout.job_dirs(path)  # in the sweep summary's order
    if not jobs:
        raise UserError(f"no mnist-lab runs in {path}: expected a sweep folder or a run folder")
    return jobs


# ------------------------------------------------------------------- reading the predictions


def load_member(info: records.RunInfo) -> Member:
    """A finished run and its ``predictions.npz``, checked against its ``metrics.json``."""
    path = info.dir / layout.PREDICTIONS
    metrics = info.metrics or {}
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
    for split in layout.SPLITS:
        p, y = arrays.get(f"{split}_probabilities"), arrays.get(f"{split}_labels")
        n = metrics[split]["num_examples"]
        if p is None or y is None:
            raise UserError(f"{path} is damaged: it has no {split}_probabilities or labels")
        if p.ndim != 2 or p.shape[0] != n or y.shape != (n,) or not _usable(p, y):
            raise UserError(
                f"{path} is damaged: {split}_probabilities {p.shape} and {split}_labels "
                f"{y.shape} do not hold the run's {n} {split} examples as probabilities "
                "and class indices"
            )
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
    if p.dtype.kind != "f" or y.dtype.kind not in "iu":
        return False
    if len(y) and not (0 <= y.min() and y.max() < p.shape[1]):
        return False
    return bool(np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all())


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


# ----------------------------------------------------------------------- combining, choosing


def average(members: Sequence[Member], split: str) -> np.ndarray:
    """The members' mean probabilities on ``split``, float64 [n, classes]."""
    total = np.zeros(members[0].probabilities[split].shape, np.float64)
    for member in members:
        total += member.probabilities[split]
    return total / len(members)


def score(probabilities: np.ndarray, labels: np.ndarray) -> SplitResult:
    """Precision@1 as exact counts, and the mean cross-entropy of the probabilities."""
    n = len(labels)
    if n == 0:
        return SplitResult(0, 0, None)
    correct = int((probabilities.argmax(axis=1) == labels).sum())
    chosen = probabilities[np.arange(n), labels]
    loss = float(-np.log(np.maximum(chosen, _FLOOR)).mean())
    return SplitResult(n, correct, loss)


def ranked(members: list[Member]) -> list[Member]:
    """Best validation precision first; ties keep their order (the sweep summary's rank)."""
    return sorted(members, key=lambda m: -(m.validation_precision or 0.0))


def greedy(members: list[Member]) -> list[Member]:
    """Forward selection: add the run that most improves the average's validation precision
    (validation loss breaks ties), stop when none does.

    Each run is taken at most once, so the ensemble stays a plain average of distinct runs.
    A few numpy passes over the validation split a candidate: cheap for any sweep.
    """
    labels = members[0].labels["validation"]
    chosen: list[Member] = []
    total = np.zeros(members[0].probabilities["validation"].shape, np.float64)
    best_key: tuple[float, float] | None = None
    left = ranked(members)
    while left:
        keys = []
        for candidate in left:
            s = score((total + candidate.probabilities["validation"]) / (len(chosen) + 1), labels)
            keys.append((s.precision or 0.0, -(s.loss or 0.0)))
        i = max(range(len(left)), key=lambda j: keys[j])  # the first of equals: the better ranked
        if best_key is not None and keys[i] <= best_key:
            break
        best_key = keys[i]
        total += left[i].probabilities["validation"]
        chosen.append(left.pop(i))
    return chosen


def build(
    paths: Sequence[Path], method: str = ALL, top: int | None = None
) -> tuple[Ensemble, list[Skipped]]:
    """The ensemble of the finished runs in ``paths``, chosen by ``method`` on validation."""
    infos, skipped = find_runs(paths)
    if not infos:
        where = ", ".join(str(p) for p in paths)
        raise UserError(f"no finished runs in {where}: nothing to combine")
    members = [load_member(info) for info in infos]
    same_train = check_comparable(members)
    if method != ALL and len(members[0].labels["validation"]) == 0:
        raise UserError(
            f"--{method} chooses runs by validation precision, but the runs have no validation "
            "split (data.validation_size=0)"
        )
    if method == TOP:
        if top is None or not 1 <= top <= len(members):
            raise UserError(
                f"--top {top} is not valid: expected an integer in [1, {len(members)}] "
                f"(the finished runs found)"
            )
        chosen = ranked(members)[:top]
    elif method == GREEDY:
        chosen = greedy(members)
    else:
        chosen = members
    splits = layout.SPLITS if same_train else ("validation", "test")
    probabilities = {split: average(chosen, split) for split in splits}
    results = {split: score(probabilities[split], chosen[0].labels[split]) for split in splits}
    ensemble = Ensemble(
        members=chosen,
        candidates=len(members),
        method=method,
        results=results,
        probabilities={split: p.astype(np.float32) for split, p in probabilities.items()},
    )
    return ensemble, skipped


# -------------------------------------------------------------------------------- writing


def check_output(output: Path) -> None:
    """Refuse to write into a run's folder: its metrics.json would be overwritten."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is not a directory")
    if (output / layout.HYDRA).is_dir() or layout.checkpoints_dir(output).is_dir():
        raise UserError(f"--output {output} is a run folder: choose another folder")
    existing = records.read_json(output / layout.METRICS)
    if (output / layout.METRICS).exists() and (existing is None or "ensemble" not in existing):
        raise UserError(
            f"--output {output} holds a metrics.json that no ensemble wrote: choose another folder"
        )


def write(ensemble: Ensemble, output: Path, skipped: list[Skipped], seconds: float) -> Path:
    """``predictions.npz`` then ``metrics.json`` (last, as a run writes them); its path."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise UserError(f"cannot create {output}: {ex.strerror or ex}") from ex
    records.write_predictions(
        output / layout.PREDICTIONS, ensemble.probabilities, ensemble.members[0].labels
    )
    first = ensemble.members[0]
    metrics: dict[str, Any] = {
        **{split: None for split in layout.SPLITS},
        **{split: r.as_dict() for split, r in ensemble.results.items()},
        "data": first.data,
        "ensemble": {
            "combined": "mean of the members' predicted probabilities",
            "method": ensemble.method,
            "chosen_by": ensemble.chosen_by,
            "candidates": ensemble.candidates,
            "skipped": [{"dir": str(s.dir), "status": s.status} for s in skipped],
        },
        "members": [m.describe() for m in ensemble.members],
        "wall_seconds": seconds,
    }
    records.write_json(output / layout.METRICS, metrics)
    return output / layout.METRICS
