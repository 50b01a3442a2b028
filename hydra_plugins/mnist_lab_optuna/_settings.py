"""The sweeper's settings (config.py), resolved and checked: the first thing a search refuses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_lab.core.errors import UserError
from mnist_lab.sweeps import trial as job_side

SAMPLERS = ("tpe", "random")
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Settings:
    sweep_dir: Path  # absolute
    name: str  # the study's
    direction: str
    n_trials: int
    n_jobs: int
    storage_spec: str  # a journal file's absolute path, or a database URL
    own_storage: bool  # the study lives in the sweep folder, not in a storage the user named
    sampler: dict[str, Any]  # {"name": ..., "seed": ..., "n_startup_trials": ...}
    pruner: dict[str, Any]  # {"name": ..., <its settings>}: what the jobs read (job_side)
    params: dict[str, Any] | None  # hydra.sweeper.params, the space's part in the config

    @property
    def shown_storage(self) -> str:
        """The storage as printed and recorded: a database URL without its password."""
        return (
            job_side.shown(self.storage_spec)
            if job_side.is_url(self.storage_spec)
            else (self.storage_spec)
        )

    @classmethod
    def of(cls, config: DictConfig) -> Settings:
        """``config.hydra.sweeper``, checked: a bad value is a UserError naming its key."""
        # Resolved in the whole config: sampler.seed is ${seed}, a key outside.
        resolved = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
        assert isinstance(resolved, dict)
        s: dict[str, Any] = {str(k): v for k, v in resolved.items()}
        direction = str(s["direction"])
        n_trials = int(s["n_trials"])
        n_jobs = int(s["n_jobs"])
        if direction not in DIRECTIONS:
            _refuse("hydra.sweeper.direction", direction, "maximize or minimize")
        if n_trials < 1:
            _refuse("hydra.sweeper.n_trials", n_trials, "at least 1")
        if n_jobs < 1:
            _refuse("hydra.sweeper.n_jobs", n_jobs, "at least 1")
        sampler = s.get("sampler") or {}
        if sampler.get("name") not in SAMPLERS:
            _refuse("hydra.sweeper.sampler.name", sampler.get("name"), " or ".join(SAMPLERS))
        pruner = s.get("pruner")
        if pruner not in job_side.PRUNERS:
            _refuse("hydra.sweeper.pruner", pruner, ", ".join(job_side.PRUNERS))
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        storage = s.get("storage") or None
        # The study lives in the sweep folder unless the user names another storage.
        if storage is None:
            storage_spec = str(sweep_dir / job_side.JOURNAL)
        elif job_side.is_url(str(storage)):
            storage_spec = str(storage)
        else:
            storage_spec = str(Path(str(storage)).expanduser().absolute())
        return cls(
            sweep_dir=sweep_dir,
            name=str(s["study_name"]),
            direction=direction,
            n_trials=n_trials,
            n_jobs=n_jobs,
            storage_spec=storage_spec,
            own_storage=storage is None,
            sampler=dict(sampler),
            pruner={"name": pruner, **(s.get(f"{pruner}_pruner") or {})},
            params=s.get("params"),
        )

    def job_dir(self, number: int) -> Path:
        """Trial ``number``'s job folder."""
        return self.sweep_dir / str(number)


def _refuse(key: str, value: Any, expected: str) -> None:
    raise UserError(f"{key}={value!r} is not valid: expected {expected}")
