"""Hydra callbacks: configs are checked before any run directory or job exists."""

from __future__ import annotations

from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_lab.config import validate
from mnist_lab.console import error_line
from mnist_lab.errors import EXIT_USER_ERROR, UserError


def _validate_or_exit(config: DictConfig) -> None:
    # Hydra turns an exception in a callback into a warning and carries on, so a bad config
    # has to stop the program here. SystemExit is not an Exception: it gets through.
    try:
        validate(config)
    except UserError as ex:
        error_line(str(ex))
        raise SystemExit(EXIT_USER_ERROR) from None


class ValidateConfig(Callback):
    """Run ``validate`` on the run's config, or on every job of a grid sweep, up front.

    A bad value in a sweep (``optimizer.lr=0.1,-1``) then fails before the first job starts,
    not after the good jobs have spent their time.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if (
            config.hydra.sweeper._target_
            != "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
        ):
            return  # other sweepers (Optuna) choose values as they go; each job checks its own
        overrides = list(config.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(overrides)
        for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None):
            for job_overrides in batch:
                _validate_or_exit(compose(config_name="config", overrides=list(job_overrides)))
