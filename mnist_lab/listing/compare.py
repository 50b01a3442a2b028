"""Runs against each other: the sort of a listing, the config keys that differ among runs,
the diff of two runs, the best run and the command that trains it again."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_lab.listing.filters import is_number
from mnist_lab.listing.folders import one_run_folder
from mnist_lab.listing.read import MISSING, Run, lookup, read, timestamp
from mnist_lab.rundir import judge, records, resume

# What `diff` puts side by side, and the columns of --csv after the differing config keys.
METRIC_KEYS = (
    "train.precision",
    "validation.precision",
    "test.precision",
    "train.loss",
    "validation.loss",
    "test.loss",
    "wall_seconds",
    "train_examples_per_second",
    "stop.reason",
    "stop.best_step",
    "stop.target.training_seconds",
    # Where it ran: a time or an accuracy is read beside these (core/machine.py).
    "machine.cpu",
    "machine.intra_op_threads",
    "machine.precision",
    "machine.gpus",
    "machine.mnist_lab",
    "machine.git",
    "machine.tensorflow",
)
# Sorted high to low ("best first", "newest first"); any other key sorts low to high.
_HIGH_FIRST = re.compile(r"(^|\.)precision$|examples_per_second$|^started$|^step$")


def sort_runs(found: list[Run], key: str | None, reverse: bool) -> list[Run]:
    """Newest first, or by ``key`` (high to low for precisions, throughput, step and start time,
    else low to high; ``reverse`` flips it); runs without the key come last, either way."""
    newest = _newest_first(found)
    if key is None:
        return newest[::-1] if reverse else newest
    if key == "started":
        values = {id(r): timestamp(r.started) for r in newest}
    else:
        values = {id(r): lookup(r, key) for r in newest}
    present = [r for r in newest if values[id(r)] not in (MISSING, None)]
    absent = [r for r in newest if values[id(r)] in (MISSING, None)]
    descending = bool(_HIGH_FIRST.search(key)) != reverse
    # Stable: runs that tie stay newest first.
    present.sort(key=lambda r: _sort_key(values[id(r)]), reverse=descending)
    return present + absent


def _sort_key(value: Any) -> tuple[int, Any]:
    if is_number(value):
        return (0, value)
    return (1, str(value))


def _natural(path: str) -> list[Any]:
    # Job 10 after job 9: digits compare as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _newest_first(found: list[Run]) -> list[Run]:
    by_dir = sorted(found, key=lambda r: _natural(r.dir), reverse=True)
    return sorted(by_dir, key=lambda r: timestamp(r.started) or 0.0, reverse=True)


def differing_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """The flat config keys whose values differ among ``configs``, in config order.

    A key only some runs have (the filters of a CNN among MLPs) counts when its value differs
    among those that have it: a switched group already shows as its ``.name``.
    """
    order: dict[str, None] = {}
    values: dict[str, list[Any]] = {}
    for config in configs:
        for key, value in config.items():
            order.setdefault(key)
            values.setdefault(key, []).append(value)
    differ = []
    for key in order:
        seen = values[key]
        if any(v != seen[0] for v in seen[1:]):
            differ.append(key)
    return differ


@dataclass
class Diff:
    """Two runs side by side: the config keys that differ, then the metrics."""

    a: Run
    b: Run
    config: list[tuple[str, Any, Any]]  # (key, a's value, b's value); "<unset>" when absent
    metrics: list[tuple[str, Any, Any, Any]]  # (key, a, b, b - a)


def diff(a: str | Path, b: str | Path) -> Diff:
    """What differs between the runs in folders ``a`` and ``b``."""
    first, second = (read(*one_run_folder(folder)) for folder in (a, b))
    config = records.differences(first.config or {}, second.config or {}, ignore=())
    # records.differences names a switched group by its .name alone; a diff shows every key.
    shown = {key for key, _, _ in config}
    flat_a, flat_b = records.flatten(first.config or {}), records.flatten(second.config or {})
    for key in sorted(flat_a.keys() | flat_b.keys()):
        left, right = flat_a.get(key, "<unset>"), flat_b.get(key, "<unset>")
        if key not in shown and left != right:
            config.append((key, left, right))
    metrics = []
    for key in ("step", *METRIC_KEYS):
        left, right = first.get(key), second.get(key)
        delta = right - left if is_number(left) and is_number(right) else None
        metrics.append((key, left, right, delta))
    return Diff(first, second, config, metrics + per_class_rows(first, second))


def per_class_rows(a: Run, b: Run) -> list[tuple[str, Any, Any, Any]]:
    """``per_class.<split>.<class>.<precision|recall>`` of two runs that both have them (runs
    made before metrics.json had ``per_class`` have none)."""
    rows = []
    for split in ("validation", "test"):
        left, right = (records.metric(run.metrics, f"per_class.{split}") for run in (a, b))
        if not isinstance(left, dict) or not isinstance(right, dict):
            continue
        classes = min(len(left.get("recall") or []), len(right.get("recall") or []))
        for index in range(classes):
            for name in ("precision", "recall"):
                x, y = left[name][index], right[name][index]
                delta = y - x if is_number(x) and is_number(y) else None
                rows.append((f"per_class.{split}.{index}.{name}", x, y, delta))
    return rows


def best(entries: Sequence[Run]) -> Run | None:
    """The finished run with the highest validation precision; the earlier one of a tie."""
    finished = [r for r in entries if r.status == records.FINISHED]
    # A record read from a folder is judged already (rundir/judge.py); one made by hand is too.
    scored = [r for r in finished if judge.is_fraction(r.validation_precision)]
    if not scored:
        return None
    oldest_first = sorted(scored, key=lambda r: (timestamp(r.started) or 0.0, _natural(r.dir)))
    return max(oldest_first, key=lambda r: r.validation_precision or 0.0)


def reproduce_command(run: Run) -> str:
    """The single run that trains ``run`` again: its overrides, in a new run folder (Hydra's
    default, under ``outputs/`` of wherever it is started). A search's trial names its search
    preset among its overrides, which is a sweep: ``hydra.mode=RUN`` makes it one run."""
    search = resume.is_search(run.overrides)
    return shlex.join(["mnist-lab", *run.overrides, *(["hydra.mode=RUN"] if search else [])])
