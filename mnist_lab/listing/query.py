"""``mnist_lab.runs()``: the runs below some folders that pass the filters, sorted, each with
the config values that differ among them (what ``mnist-lab-runs`` lists)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mnist_lab.core.errors import UserError
from mnist_lab.listing.compare import differing_keys, sort_runs
from mnist_lab.listing.filters import Filter, check_keys
from mnist_lab.listing.folders import find
from mnist_lab.listing.read import Run, read
from mnist_lab.rundir import records

DEFAULT_FOLDER = "outputs"


def runs(
    folders: str | Path | Iterable[str | Path] = DEFAULT_FOLDER,
    filters: str | Iterable[str] = (),
    sort: str | None = None,
    limit: int | None = None,
    reverse: bool = False,
) -> list[Run]:
    """Every run below ``folders`` that passes all ``filters``, newest first (or by ``sort``:
    precisions, throughput, step and start time high to low, anything else low to high;
    ``reverse`` flips it), at most ``limit`` of them. Each record's ``differs`` holds the
    config values that differ among the runs returned.

    >>> mnist_lab.runs(filters=["model=cnn", "validation.precision>=0.99"], limit=5)
    """
    parsed = [Filter.parse(f) for f in _as_list(filters)]
    if limit is not None and limit < 0:
        raise UserError(f"the limit must be 0 or more, not {limit}")
    sweeps: dict[Path, list[str] | None] = {}
    found = [
        read(run_dir, sweep, sweeps)
        for run_dir, sweep in find(Path(f) for f in _as_list(folders) or [DEFAULT_FOLDER])
    ]
    check_keys((f.key for f in parsed), found, "in a filter")
    if sort is not None:
        check_keys([sort], found, "to sort by")
    found = [r for r in found if all(f.matches(r) for f in parsed)]
    found = sort_runs(found, sort, reverse)[:limit]
    flat = [records.flatten(r.config) if r.config else {} for r in found]
    keys = differing_keys(flat)
    for run, config in zip(found, flat, strict=True):
        run.differs = {k: config[k] for k in keys if k in config}
    return found


def _as_list(value: str | Path | Iterable[str | Path] | None) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    return list(value)
