"""A search space in Hydra's sweep syntax, as Optuna distributions.

==============================================  ==========================================
in hydra.sweeper.params or on the command line  Optuna
==============================================  ==========================================
``a,b,c``, ``choice(a, b, c)``, ``glob(...)``   categorical (lists, dicts: as their text)
``range(1, 10, 2)``                             integers 1, 3 ... 9 (floats: categorical)
``interval(0.1, 1)``                            a float in [0.1, 1]
``interval(16, 128)`` on an integer key         an integer in [16, 128]; ``tag(int, ...)``
                                                for any key
``tag(log, interval(1e-4, 0.3))``               the same, log-uniform
anything else (``trainer.steps=100``, ``~x``)   a fixed override, passed to every trial
==============================================  ==========================================

The command line wins over ``hydra.sweeper.params`` for the same key, as in a grid sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from omegaconf import DictConfig, OmegaConf

from mnist_lab.core.errors import UserError

Categorical = optuna.distributions.CategoricalDistribution
IntRange = optuna.distributions.IntDistribution
FloatRange = optuna.distributions.FloatDistribution
TAGS = ("log", "int")


@dataclass
class Param:
    """One searched key."""

    key: str  # as in the override, with its +/++ prefix
    name: str  # Optuna's name for it: the config key
    text: str  # the sweep as written, for messages
    distribution: optuna.distributions.BaseDistribution
    # A categorical's choices as override values, in the order of distribution.choices.
    strings: list[str] = field(default_factory=list)

    def suggest(self, trial: optuna.trial.Trial) -> Any:
        d = self.distribution
        if isinstance(d, Categorical):
            return trial.suggest_categorical(self.name, d.choices)
        if isinstance(d, IntRange):
            return trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        assert isinstance(d, FloatRange)
        return trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)

    def value_string(self, value: Any) -> str:
        if isinstance(self.distribution, Categorical):
            return self.strings[int(self.distribution.to_internal_repr(value))]
        if isinstance(self.distribution, IntRange):
            return str(int(value))
        return repr(float(value))

    def override(self, value: Any) -> str:
        return f"{self.key}={self.value_string(value)}"

    def extremes(self) -> list[Any]:
        """The values worth checking before a search starts: every choice, or both bounds."""
        d = self.distribution
        if isinstance(d, Categorical):
            return list(d.choices)
        assert isinstance(d, (IntRange, FloatRange))
        return [d.low, d.high] if d.low != d.high else [d.low]


@dataclass
class Space:
    params: list[Param]
    fixed: list[str]  # overrides every trial gets, in the order given

    def as_record(self) -> dict[str, str]:
        """What defines the space, canonically (1e-4 and 0.0001 are the same bound)."""
        return {
            p.name: optuna.distributions.distribution_to_json(p.distribution) for p in self.params
        }

    def overrides(self, values: dict[str, Any]) -> list[str]:
        return [*self.fixed, *(p.override(values[p.name]) for p in self.params)]


@dataclass
class ParsedOverrides:
    """The search's overrides, parsed once, one for each key."""

    sweeps: list[Override]  # to become Params
    fixed: list[str]  # as in Space.fixed


def read(
    params: dict[str, Any] | None, arguments: Sequence[str], parser: OverridesParser
) -> ParsedOverrides:
    """The overrides of ``hydra.sweeper.params`` and the command line's ``arguments``."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides([*lines, *arguments]):
        by_key.pop(override.key_or_group, None)  # the later one wins, in its own place
        by_key[override.key_or_group] = override
    parsed = ParsedOverrides(sweeps=[], fixed=[])
    for override in by_key.values():
        if override.is_sweep_override():
            parsed.sweeps.append(override)
        else:
            assert override.input_line is not None
            parsed.fixed.append(override.input_line)
    return parsed


def build(parsed: ParsedOverrides, base: DictConfig | None = None) -> Space:
    """The space of ``parsed``; ``base``, the config with only the fixed overrides, tells
    which keys hold integers."""
    return Space(params=[_param(o, base) for o in parsed.sweeps], fixed=list(parsed.fixed))


def parse(
    params: dict[str, Any] | None,
    arguments: Sequence[str],
    parser: OverridesParser,
    base: DictConfig | None = None,
) -> Space:
    """``read`` and ``build`` in one call, for a caller that has ``base`` already."""
    return build(read(params, arguments, parser), base)


def _param(override: Override, base: DictConfig | None) -> Param:
    key = override.get_key_element()
    name = override.key_or_group
    text = override.input_line or key
    sweep = override.value()
    tags: set[str] = set(getattr(sweep, "tags", set()))
    unknown = sorted(tags - set(TAGS))
    if unknown:
        raise _bad(text, f"unknown tag {unknown[0]!r} in a search: expected log or int")
    log = "log" in tags
    try:
        if isinstance(sweep, IntervalSweep):
            assert sweep.start is not None and sweep.end is not None
            low, high = sweep.start, sweep.end
            integral = float(low).is_integer() and float(high).is_integer()
            if "int" in tags or (integral and _holds_int(base, name)):
                if not integral:
                    raise _bad(text, "tag int needs integer bounds")
                return Param(key, name, text, IntRange(int(low), int(high), log=log))
            return Param(key, name, text, FloatRange(low, high, log=log))
        if "int" in tags:
            raise _bad(text, "tag int applies to interval(...)")
        if isinstance(sweep, RangeSweep):
            values = list(sweep.range())
            if not values:
                raise _bad(text, "the range is empty")
            if all(isinstance(v, int) for v in values):
                step = abs(int(sweep.step)) if len(values) > 1 else 1
                distribution = IntRange(min(values), max(values), step=step, log=log)
                return Param(key, name, text, distribution)
        if log:
            raise _bad(text, "tag log applies to interval(...) and integer ranges")
        if isinstance(sweep, RangeSweep):
            return _categorical(key, name, text, values)  # floats: exactly Hydra's values
        # choice(...), a,b,c and glob(...): in the order given, never shuffled (the space
        # must read the same on the rerun that resumes the search).
        if isinstance(sweep, ChoiceSweep):
            return _categorical(key, name, text, list(sweep.list))
        return _categorical(key, name, text, list(override.sweep_iterator()))
    except ValueError as ex:  # Optuna's checks: low > high, log of a value <= 0, ...
        raise _bad(text, str(ex)) from None


def _categorical(key: str, name: str, text: str, values: list[Any]) -> Param:
    # Optuna's categorical choices are scalars: lists and dicts ([128,32]) go as their text.
    strings = [str(Transformer.str(v)) for v in values]
    choices = [
        v if v is None or isinstance(v, (bool, int, float, str)) else s
        for v, s in zip(values, strings, strict=True)
    ]
    if len(set(strings)) < len(strings):
        raise _bad(text, "a choice appears twice")
    return Param(key, name, text, Categorical(choices), strings)


def _bad(text: str, why: str) -> UserError:
    return UserError(f"in the search space, {text}: {why}")


def _holds_int(base: DictConfig | None, key: str) -> bool:
    if base is None:
        return False
    value = OmegaConf.select(base, key, default=None, throw_on_missing=False)
    return isinstance(value, int) and not isinstance(value, bool)
