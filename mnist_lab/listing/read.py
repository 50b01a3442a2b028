"""One run folder as a plain record, a ``Run``: what ``mnist-lab-runs`` lists and
``mnist_lab.runs()`` returns.

Only files are read (no TensorFlow, no Hydra app), and each run's status and records come from
``mnist_lab.rundir.records.read_run``, so this listing, resume and the sweep summary never
disagree; the folder's records are read there, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mnist_lab.rundir import layout, records, resume
from mnist_lab.rundir.judge import iso_seconds
from mnist_lab.sweeps import BASIC_SWEEPER, OUR_SWEEPER

# The record's fields that a filter or a sort may name.
FIELDS = ("status", "started", "duration", "step", "dir", "pid", "error", "sweep")
# What `lookup` answers for a key the run does not have (None may be a value).
MISSING: Any = object()


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
    # What is wrong with its metrics.json when that is damaged (then it is not finished).
    damaged: str | None = None

    @property
    def validation_precision(self) -> float | None:
        return records.metric(self.metrics, "validation.precision")

    @property
    def test_precision(self) -> float | None:
        return records.metric(self.metrics, "test.precision")

    def get(self, key: str, default: Any = None) -> Any:
        """What a filter or ``--sort`` reads for ``key``; ``default`` when the run has none."""
        found = lookup(self, key)
        return default if found is MISSING else found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        return cls(**data)


def lookup(run: Run, key: str) -> Any:
    """What a filter or a sort reads for ``key``: a field, a config key (a group alone means
    its option's name), a key of metrics.json, or an override; ``MISSING`` when none."""
    if key in FIELDS:
        found = getattr(run, key)
        return MISSING if found is None and key != "status" else found
    for nested in (run.config, run.metrics):
        found = _dotted(nested, key)
        if isinstance(found, dict) and "name" in found:
            return found["name"]  # model=cnn
        if found is not MISSING:
            return found
    for override in run.overrides:  # a choice only the command line shows (experiment=...)
        name, _, given = override.lstrip("+~").partition("=")
        if name == key:
            return given
    return MISSING


def _dotted(nested: dict[str, Any] | None, key: str) -> Any:
    # Not records.metric: a key set to null is found here, and a config key shadows a metric.
    node: Any = nested
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


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
        damaged=info.damaged,
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


def timestamp(iso: Any) -> float | None:
    """Seconds since the epoch of an ISO time (a naive one is local time); None if not one."""
    return iso_seconds(iso)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def _duration(run_dir: Path, started: str | None) -> float | None:
    """From the last start to the last file the run wrote (its log, checkpoints, markers)."""
    begin = timestamp(started)
    # Their times only (a stat each): the records themselves were read by records.read_run.
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
    hydra = _node(saved, "hydra")
    # A grid's jobs, and a search's trials, resume together with the sweep's own command.
    if _node(hydra, "sweeper").get("_target_") not in (BASIC_SWEEPER, OUR_SWEEPER):
        return None
    given = _node(hydra, "overrides")
    task, own = given.get("task") or [], given.get("hydra") or []
    if not all(isinstance(o, list) and all(isinstance(v, str) for v in o) for o in (task, own)):
        return None  # damaged: no command line to trust, so each job's own command
    # hydra.mode is what -m says; the folder is added back by the command itself.
    return [*task, *(o for o in own if not o.startswith("hydra.mode="))]


def _node(parent: Any, key: str) -> dict[str, Any]:
    """A mapping inside a YAML file; empty where the file has none (or something else)."""
    node = parent.get(key) if isinstance(parent, dict) else None
    return node if isinstance(node, dict) else {}
