"""Every run below some folders, as plain records: what ``mnist-lab-runs`` lists and
``mnist_lab.runs()`` returns, with the filters, the sort, the diff of two runs and the best run.

Only files are read (no TensorFlow, no Hydra app), and each run's status comes from
``mnist_lab.rundir.records``, so this listing, resume and the sweep summary never disagree.

A **run folder** is a folder with ``.hydra/`` or ``checkpoints/``: a single run or a job of a
sweep. Folders are searched below the ones named, without entering a run folder's own
subfolders, hidden folders or symbolic links.

A **filter** is ``KEY OP VALUE`` with OP one of ``= == != < <= > >=``. KEY is a record field
(``status``, ``started``, ``duration``, ``step``, ``dir``, ``pid``), a config key
(``optimizer.lr``; a group alone means its option: ``model=cnn`` is ``model.name=cnn``), a key
of ``metrics.json`` (``validation.precision``, ``wall_seconds``), or else an override given on
the command line (``experiment=softmax_tutorial``). A run without the key matches only ``!=``.
"""

from __future__ import annotations

import math
import operator
import os
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from mnist_lab.core.errors import UserError
from mnist_lab.rundir import layout, records, resume
from mnist_lab.sweeps import BASIC_SWEEPER, OUR_SWEEPER

DEFAULT_FOLDER = "outputs"
FIELDS = ("status", "started", "duration", "step", "dir", "pid", "error", "sweep")
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
)
# Sorted high to low ("best first", "newest first"); any other key sorts low to high.
_HIGH_FIRST = re.compile(r"(^|\.)precision$|examples_per_second$|^started$|^step$")
OPERATORS = ("==", "!=", "<=", ">=", "=", "<", ">")
_FILTER = re.compile(r"^\s*([A-Za-z_+][\w.+\-]*)\s*(==|!=|<=|>=|=|<|>)(.*)$", re.DOTALL)
_MISSING: Any = object()
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass
class Run:
    """One run folder as its files tell it. Plain data: ``to_dict`` is what ``--json`` writes."""

    dir: str  # absolute
    status: str  # finished | interrupted | failed | running | pruned (mnist_lab.rundir.records)
    started: str | None  # ISO 8601 time its last process started
    # Seconds: wall_seconds when finished; else from its last start to the last file it wrote.
    duration: float | None
    step: int | None  # the results' step, the pruned step, or the latest checkpoint's
    overrides: list[str]
    config: dict[str, Any] | None
    metrics: dict[str, Any] | None  # metrics.json without its config and overrides
    error: str | None = None  # a failed run's
    pid: int | None = None  # the process running it
    resume: str | None = None  # the command that continues an interrupted run
    sweep: str | None = None  # the sweep folder of a sweep's job
    # The config keys whose values differ among the runs listed with this one, and its values.
    differs: dict[str, Any] = field(default_factory=dict)

    @property
    def validation_precision(self) -> float | None:
        return _metric(self.metrics, "validation", "precision")

    @property
    def test_precision(self) -> float | None:
        return _metric(self.metrics, "test", "precision")

    def get(self, key: str, default: Any = None) -> Any:
        """What a filter or ``--sort`` reads for ``key``; ``default`` when the run has none."""
        found = lookup(self, key)
        return default if found is _MISSING else found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        return cls(**data)


def _metric(metrics: dict[str, Any] | None, split: str, name: str) -> Any:
    part = (metrics or {}).get(split)
    return part.get(name) if isinstance(part, dict) else None


# ---------------------------------------------------------------- finding and reading runs


def is_run_folder(folder: Path) -> bool:
    return (folder / layout.HYDRA).is_dir() or (folder / layout.CHECKPOINTS).is_dir()


def find(folders: Iterable[Path]) -> Iterator[tuple[Path, Path | None]]:
    """Each run folder below ``folders`` (absolute), with the sweep folder it belongs to."""
    seen: set[Path] = set()
    for folder in folders:
        folder = Path(os.path.abspath(folder))
        if not folder.exists():
            raise UserError(f"no such folder: {folder}")
        if not folder.is_dir():
            raise UserError(f"not a folder: {folder}")
        for run_dir, sweep in _walk(folder, _sweep_of(folder)):
            if run_dir not in seen:  # folders named twice, or one inside another
                seen.add(run_dir)
                yield run_dir, sweep


def _walk(folder: Path, sweep: Path | None) -> Iterator[tuple[Path, Path | None]]:
    if is_run_folder(folder):
        yield folder, sweep
        return
    if (folder / layout.MULTIRUN).is_file():
        sweep = folder
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return  # unreadable: nothing to list there
    for entry in entries:
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), sweep)


def _sweep_of(folder: Path) -> Path | None:
    """The sweep a named folder is a job of (``mnist-lab-runs outputs/multirun/.../3``)."""
    for parent in folder.parents:
        if (parent / layout.MULTIRUN).is_file():
            return parent
    return None


def read(
    run_dir: Path, sweep: Path | None = None, sweeps: dict[Path, list[str] | None] | None = None
) -> Run:
    """The record of one run folder (``sweep``: the sweep folder it is a job of, if any;
    ``sweeps``: the sweeps' command lines read so far, to read each multirun.yaml once)."""
    info = records.read_run(run_dir)
    metrics = None
    if info.metrics is not None:
        metrics = {k: v for k, v in info.metrics.items() if k not in ("config", "overrides")}
    run = Run(
        dir=str(run_dir),
        status=info.status,
        started=info.started,
        duration=None,
        step=None,
        overrides=info.overrides,
        config=info.config,
        metrics=metrics,
        error=info.error,
        pid=info.pid if info.status == records.RUNNING else None,
        sweep=str(sweep) if sweep else None,
    )
    if run.started is None:
        # Killed before it wrote its record: Hydra's folder was made when it started.
        run.started = _iso(_mtime(run_dir / layout.HYDRA) or _mtime(run_dir))
    if metrics is not None:
        run.step = metrics.get("step")
        run.duration = metrics.get("wall_seconds")
    else:
        run.step = (info.pruned or {}).get("step", info.checkpoint_step)
        run.duration = _duration(run_dir, run.started)
    if info.status == records.INTERRUPTED:
        run.resume = _resume_command(run_dir, info.overrides, sweep, sweeps)
    return run


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _duration(run_dir: Path, started: str | None) -> float | None:
    """From the last start to the last file the run wrote (its log, checkpoints, markers)."""
    begin = _timestamp(started)
    written = [
        _mtime(p)
        for p in (
            run_dir / layout.LOG,
            layout.checkpoints_dir(run_dir) / layout.STATE_FILE,
            layout.run_record(run_dir),
            run_dir / layout.PRUNED,
            run_dir / layout.ERROR,
        )
    ]
    last = max((t for t in written if t is not None), default=None)
    if begin is None or last is None:
        return None
    return max(0.0, round(last - begin, 1))


def _resume_command(
    run_dir: Path,
    overrides: list[str],
    sweep: Path | None,
    sweeps: dict[Path, list[str] | None] | None,
) -> str:
    """A grid sweep's job continues with the sweep's command (the sweep skips what finished);
    any other run, a search's trial included, with its own command on its folder."""
    if sweep is not None:
        cache = sweeps if sweeps is not None else {}
        if sweep not in cache:
            cache[sweep] = _sweep_arguments(sweep)
        arguments = cache[sweep]
        if arguments is not None:
            return resume.sweep_resume_command(sweep, arguments)
    return resume.resume_command(run_dir, overrides)


def _sweep_arguments(sweep: Path) -> list[str] | None:
    """The command line of a grid sweep, from its multirun.yaml; None for other sweepers."""
    saved = records.read_yaml(sweep / layout.MULTIRUN)
    hydra = saved.get("hydra") if isinstance(saved, dict) else None
    sweeper = (hydra.get("sweeper") or {}).get("_target_") if isinstance(hydra, dict) else None
    # A grid's jobs, and a search's trials, resume together with the sweep's own command.
    if not isinstance(hydra, dict) or sweeper not in (BASIC_SWEEPER, OUR_SWEEPER):
        return None
    given = hydra.get("overrides") or {}
    task = [str(o) for o in given.get("task") or []]
    # hydra.mode is what -m says; the folder is added back by the command itself.
    own = [str(o) for o in given.get("hydra") or [] if not str(o).startswith("hydra.mode=")]
    return [*task, *own]


# ---------------------------------------------------------------- filters and sorting


def lookup(run: Run, key: str) -> Any:
    """What a filter or a sort reads for ``key``: a field, a config key (a group alone means
    its option's name), a key of metrics.json, or an override; ``_MISSING`` when none."""
    if key in FIELDS:
        found = getattr(run, key)
        return _MISSING if found is None and key != "status" else found
    for nested in (run.config, run.metrics):
        found = _dotted(nested, key)
        if isinstance(found, dict) and "name" in found:
            return found["name"]  # model=cnn
        if found is not _MISSING:
            return found
    for override in run.overrides:  # a choice only the command line shows (experiment=...)
        name, _, given = override.lstrip("+~").partition("=")
        if name == key:
            return given
    return _MISSING


def _dotted(nested: dict[str, Any] | None, key: str) -> Any:
    node: Any = nested
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


@dataclass(frozen=True)
class Filter:
    """``KEY OP VALUE``: parsed once, checked against every run."""

    key: str
    op: str
    text: str  # the value as written

    @classmethod
    def parse(cls, expression: str) -> Filter:
        found = _FILTER.match(expression)
        if not found or not found.group(3).strip():
            raise UserError(
                f"not a filter: {expression!r}; expected KEY OP VALUE with OP one of "
                f"{' '.join(OPERATORS)} (e.g. model=cnn, 'optimizer.lr<0.01', "
                "'validation.precision>=0.99', status=interrupted)"
            )
        key, op, text = found.group(1), found.group(2), found.group(3).strip()
        op = "=" if op == "==" else op
        if key == "status" and op in ("=", "!=") and text not in records.STATUSES:
            raise UserError(
                f"not a status: {text!r} in {expression!r}; expected one of "
                f"{', '.join(records.STATUSES)}"
            )
        if op not in ("=", "!=") and key != "started" and not _is_number(_parse_value(text)):
            raise UserError(f"{op} needs a number in {expression!r}")
        if key == "started" and op not in ("=", "!=") and _timestamp(text) is None:
            raise UserError(
                f"not a time in {expression!r}; expected e.g. started>=2026-11-22 or "
                "started>=2026-11-22T14:30 (local time)"
            )
        return cls(key, op, text)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.text}"

    def matches(self, run: Run) -> bool:
        found = lookup(run, self.key)
        if found is _MISSING:
            return self.op == "!="
        if self.op in ("=", "!="):
            return _equal(found, self.text) == (self.op == "=")
        mine: Any = _timestamp(found) if self.key == "started" else found
        theirs: Any = _timestamp(self.text) if self.key == "started" else _parse_value(self.text)
        if not (_is_number(mine) and _is_number(theirs)):
            return False
        return bool(_ORDER[self.op](mine, theirs))


def looks_like_filter(text: str) -> bool:
    return _FILTER.match(text) is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_value(text: str) -> Any:
    """A filter's value as Hydra would read it: null, true, 3, 0.001, 1e-3, [16,32] or text."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("null", "none"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    if text.startswith("["):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            pass
    return text


def _equal(value: Any, text: str) -> bool:
    return _same(value, _parse_value(text)) or str(value) == text


def _same(value: Any, wanted: Any) -> bool:
    if _is_number(value) and _is_number(wanted):
        return math.isclose(value, wanted, rel_tol=1e-12, abs_tol=0.0) or value == wanted
    if isinstance(value, list) and isinstance(wanted, list):
        return len(value) == len(wanted) and all(map(_same, value, wanted))
    return type(value) is type(wanted) and value == wanted


def _sort_key(value: Any) -> tuple[int, Any]:
    if _is_number(value):
        return (0, value)
    return (1, str(value))


def _natural(path: str) -> list[Any]:
    # Job 10 after job 9: digits compare as numbers.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _newest_first(found: list[Run]) -> list[Run]:
    by_dir = sorted(found, key=lambda r: _natural(r.dir), reverse=True)
    return sorted(by_dir, key=lambda r: _timestamp(r.started) or 0.0, reverse=True)


def _sorted(found: list[Run], key: str | None, reverse: bool) -> list[Run]:
    newest = _newest_first(found)
    if key is None:
        return newest[::-1] if reverse else newest
    if key == "started":
        values = {id(r): _timestamp(r.started) for r in newest}
    else:
        values = {id(r): lookup(r, key) for r in newest}
    present = [r for r in newest if values[id(r)] not in (_MISSING, None)]
    absent = [r for r in newest if values[id(r)] in (_MISSING, None)]
    descending = bool(_HIGH_FIRST.search(key)) != reverse
    # Stable: runs that tie stay newest first. Runs without the key come last, either way.
    present.sort(key=lambda r: _sort_key(values[id(r)]), reverse=descending)
    return present + absent


def _check_keys(keys: Iterable[str], found: list[Run], what: str) -> None:
    """A key no run has is a typo more often than not: say so rather than list nothing."""
    for key in keys:
        if key in FIELDS or not found:
            continue
        if all(lookup(r, key) is _MISSING for r in found):
            raise UserError(
                f"no listed run has the key {key!r} ({what}); keys look like model.name, "
                "optimizer.lr, trainer.steps, validation.precision, wall_seconds, status"
            )


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


# ---------------------------------------------------------------- the public functions


def _as_list(value: str | Path | Iterable[str | Path] | None) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    return list(value)


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
    _check_keys((f.key for f in parsed), found, "in a filter")
    if sort is not None:
        _check_keys([sort], found, "to sort by")
    found = [r for r in found if all(f.matches(r) for f in parsed)]
    found = _sorted(found, sort, reverse)[:limit]
    flat = [records.flatten(r.config) if r.config else {} for r in found]
    keys = differing_keys(flat)
    for run, config in zip(found, flat, strict=True):
        run.differs = {k: config[k] for k in keys if k in config}
    return found


@dataclass
class Diff:
    """Two runs side by side: the config keys that differ, then the metrics."""

    a: Run
    b: Run
    config: list[tuple[str, Any, Any]]  # (key, a's value, b's value); "<unset>" when absent
    metrics: list[tuple[str, Any, Any, Any]]  # (key, a, b, b - a)


def diff(a: str | Path, b: str | Path) -> Diff:
    """What differs between the runs in folders ``a`` and ``b``."""
    first, second = (_one_run(folder) for folder in (a, b))
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
        delta = right - left if _is_number(left) and _is_number(right) else None
        metrics.append((key, left, right, delta))
    return Diff(first, second, config, metrics)


def _one_run(folder: str | Path) -> Run:
    path = Path(os.path.abspath(folder))
    if not path.is_dir():
        raise UserError(f"no such folder: {path}")
    if not is_run_folder(path):
        raise UserError(f"not a run folder (no .hydra/ nor checkpoints/ in it): {path}")
    return read(path, _sweep_of(path))


def best(entries: Sequence[Run]) -> Run | None:
    """The finished run with the highest validation precision; the earlier one of a tie."""
    finished = [r for r in entries if r.status == records.FINISHED]
    scored = [r for r in finished if _is_number(r.validation_precision)]
    if not scored:
        return None
    oldest_first = sorted(scored, key=lambda r: (_timestamp(r.started) or 0.0, _natural(r.dir)))
    return max(oldest_first, key=lambda r: r.validation_precision or 0.0)


def reproduce_command(run: Run) -> str:
    """The single run that trains ``run`` again: its overrides, in a new run folder (Hydra's
    default, under ``outputs/`` of wherever it is started). A search's trial names its search
    preset among its overrides, which is a sweep: ``hydra.mode=RUN`` makes it one run."""
    search = resume.is_search(run.overrides)
    return shlex.join(["mnist-lab", *run.overrides, *(["hydra.mode=RUN"] if search else [])])
