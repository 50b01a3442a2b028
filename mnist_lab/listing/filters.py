"""The filter language of ``mnist-lab-runs`` and ``mnist_lab.runs()``.

A **filter** is ``KEY OP VALUE`` with OP one of ``= == != < <= > >=``. KEY is a record field
(``status``, ``started``, ``duration``, ``step``, ``dir``, ``pid``), a config key
(``optimizer.lr``; a group alone means its option: ``model=cnn`` is ``model.name=cnn``), a key
of ``metrics.json`` (``validation.precision``, ``wall_seconds``), or else an override given on
the command line (``experiment=softmax_tutorial``). A run without the key matches only ``!=``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from mnist_lab.core.errors import UserError
from mnist_lab.listing.read import FIELDS, MISSING, Run, lookup, timestamp
from mnist_lab.rundir import records

OPERATORS = ("==", "!=", "<=", ">=", "=", "<", ">")
_FILTER = re.compile(r"^\s*([A-Za-z_+][\w.+\-]*)\s*(==|!=|<=|>=|=|<|>)(.*)$", re.DOTALL)
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


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
        if op not in ("=", "!=") and key != "started" and not is_number(_parse_value(text)):
            raise UserError(f"{op} needs a number in {expression!r}")
        if key == "started" and op not in ("=", "!=") and timestamp(text) is None:
            raise UserError(
                f"not a time in {expression!r}; expected e.g. started>=2026-11-22 or "
                "started>=2026-11-22T14:30 (local time)"
            )
        return cls(key, op, text)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.text}"

    def matches(self, run: Run) -> bool:
        found = lookup(run, self.key)
        if found is MISSING:
            return self.op == "!="
        if self.op in ("=", "!="):
            return _equal(found, self.text) == (self.op == "=")
        mine: Any = timestamp(found) if self.key == "started" else found
        theirs: Any = timestamp(self.text) if self.key == "started" else _parse_value(self.text)
        if not (is_number(mine) and is_number(theirs)):
            return False
        return bool(_ORDER[self.op](mine, theirs))


def looks_like_filter(text: str) -> bool:
    return _FILTER.match(text) is not None


def check_keys(keys: Iterable[str], found: list[Run], what: str) -> None:
    """A key no run has is a typo more often than not: say so rather than list nothing."""
    for key in keys:
        if key in FIELDS or not found:
            continue
        if all(lookup(r, key) is MISSING for r in found):
            raise UserError(
                f"no listed run has the key {key!r} ({what}); keys look like model.name, "
                "optimizer.lr, trainer.steps, validation.precision, wall_seconds, status"
            )


def is_number(value: Any) -> bool:
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
    if is_number(value) and is_number(wanted):
        return math.isclose(value, wanted, rel_tol=1e-12, abs_tol=0.0) or value == wanted
    if isinstance(value, list) and isinstance(wanted, list):
        return len(value) == len(wanted) and all(map(_same, value, wanted))
    return type(value) is type(wanted) and value == wanted
