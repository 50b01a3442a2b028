"""The sweeper's settings (``hydra/sweeper=mnist_lab_optuna``), typed: a typo fails at composition.

Hydra imports every public module of a ``hydra_plugins`` package when it starts, so this one
stays light: no Optuna here. No ``from __future__ import annotations`` either: Hydra runs this
module before it is in ``sys.modules``, where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    # tpe: Optuna's default, models good and bad regions; random: a baseline.
    name: str = "tpe"
    # The search's own seed: with the same seed, the same trials in the same order.
    seed: int | None = "${seed}"  # type: ignore[assignment]  # resolved by OmegaConf
    # TPE: random trials before it starts modelling.
    n_startup_trials: int = 10


@dataclass
class MedianPrunerConf:
    # Trials that must finish before any is pruned: the median of fewer is noise.
    n_startup_trials: int = 5
    # A trial is not pruned before this training step.
    n_warmup_steps: int = 0


@dataclass
class HyperbandPrunerConf:
    # In training steps (what each evaluation reports); max_resource "auto": the steps of the
    # first trial that finishes.
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.mnist_lab_optuna.sweeper.OptunaSweeper"
    # maximize or minimize the top-level optimized_metric.
    direction: str = "maximize"
    study_name: str = "mnist-lab"
    # null: an Optuna journal file in the sweep folder (optuna.journal); a path: a journal file
    # elsewhere; a URL (sqlite:///..., postgresql://...): a database.
    storage: str | None = None
    # Trials in all, counting those of earlier runs of the same search.
    n_trials: int = 20
    # Trials launched at a time (through hydra/launcher).
    n_jobs: int = 1
    sampler: SamplerConf = field(default_factory=SamplerConf)
    # median, hyperband or none: stops trials clearly worse than the others.
    pruner: str = "median"
    median_pruner: MedianPrunerConf = field(default_factory=MedianPrunerConf)
    hyperband_pruner: HyperbandPrunerConf = field(default_factory=HyperbandPrunerConf)
    # The search space, in Hydra's sweep syntax: key -> choice(...), range(...), interval(...),
    # tag(log, interval(...)), a,b,c; or a fixed value.
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="mnist_lab_optuna", node=OptunaSweeperConf, provider="mnist_lab"
)
