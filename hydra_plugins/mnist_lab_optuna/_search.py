"""The search behind OptunaSweeper, in its order: the settings and the search's definition, the
study, the trials, the report.

==================  ===========================================================================
``_settings.py``    hydra.sweeper's settings, resolved and checked
``_space.py``       Hydra's sweep syntax as Optuna distributions
``_definition.py``  the metric, the direction and the space, checked before any trial
``_study.py``       the study: opened, refused if it holds another search
``_trials.py``      the trial loop: resume a killed run's trials, ask, launch, tell
``_report.py``      the best trial and the importances (best.json, importances.json)
==================  ===========================================================================
"""

from __future__ import annotations

from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.mnist_lab_optuna._definition import Definition, JobConfigs, define
from hydra_plugins.mnist_lab_optuna._report import report
from hydra_plugins.mnist_lab_optuna._settings import Settings
from hydra_plugins.mnist_lab_optuna._study import open_study
from hydra_plugins.mnist_lab_optuna._trials import Trials
from mnist_lab.core.console import one_line
from mnist_lab.core.errors import Refused, UserError
from mnist_lab.rundir import locks
from mnist_lab.sweeps import trial as job_side


def search(
    arguments: list[str], config: DictConfig, hydra_context: HydraContext, launcher: Launcher
) -> list[list[JobReturn]]:
    """Run the search of ``config`` and the command line's sweep ``arguments``."""
    trials, definition = _prepare(arguments, JobConfigs(hydra_context, config), launcher)
    returns = trials.run()
    report(trials.study, definition)
    return returns


def _prepare(
    arguments: list[str], jobs: JobConfigs, launcher: Launcher
) -> tuple[Trials, Definition]:
    """Check the settings and the space, open the study, settle an earlier run's trials:
    anything refused here is one ``error:`` line and exit 2, before any trial starts."""
    job_side.quiet_optuna()
    try:
        settings = Settings.of(jobs.config)
        definition = define(settings, arguments, jobs)
        # One search a folder: the CLI's callback leaves this lock to the search.
        locks.acquire(settings.sweep_dir, "sweep folder")
        trials = Trials(open_study(settings, definition), definition, jobs, launcher)
        trials.settle()
    except UserError as ex:
        raise Refused(ex) from None
    except (HydraException, OmegaConfBaseException) as ex:
        raise Refused(UserError(one_line(ex))) from None
    return trials, definition
