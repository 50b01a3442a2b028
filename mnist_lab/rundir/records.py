"""A run folder's records, read and written without TensorFlow, and the run's status from them.

Resume, sweeps, the sweep summary, the search and ``mnist-lab-runs`` all decide what a folder
holds here, so they never disagree:

- **running**: a live process holds the folder's lock;
- **finished**: ``metrics.json`` exists (it is written last, after the model and summaries)
  and is sound (``judge.py``: else the run is interrupted, with what is wrong in ``damaged``);
- **pruned**: ``pruned.json`` (a search trial the pruner stopped); it resumes if run again;
- **failed**: ``error.json`` (a sweep job that raised); a rerun tries again;
- **interrupted**: anything else: a rerun continues from the last checkpoint, or starts.

A finished run's config is the one saved inside its ``metrics.json``: the numbers and the
config that produced them are one file, written at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnist_lab.core.files import replacing
from mnist_lab.rundir import layout, locks
from mnist_lab.rundir.judge import is_int, is_strings, iso_seconds, metrics_damage
from mnist_lab.rundir.judge import metric as metric  # records.metric, as everything reads it

RUNNING, FINISHED, PRUNED, FAILED, INTERRUPTED = (
    "running",
    "finished",
    "pruned",
    "failed",
    "interrupted",
)
STATUSES = (RUNNING, FINISHED, PRUNED, FAILED, INTERRUPTED)
# Keys that say where to find the data, not what it is: a run may move its data folder.
LOCATION_KEYS = ("data.dir", "data.download")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a temp file renamed over the old): readers never see half of it."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def write_predictions(path: Path, probabilities: dict[str, Any], labels: dict[str, Any]) -> None:
    """``predictions.npz`` (each split's ``<split>_probabilities`` and ``<split>_labels``),
    written atomically like the JSON records."""
    import numpy as np  # here: listing runs never needs it

    arrays: dict[str, Any] = {}
    for split, p in probabilities.items():
        arrays[f"{split}_probabilities"] = p
        arrays[f"{split}_labels"] = labels[split]
    with replacing(path) as tmp:
        np.savez(tmp, **arrays)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when absent, damaged or not an object."""
    text = read_text(path)
    try:
        data = json.loads(text) if text is not None else None
    except (ValueError, RecursionError):  # RecursionError: nested thousands of levels deep
        return None
    return data if isinstance(data, dict) and _plain_tree(data) else None


def read_text(path: Path) -> str | None:
    """A record's text; None when it is absent, not UTF-8, or not a regular file (a FIFO or a
    device in its place is never opened, so a reader never blocks on one)."""
    if not Path(path).is_file():
        return None
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


# libyaml's loader where installed: the same results, faster when listing many runs.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    """The YAML in ``path``; None when absent or damaged. mnist-lab writes no YAML anchors: a
    file with aliases is damaged (a few hundred bytes of them can stand for billions of keys)."""
    text = read_text(path)
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER) if text is not None else None
    except (yaml.YAMLError, RecursionError):
        return None
    return data if _plain_tree(data) else None


# How deep a record nests: mnist-lab's own go about five levels down; far deeper is damage
# that would exhaust Python's recursion in whatever walks it next (asdict, json.dumps).
MAX_DEPTH = 64


def _plain_tree(node: Any) -> bool:
    """A record as mnist-lab writes one: no container twice in it (what a YAML alias loads
    as) and at most MAX_DEPTH levels. Each container is looked at once, without recursion."""
    seen: set[int] = set()
    stack = [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if id(item) in seen or depth > MAX_DEPTH:
                return False
            seen.add(id(item))
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"filters": [4, 8]}} -> {"model.filters": [4, 8]}."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


# Keys that mnist-lab gained after runs were made, with the value that does what the runs made
# before them did: such a run's config is its own plus these, and is compared as such.
KEYS_ADDED_LATER: dict[str, Any] = {
    "trainer.early_stopping.patience": None,
    "trainer.early_stopping.monitor": "validation.precision",
    "trainer.early_stopping.min_delta": 0.0,
    "trainer.early_stopping.restore_best": True,
    "trainer.target_precision": None,
    # Outputs only, today's defaults: an older finished run is reused as it is, and one it
    # left unfinished gains its projector when today's code completes it.
    "trainer.embeddings": True,
    "trainer.embeddings_size": 5000,
}


def with_keys_added_later(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every key of KEYS_ADDED_LATER it lacks (an older run's), as it ran."""
    filled = json.loads(json.dumps(config))  # a deep copy of plain data
    for key, value in KEYS_ADDED_LATER.items():
        *parents, last = key.split(".")
        node = filled
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(last, value)
    return filled  # type: ignore[no-any-return]


def differences(
    before: dict[str, Any], after: dict[str, Any], ignore: tuple[str, ...] = LOCATION_KEYS
) -> list[tuple[str, Any, Any]]:
    """(key, before, after) for every dotted key whose value differs, in key order.

    A group switched to another option (model=cnn -> mlp) is named by its ``.name`` alone,
    first, not by every key of both options.
    """
    old, new = {**KEYS_ADDED_LATER, **flatten(before)}, {**KEYS_ADDED_LATER, **flatten(after)}
    missing = object()
    changes = [
        (k, old.get(k, "<unset>"), new.get(k, "<unset>"))
        for k in sorted(old.keys() | new.keys())
        if k not in ignore and old.get(k, missing) != new.get(k, missing)
    ]
    switched = tuple(k.removesuffix("name") for k, _, _ in changes if k.endswith(".name"))
    names = [c for c in changes if c[0].endswith(".name")]
    return names + [c for c in changes if not c[0].startswith(switched)]


def described(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{k} (was {a!r}, now {b!r})" for k, a, b in changes)


@dataclass
class RunInfo:
    """What a run folder tells about its run, from its files alone."""

    dir: Path
    status: str
    config: dict[str, Any] | None = None  # the config of the results (or of the checkpoints)
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    error: str | None = None
    pruned: dict[str, Any] | None = None
    pid: int | None = None  # the process that holds a running run
    started: str | None = None  # ISO time the run (or its last resume) started
    checkpoint_step: int | None = None
    # What is wrong with a metrics.json that is there but not believed (judge.py): then the
    # run is not finished, and nothing shows its figures.
    damaged: str | None = None

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


def read_run(run_dir: Path) -> RunInfo:
    """A run folder's status and records (see the module docstring for the statuses)."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / layout.METRICS)
    damaged = metrics_damage(metrics) if metrics is not None else None
    if metrics is None and (run_dir / layout.METRICS).exists():
        damaged = "not a JSON object as mnist-lab writes one (truncated, not JSON, nested too deep)"
    if damaged is not None:
        metrics = None  # not a result anybody may show
    record = read_json(layout.run_record(run_dir)) or {}
    # A finished run's config is the one in its metrics.json: the YAML is read only without it
    # (an interrupted run, or results of an older mnist-lab that did not record their config).
    has_config = metrics is not None and isinstance(metrics.get("config"), dict)
    saved = None if has_config else read_yaml(layout.saved_config(run_dir))
    info = RunInfo(dir=run_dir, status=INTERRUPTED)
    info.damaged = f"{layout.METRICS} is damaged: {damaged}" if damaged else None
    info.pid = locks.holder(run_dir)
    info.started = _time(record.get("started"))  # a damaged run.json's: not a time
    info.overrides = _string_list(record.get("overrides"))
    info.checkpoint_step = _latest_checkpoint_step(run_dir)
    info.config = saved if isinstance(saved, dict) else None
    if metrics is not None:
        info.metrics = metrics
        if has_config:
            info.config = metrics["config"]
        info.overrides = _string_list(metrics.get("overrides")) or info.overrides
        info.started = metrics.get("started", info.started)
    if not info.overrides:
        # A run killed before it wrote run.json: Hydra's copy is all there is (no results to
        # misattribute, so a file a later command may rewrite is good enough here).
        info.overrides = _string_list(read_yaml(run_dir / layout.HYDRA / "overrides.yaml"))
    pruned = read_json(run_dir / layout.PRUNED)
    if pruned is not None and not is_int(pruned.get("step", 0)):
        pruned = {k: v for k, v in pruned.items() if k != "step"}  # damaged: not a step
    error = read_json(run_dir / layout.ERROR)
    if info.pid is not None and info.pid != os.getpid():
        info.status = RUNNING
    elif metrics is not None:
        info.status = FINISHED
    elif pruned is not None:
        info.status, info.pruned = PRUNED, pruned
    elif error is not None:
        info.status = FAILED
        info.error = f"{error.get('type', 'Error')}: {error.get('error', '')}"
    return info


def _time(value: Any) -> str | None:
    return value if iso_seconds(value) is not None else None


def _string_list(value: Any) -> list[str]:
    # Overrides are strings; a list of anything else is a damaged file, not a command line.
    return list(value) if is_strings(value) else []


def _latest_checkpoint_step(run_dir: Path) -> int | None:
    return max(layout.checkpoint_steps(layout.checkpoints_dir(run_dir)), default=None)
