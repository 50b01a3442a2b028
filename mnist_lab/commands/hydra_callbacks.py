"""Hydra callbacks: every check that must happen before Hydra writes into a folder, and the
summary at the end of a sweep.

Hydra writes ``.hydra/`` and opens the log file in a job's folder before the job's code runs,
so a command that would be refused (a folder in use, a finished run with another config,
checkpoints of another model) is refused here, before the first write: the folder is left
exactly as it was.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lab.config import validate
from mnist_lab.core.console import one_line
from mnist_lab.core.errors import EXIT_JOB_FAILED, FolderRefused, Refused, UserError
from mnist_lab.rundir import layout, locks, resume
from mnist_lab.rundir.interrupts import SWEEP_PID_ENV
from mnist_lab.sweeps import BASIC_SWEEPER, OUR_SWEEPER
from mnist_lab.sweeps.summary import all_done, summarize

DEFAULT_SUBDIR = "${hydra.job.num}"

# The command that resumes the sweep this process drives, once one has started: printed when
# a job of it is interrupted.
sweep_resume_hint: str | None = None


def _or_exit(check: Any, *args: Any, **kwargs: Any) -> Any:
    # Hydra turns an exception in a callback into a warning and carries on, so a refusal has
    # to stop the program here: Refused is not an Exception, it gets through. A value Hydra
    # cannot resolve (`seed=${oops}`) is refused here too, before anything is written.
    try:
        return check(*args, **kwargs)
    except UserError as ex:
        raise Refused(ex) from None
    except (HydraException, OmegaConfBaseException) as ex:
        raise Refused(UserError(one_line(ex))) from None


def _prepare_run(config: DictConfig) -> None:
    validate(config)
    run_dir = Path(str(config.hydra.run.dir))
    resume.check_is_a_run_folder(run_dir)
    resume.check_own_files(run_dir)
    locks.acquire(run_dir)
    resume.plan(run_dir, config)


class ValidateConfig(Callback):
    """Check values, take the folder's lock and decide about what it holds, before Hydra writes.

    A single run: its values, and its folder (``resume.plan``). A grid sweep: every job's
    values and every job folder that exists, so a bad value (``optimizer.lr=0.1,-1``) or a
    job folder of another config fails before the first job starts.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _or_exit(_prepare_run, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global sweep_resume_hint
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = _or_exit(grid_jobs, config)
        # Values first: a bad one leaves no trace, not even the sweep folder.
        name = config.hydra.job.config_name  # the root config the jobs run (--config-name)
        job_configs = [_or_exit(compose, config_name=name, overrides=o) for o in jobs or []]
        for job_config in job_configs:
            _or_exit(validate, job_config)
        sweep_resume_hint = resume.sweep_resume_command(sweep_dir, sys.argv[1:])
        # Workers this process starts (joblib's) stop their jobs if it is killed.
        os.environ[SWEEP_PID_ENV] = str(os.getpid())
        _or_exit(resume.check_own_files, sweep_dir, layout.SWEEP_OPENED_IN_PLACE)
        if config.hydra.sweeper._target_ == OUR_SWEEPER:
            return  # the search checks its space, then takes the folder's lock itself
        _or_exit(locks.acquire, sweep_dir, "sweep folder")
        if jobs is None:
            _refuse_to_resume(sweep_dir)
            return
        sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False)
        if not (isinstance(sweep, dict) and sweep.get("subdir") == DEFAULT_SUBDIR):
            return  # job folders named otherwise: each job checks its own folder as it starts
        for number, job_config in enumerate(job_configs):
            job_dir = sweep_dir / str(number)
            if job_dir.is_dir():
                _or_exit(resume.check_own_files, job_dir)
                _or_exit(resume.plan, job_dir, job_config, exact=True)
        # A folder of a larger sweep: its jobs past this one's would be ranked with them.
        for marker in sweep_dir.glob(f"*/{layout.HYDRA}"):
            name = marker.parent.name
            if name.isdigit() and int(name) >= len(job_configs):
                raise Refused(
                    FolderRefused(
                        f"{marker.parent} holds a job that this sweep does not have (it has "
                        f"{len(job_configs)} jobs); use the same sweep or another hydra.sweep.dir"
                    )
                )


def _refuse_to_resume(sweep_dir: Path) -> None:
    # Other sweepers (Nevergrad, Ax ...) choose values as they go: job N of a new search is
    # another point, and the old results (and checkpoints) in its folder are not its own.
    if any(sweep_dir.glob(f"*/{layout.HYDRA}")):
        raise Refused(
            UserError(
                f"{sweep_dir} already holds jobs; only a grid sweep or hparams_search=optuna "
                "can resume into it: choose a new hydra.sweep.dir"
            )
        )


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

    Jobs are read back from their folders, so this works with every launcher and sweeper.
    A failed or missing job makes the command exit with status 1, after the table.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # _or_exit: a summary that cannot be written (a folder where summary.json belongs, a
        # full disk) is one error line, not Hydra's warning and a status 0.
        sweep_dir = Path(str(config.hydra.sweep.dir))
        os.environ.pop(SWEEP_PID_ENV, None)  # its workers are done: later children are not
        ranked = _or_exit(summarize, sweep_dir, expected=grid_jobs(config) or [])
        if not all_done(ranked):
            # SystemExit, like ValidateConfig: Hydra would turn an Exception into a warning.
            raise SystemExit(EXIT_JOB_FAILED)
