"""What defines a search: its metric, its direction and its space, checked before any trial.

The study records the definition when the search starts (``Definition.record``); a rerun must
define the same search to resume it (``Definition.difference``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import HydraContext
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.mnist_lab_optuna._settings import Settings
from hydra_plugins.mnist_lab_optuna._space import Space, build, read
from mnist_lab.config import validate
from mnist_lab.core.console import one_line
from mnist_lab.core.errors import UserError
from mnist_lab.sweeps import trial as job_side


@dataclass(frozen=True)
class JobConfigs:
    """The configs of the search's jobs, composed as the launcher will compose them."""

    hydra_context: HydraContext
    config: DictConfig  # the sweep's own

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        return self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides)
        )

    def problem(self, overrides: Sequence[str]) -> str | None:
        """Why mnist-lab would refuse a job with these overrides, in one line; else None."""
        try:
            validate(self.compose(overrides))
        except UserError as ex:
            return str(ex)
        except (HydraException, OmegaConfBaseException) as ex:
            return one_line(ex)
        return None


@dataclass(frozen=True)
class Definition:
    metric: str  # the top-level optimized_metric: validation.precision, ...
    direction: str
    space: Space

    def record(self) -> dict[str, Any]:
        """The study's user attrs that define it."""
        return {
            job_side.METRIC_ATTR: self.metric,  # what every trial reports to the pruner
            "direction": self.direction,
            "space": self.space.as_record(),
            "fixed_overrides": sorted(self.space.fixed),
            "space_text": {p.name: p.text for p in self.space.params},
        }

    def difference(self, recorded: dict[str, Any]) -> str | None:
        """The first way the ``recorded`` search differs from this one, in words."""
        wanted = self.record()
        for key in (job_side.METRIC_ATTR, "direction"):
            if recorded.get(key) != wanted[key]:
                name = "hydra.sweeper.direction" if key == "direction" else key
                return f"{name} was {recorded.get(key)!r}, now {wanted[key]!r}"
        old_space, new_space = recorded.get("space") or {}, wanted["space"]
        old_text, new_text = recorded.get("space_text") or {}, wanted["space_text"]
        for key in sorted(old_space.keys() | new_space.keys()):
            if key not in new_space:
                return f"{key} is not searched now (it was: {old_text.get(key, key)})"
            if key not in old_space:
                return f"{new_text[key]} is searched now (it was not)"
            if old_space[key] != new_space[key]:
                return f"the search space had {old_text.get(key, key)}, now {new_text[key]}"
        old_fixed = set(recorded.get("fixed_overrides") or [])
        new_fixed = set(wanted["fixed_overrides"])
        if old_fixed != new_fixed:
            was = " ".join(sorted(old_fixed - new_fixed)) or "nothing"
            now = " ".join(sorted(new_fixed - old_fixed)) or "nothing"
            return f"the other overrides had {was}, now {now}"
        return None


def define(settings: Settings, arguments: Sequence[str], jobs: JobConfigs) -> Definition:
    """The search of ``hydra.sweeper.params`` and the command line, checked: a UserError (or
    Hydra's own error) for a space or a metric that no search should run."""
    parser = OverridesParser.create(config_loader=jobs.hydra_context.config_loader)
    overrides = read(settings.params, arguments, parser)
    # The config without the searched values: its checks, its metric, its integer keys.
    base = jobs.compose(overrides.fixed)
    validate(base)
    metric = base.get("optimized_metric")
    if metric is None:
        raise UserError(
            "optimized_metric is null: a search needs the metric it optimises, e.g. "
            "optimized_metric=validation.precision (hparams_search=optuna sets it)"
        )
    metric = str(metric)
    wrong = "minimize" if metric.endswith("precision") else "maximize"
    if settings.direction == wrong:
        raise UserError(
            f"hydra.sweeper.direction={wrong} with optimized_metric={metric}: this search "
            f"would look for the worst trials; use hydra.sweeper.direction="
            f"{'maximize' if wrong == 'minimize' else 'minimize'}"
        )
    space = build(overrides, base)
    if not space.params:
        raise UserError(
            "the search space is empty: give hydra.sweeper.params, or a sweep on the "
            "command line such as 'optimizer.lr=tag(log, interval(1e-4, 0.1))'"
        )
    # Every choice and both bounds of each range, one key at a time: a bad value (a negative
    # learning rate, a key the model does not have) stops the search here.
    for param in space.params:
        for value in param.extremes():
            problem = jobs.problem([*space.fixed, param.override(value)])
            if problem is not None:
                raise UserError(f"in the search space, {param.text}: {problem}")
    return Definition(metric=metric, direction=settings.direction, space=space)
