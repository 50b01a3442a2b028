"""mnist-lab's hyperparameter search: a Hydra sweeper on Optuna's ask-and-tell interface.

Each trial is a job of the sweep, launched through the configured Hydra launcher into
``<sweep dir>/<trial number>/``; the study lives in ``<sweep dir>/optuna.journal``, so the same
command resumes a search after any crash. The work is in ``_search.py`` and the modules it
names; this module stays light because Hydra imports it at every start.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        # The settings (config.py) are read back from the config in sweep(), resolved there.
        super().__init__()
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from hydra_plugins.mnist_lab_optuna._search import search

        assert self.hydra_context is not None and self.config is not None
        assert self.launcher is not None
        return search(arguments, self.config, self.hydra_context, self.launcher)
