"""Whether a run's records can be believed: the one rule for a run's ``metrics.json`` that
resume, the sweep summary, the search, ``mnist-lab-runs``, ``mnist_lab.runs()`` and the
ensemble's members all apply (through ``records.read_run``), so none of them shows or ranks a
record another refuses; and the same rule for ``checkpoints/run.json``, whose training figures
a rerun carries into it.

mnist-lab writes every field below with one type; a file where one has another (a number
where a time belongs, a string where a number belongs), a number that is NaN or infinite
anywhere in it, a precision that is not a number in [0, 1] or disagrees with its split's
counts, is damaged: none of its figures is shown, ranked or chosen. Every mnist-lab recorded a
``step`` and each split's counts: without them a record is damaged. Another field absent (a
run made by an older mnist-lab: before 2026-11-23, ``config`` too) or null is not damage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mnist_lab.rundir import layout


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (JSON's NaN and Infinity are not numbers here, nor are booleans)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def iso_seconds(value: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (a naive one is local time); None if not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def is_fraction(value: Any) -> bool:
    """A number in [0, 1]: what a precision is."""
    return is_number(value) and 0 <= value <= 1


def _count(value: Any) -> bool:
    return is_int(value) and value >= 0


def _seconds(value: Any) -> bool:
    return is_number(value) and value >= 0


def is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# (dotted key, check, what was expected): a value that is present and not null must pass.
_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("step", _count, "a step (an integer >= 0)"),
    ("started", lambda v: iso_seconds(v) is not None, "an ISO 8601 time"),
    ("wall_seconds", _seconds, "seconds (a number >= 0)"),
    ("final_evaluation_seconds", _seconds, "seconds (a number >= 0)"),
    ("train_examples_per_second", _seconds, "a number >= 0"),
    ("loop_examples_per_second", _seconds, "a number >= 0"),
    ("resumed_from_step", _count, "a step (an integer >= 0)"),
    ("overrides", is_strings, "a list of strings"),
    ("config", lambda v: isinstance(v, dict), "an object"),
    ("machine", lambda v: isinstance(v, dict), "an object"),
    ("data", lambda v: isinstance(v, dict), "an object"),
    ("data.name", lambda v: isinstance(v, str), "a string"),
    ("data.fingerprint", lambda v: isinstance(v, str), "a string"),
    ("stop", lambda v: isinstance(v, dict), "an object"),
    ("stop.reason", lambda v: isinstance(v, str), "a string"),
    ("stop.step", _count, "a step (an integer >= 0)"),
    ("stop.best_step", _count, "a step (an integer >= 0)"),
    ("stop.monitor", lambda v: isinstance(v, str), "a string"),
    ("stop.best_value", is_number, "a number"),
    ("stop.target", lambda v: isinstance(v, dict), "an object"),
    ("stop.target.precision", is_fraction, "a number in [0, 1]"),
    ("stop.target.reached", lambda v: isinstance(v, bool), "true or false"),
    ("stop.target.step", _count, "a step (an integer >= 0)"),
    ("stop.target.training_seconds", _seconds, "seconds (a number >= 0)"),
    ("stop.target.wall_seconds", _seconds, "seconds (a number >= 0)"),
    ("stop.target.examples", _count, "an integer >= 0"),
    ("per_class", lambda v: isinstance(v, dict), "an object"),
)


# What every metrics.json mnist-lab wrote has, and what a stop record has with it.
_REQUIRED = ("step",)
_STOP_REQUIRED = ("stop.reason", "stop.step", "stop.best_step")
# checkpoints/run.json: what the run is (written first), and its training figures once trained.
_RECORD_FIELDS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("started", lambda v: iso_seconds(v) is not None, "an ISO 8601 time"),
    ("overrides", is_strings, "a list of strings"),
    ("data", lambda v: isinstance(v, dict), "an object"),
    ("data.name", lambda v: isinstance(v, str), "a string"),
    ("data.location", lambda v: isinstance(v, str), "a string"),
    ("data.fingerprint", lambda v: isinstance(v, str), "a string"),
    ("training", lambda v: isinstance(v, dict), "an object"),
)


def metrics_damage(metrics: Any) -> str | None:
    """What is wrong with a ``metrics.json``'s content, naming the key and what was expected;
    None when it is sound."""
    if not isinstance(metrics, dict):
        return "not a JSON object"
    missing = [key for key in _REQUIRED if metric(metrics, key) is None]
    if metrics.get("stop") is not None:
        missing += [key for key in _STOP_REQUIRED if metric(metrics, key) is None]
    if missing:
        return f"it has no {missing[0]} (every mnist-lab records it)"
    not_finite = _not_finite(metrics)
    if not_finite:
        return not_finite
    for split in layout.SPLITS:
        found = _split_damage(metrics.get(split))
        if found:
            return f"{split}{found}"
    found = _fields_damage(metrics, _FIELDS)
    if found:
        return found
    for split in ("validation", "test"):
        found = _per_class_damage(metric(metrics, f"per_class.{split}"))
        if found:
            return f"per_class.{split}{found}"
    return None


def run_record_damage(record: Any) -> str | None:
    """What is wrong with a ``checkpoints/run.json``'s content; None when it is sound. Its
    training figures are judged as metrics.json's, where a rerun copies them."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if metric(record, "data.fingerprint") is None:
        return "it has no data.fingerprint (every mnist-lab records it)"
    training = record.get("training")
    return (
        _not_finite(record)
        or _fields_damage(record, _RECORD_FIELDS)
        or (None if training is None else _fields_damage(training, _FIELDS, "training."))
    )


def _fields_damage(
    record: dict[str, Any], fields: tuple[tuple[str, Callable[[Any], bool], str], ...], at: str = ""
) -> str | None:
    for key, check, expected in fields:
        value = metric(record, key)
        if value is not None and not check(value):
            return f"{at}{key} is {_shown(value)}, expected {expected}"
    return None


def _not_finite(node: Any, at: str = "") -> str | None:
    """``machine.cores is nan``: the first NaN or infinity anywhere (mnist-lab writes none)."""
    if isinstance(node, float) and not math.isfinite(node):
        return f"{at or 'the record'} is {node}, expected a finite number"
    if isinstance(node, dict):
        items: Any = ((f"{at}.{k}" if at else str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((f"{at}[{i}]", v) for i, v in enumerate(node))
    else:
        return None
    for key, value in items:
        found = _not_finite(value, key)
        if found:
            return found
    return None


def _split_damage(split: Any) -> str | None:
    """``.precision is 'abc', expected ...`` (the split's name goes before it)."""
    if not isinstance(split, dict):
        return f" is {_shown(split)}, expected an object"
    n: Any = split.get("num_examples")
    correct: Any = split.get("num_correct")
    precision, loss = split.get("precision"), split.get("loss")
    if not _count(n):
        return f".num_examples is {_shown(n)}, expected an integer >= 0"
    if not (_count(correct) and correct <= n):
        return f".num_correct is {_shown(correct)}, expected an integer in [0, {n}]"
    if n == 0:
        if precision is not None:
            return f".precision is {_shown(precision)}, expected null (the split is empty)"
    elif not is_fraction(precision):
        return f".precision is {_shown(precision)}, expected a number in [0, 1]"
    elif precision != correct / n:
        return f".precision is {precision!r}, but num_correct / num_examples is {correct / n!r}"
    if loss is not None and not _seconds(loss):  # a mean cross-entropy: a number >= 0
        return f".loss is {_shown(loss)}, expected a number >= 0"
    return None


def _per_class_damage(node: Any) -> str | None:
    if node is None:
        return None
    if not isinstance(node, dict):
        return f" is {_shown(node)}, expected an object"
    columns = {
        "precision": lambda v: v is None or is_fraction(v),
        "recall": lambda v: v is None or is_fraction(v),
        "support": _count,
    }
    lengths = set()
    for name, check in columns.items():
        values = node.get(name)
        if not (isinstance(values, list) and all(map(check, values))):
            return f".{name} is {_shown(values)}, expected a list with a value a class"
        lengths.add(len(values))
    return None if len(lengths) == 1 else ": precision, recall and support of other lengths"


def metric(metrics: dict[str, Any] | None, key: str) -> Any:
    """The value at a dotted key of metrics.json (``validation.precision``, ``wall_seconds``,
    ``stop.target.training_seconds``); None where the record has no such key."""
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
