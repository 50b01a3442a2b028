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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lab.core.errors import UserError
from mnist_lab.listing.folders import is_run_folder
from mnist_lab.listing.members import Member, Skipped, check_comparable, find_runs, load_member
from mnist_lab.rundir import layout, records
from mnist_lab.rundir.results import SplitResult

ALL, TOP, GREEDY = "all", "top", "greedy"
# A probability that underflowed to 0 in float32 counts as the smallest normal float32 (a loss
# of 87.3 for that example): the mean cross-entropy stays finite and is otherwise exact.
_FLOOR = float(np.finfo(np.float32).tiny)


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


def check_output(output: Path, named: bool = True) -> None:
    """Refuse to write into a run's folder, or below one: the run's files are its own. ``named``:
    the user chose ``output`` (``--output``), else it is the default beside the first folder."""
    shown = f"--output {output}" if named else str(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"{shown} is not a directory")
    target = output.resolve()
    for folder in (target, *target.parents):
        if is_run_folder(folder):
            where = "is a run folder" if folder == target else f"is inside the run {folder}"
            hint = "choose another folder" if named else "name where to write it with --output DIR"
            raise UserError(f"{shown} {where}: an ensemble is never written in a run; {hint}")
    existing = records.read_json(output / layout.METRICS)
    if (output / layout.METRICS).exists() and (existing is None or "ensemble" not in existing):
        raise UserError(
            f"{shown} holds a metrics.json that no ensemble wrote (or a damaged one): remove "
            "it, or choose another folder"
        )


def write(ensemble: Ensemble, output: Path, skipped: list[Skipped], seconds: float) -> Path:
    """``predictions.npz`` then ``metrics.json`` (last, as a run writes them); its path."""
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as ex:
        raise UserError(f"cannot create {output}: {ex.strerror or ex}") from ex
    # An earlier ensemble's record goes first: until the new one is written whole, the folder
    # holds no metrics.json beside predictions it does not describe (a full disk, a kill).
    try:
        (output / layout.METRICS).unlink(missing_ok=True)
    except OSError as ex:
        raise UserError(f"cannot replace {output / layout.METRICS}: {ex.strerror or ex}") from ex
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
