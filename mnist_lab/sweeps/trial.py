"""A job's side of a search: report each evaluation to the study, and stop when it says so.

The search's sweeper (``hydra_plugins/mnist_lab_optuna``) runs each trial as a Hydra job and
names its study and trial in the job's environment (``hydra.job.env_set``, which Hydra applies
in the job's own process, whichever launcher runs it: in this process, joblib, Ray, SLURM).
The storage, the pruner and the reported metric are built here, by one set of functions, for
the sweeper and for its jobs.

Optuna is imported only when a job belongs to a search: grid sweeps do not need it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_lab.core.errors import UserError

if TYPE_CHECKING:
    import optuna

    from mnist_lab.rundir.results import EvalRecord
    from mnist_lab.training.loop import Pruner

# Set for each job by the sweeper.
ENV_STORAGE = "MNIST_LAB_STUDY_STORAGE"  # a journal file's path, or a database URL
ENV_STUDY = "MNIST_LAB_STUDY_NAME"
ENV_TRIAL = "MNIST_LAB_TRIAL_NUMBER"

# The study of a search, in its sweep folder unless hydra.sweeper.storage names another.
JOURNAL = "optuna.journal"
PRUNERS = ("median", "hyperband", "none")
# A study's user attrs, set by the sweeper: what the search optimises, and how it prunes
# ({"name": "median", "n_startup_trials": 5, ...}).
METRIC_ATTR = "optimized_metric"
PRUNER_ATTR = "pruner"


def quiet_optuna() -> None:
    """Optuna's own INFO lines on stderr would break the one-line error contract: its messages
    go through Python's logging instead (Hydra's handlers), warnings and worse only."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def is_url(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str) -> optuna.storages.BaseStorage:
    """A database for a URL (``sqlite:///...``, ``postgresql://...``), else a journal file:
    Optuna's storage made for crashes (each change is one appended line) and shared file
    systems (its lock is a symlink, atomic on NFS)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if is_url(storage):
        return _open_database(storage)
    try:
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    except (OSError, ValueError) as ex:
        raise UserError(f"cannot open the study journal {storage}: {_first_line(ex)}") from ex


def _open_database(url: str) -> optuna.storages.BaseStorage:
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    # Two machines starting on a new database create its tables at the same moment: the one
    # that loses finds them made when it tries again.
    for _ in range(2):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError):
            continue
        except Exception:
            break
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as ex:  # SQLAlchemy's errors: a bad URL, a missing driver, no server
        raise UserError(f"cannot open the study storage {shown(url)}: {_first_line(ex)}") from ex


def shown(url: str) -> str:
    """``url`` as an error line shows it: without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: nothing to hide
        return url


def make_pruner(settings: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Optuna's pruner from ``{"name": ..., <its settings>}`` (the sweeper's config)."""
    import optuna

    name = settings.get("name")
    args = {k: v for k, v in settings.items() if k != "name"}
    if name == "median":
        return optuna.pruners.MedianPruner(**args)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**args)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"hydra.sweeper.pruner={name!r} is not valid: expected one of {PRUNERS}")


def metric_of(record: EvalRecord, metric: str) -> float | None:
    """The optimized metric (``validation.precision``, ``train.loss`` ...) in one evaluation."""
    split, _, name = metric.partition(".")
    if split == "validation":
        value = getattr(record.validation, name)
    else:
        value = getattr(record, f"train_{name}")
    return None if value is None or not math.isfinite(value) else float(value)


class TrialReporter:
    """The loop's pruner for one trial: reports the optimized metric at each evaluation and
    answers Optuna's ``should_prune``."""

    def __init__(self, trial: optuna.trial.Trial, metric: str, reported: set[int]) -> None:
        self.trial = trial
        self.metric = metric
        # Steps a resumed trial reported before it was stopped: Optuna keeps the first value.
        self.reported = reported

    def __call__(self, record: EvalRecord) -> bool:
        value = metric_of(record, self.metric)
        if value is None:
            return False
        if record.step not in self.reported:
            self.trial.report(value, record.step)
            self.reported.add(record.step)
        return bool(self.trial.should_prune())


def pruner_from_environment() -> Pruner | None:
    """The pruner of the trial this job runs, when a search started it; else None."""
    storage = os.environ.get(ENV_STORAGE)
    if not storage:
        return None
    import optuna

    quiet_optuna()
    try:
        name = os.environ[ENV_STUDY]
        number = int(os.environ[ENV_TRIAL])
    except (KeyError, ValueError) as ex:
        raise UserError(f"this job's search environment is incomplete: {ex}") from ex
    opened = open_storage(storage)
    try:
        study = optuna.load_study(study_name=name, storage=opened)
        study_id = opened.get_study_id_from_name(name)
        trial_id = opened.get_trial_id_from_study_id_trial_number(study_id, number)
    except KeyError as ex:
        raise UserError(f"no trial {number} of the study {name!r} in {storage}") from ex
    study.pruner = make_pruner(study.user_attrs.get(PRUNER_ATTR) or {"name": "none"})
    metric = study.user_attrs.get(METRIC_ATTR) or "validation.precision"
    reported = set(opened.get_trial(trial_id).intermediate_values)
    return TrialReporter(optuna.trial.Trial(study, trial_id), metric, reported)


def _first_line(ex: BaseException) -> str:
    text = str(ex).strip()
    return text.splitlines()[0] if text else type(ex).__name__
