"""Hydra callbacks: configs are checked before any job starts; a sweep ends with its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_lab.config import validate
from mnist_lab.console import error_line
from mnist_lab.errors import EXIT_USER_ERROR, UserError
from mnist_lab.sweep_summary import all_done, summarize

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# The exit status of a sweep in which a job failed or never finished.
EXIT_JOB_FAILED = 1


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
        jobs = grid_jobs(config)
        if jobs is None:
            _refuse_to_resume(Path(config.hydra.sweep.dir))
        # Other sweepers (Optuna) choose values as they go; each job checks its own.
        for job_overrides in jobs or []:
            _validate_or_exit(compose(config_name="config", overrides=job_overrides))


def _refuse_to_resume(sweep_dir: Path) -> None:
    # A rerun skips the jobs that finished (cli.sweep_job). That resumes a grid, whose job N
    # always has the same overrides, but Optuna's trial N of a new study samples new values:
    # the old result (and checkpoints) in its directory are not its own.
    if any(sweep_dir.glob("*/.hydra")):
        error_line(
            f"{sweep_dir} already holds jobs; only a grid sweep can resume into it: "
            "choose a new hydra.sweep.dir for a search"
        )
        raise SystemExit(EXIT_USER_ERROR)


def grid_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of every job of a grid sweep, in job order; None for other sweepers."""
    if config.hydra.sweeper._target_ != BASIC_SWEEPER:
        return None
    # As BasicSweeper does: the sweep defined in the config first, then the command line's.
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


class SweepSummary(Callback):
    """At the end of a sweep, rank its jobs by validation precision, write and print the summary.

    Jobs are read back from their directories, so this works with every launcher and sweeper.
    A failed or missing job makes the command exit with status 1, after the table.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        ranked = summarize(Path(config.hydra.sweep.dir), expected=grid_jobs(config) or [])
        if not all_done(ranked):
            # SystemExit, like ValidateConfig: Hydra would turn an Exception into a warning.
            raise SystemExit(EXIT_JOB_FAILED)
