"""The search's Optuna study: opened in its storage (the sweep folder's journal unless the user
names another), refused if it holds another search, and its trials' records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hydra_plugins.mnist_lab_optuna._definition import Definition
from hydra_plugins.mnist_lab_optuna._journal import check_journal, repair_journal
from hydra_plugins.mnist_lab_optuna._settings import Settings
from mnist_lab.core.errors import UserError
from mnist_lab.rundir import layout
from mnist_lab.sweeps import trial as job_side

# A trial's user attrs.
SWEEP_DIR_ATTR = "sweep_dir"
OVERRIDES_ATTR = "overrides"
ERROR_ATTR = "error"

ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Study:
    """An open study of this search."""

    settings: Settings
    optuna_study: optuna.Study
    storage: optuna.storages.BaseStorage
    id: int

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.id, number)

    def ours(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether ``trial`` is one of this sweep folder's: a study in a shared storage has
        trials of other sweep folders (other machines)."""
        recorded = trial.user_attrs.get(SWEEP_DIR_ATTR)
        if self.settings.own_storage:
            return True
        # In a shared study a trial not yet marked is another machine's, just asked.
        return recorded == str(self.settings.sweep_dir)

    def fail(self, number: int, error: str) -> None:
        """Trial ``number`` failed with ``error``: recorded with it, for the summary."""
        self.storage.set_trial_user_attr(self.trial_id(number), ERROR_ATTR, error)
        self.optuna_study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def open_study(settings: Settings, definition: Definition) -> Study:
    """The study of this search, created or resumed; a UserError where the storage or the
    sweep folder holds something else."""
    # Read whole first: a journal damaged anywhere is refused before anything is cut or added.
    if not job_side.is_url(settings.storage_spec):
        check_journal(Path(settings.storage_spec), settings.sweep_dir, settings.name)
    if settings.own_storage:
        repair_journal(Path(settings.storage_spec))
    storage = job_side.open_storage(settings.storage_spec)
    studies = {s.study_name for s in storage.get_all_studies()}
    others = sorted(studies - {settings.name})
    if settings.own_storage and others:
        raise UserError(
            f"{settings.sweep_dir} holds the study {others[0]!r}, not {settings.name!r} "
            "(hydra.sweeper.study_name): run that search to resume it, or choose a new "
            "hydra.sweep.dir"
        )
    pruner = job_side.make_pruner(settings.pruner)
    if settings.name in studies:
        # Loaded, not created with load_if_exists: a refused rerun must not write a line.
        study_id = storage.get_study_id_from_name(settings.name)
        before = len(storage.get_all_trials(study_id, deepcopy=False))
        study = optuna.load_study(
            study_name=settings.name,
            storage=storage,
            sampler=_sampler(settings, before),
            pruner=pruner,
        )
    else:
        _check_folders(settings, [])  # before the study exists: a refusal writes nothing
        study = optuna.create_study(
            storage=storage,
            study_name=settings.name,
            direction=optuna.study.StudyDirection[settings.direction.upper()],
            sampler=_sampler(settings, 0),
            pruner=pruner,
            load_if_exists=True,  # another machine may create it at the same moment
        )
    opened = Study(settings, study, storage, storage.get_study_id_from_name(settings.name))
    _check_same_search(opened, definition)
    _check_folders(settings, [t for t in study.get_trials(deepcopy=False) if opened.ours(t)])
    # Not part of what defines the search: a rerun may prune otherwise. Its jobs read it.
    study.set_user_attr(job_side.PRUNER_ATTR, settings.pruner)
    return opened


def _sampler(settings: Settings, trials_before: int) -> optuna.samplers.BaseSampler:
    seed = settings.sampler.get("seed")
    # A resumed search must not draw its first random points again: its seed moves on by the
    # trials it already has.
    if seed is not None:
        seed = int(seed) + trials_before
    if settings.sampler["name"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=int(settings.sampler["n_startup_trials"])
    )


def _check_same_search(study: Study, definition: Definition) -> None:
    """Refuse to mix two searches in one study: a rerun must be the same search."""
    settings = study.settings
    recorded = study.optuna_study.user_attrs
    if "space" not in recorded:
        if study.optuna_study.get_trials(deepcopy=False):
            raise UserError(
                f"the study {settings.name!r} in {settings.shown_storage} was not started by "
                "mnist-lab: choose another hydra.sweeper.study_name or hydra.sweep.dir"
            )
        direction = study.optuna_study.direction
        if direction != optuna.study.StudyDirection[settings.direction.upper()]:
            # An empty study made elsewhere (optuna create-study): its direction is fixed.
            raise UserError(
                f"hydra.sweeper.direction={settings.direction!r} is not valid: the study "
                f"{settings.name!r} in {settings.shown_storage} is to "
                f"{direction.name.lower()}; use that direction or another study_name"
            )
        # "space" marks a defined search: written last, so a kill between these writes leaves
        # a study that the next run defines again rather than one it refuses.
        for key, value in sorted(definition.record().items(), key=lambda item: item[0] == "space"):
            study.optuna_study.set_user_attr(key, value)
        return
    difference = definition.difference(recorded)
    if difference:
        where = (
            str(settings.sweep_dir)
            if settings.own_storage
            else f"the study {settings.name!r} in {settings.shown_storage}"
        )
        raise UserError(
            f"{where} holds another search: {difference}; run the same search to resume it "
            "(hydra.sweeper.n_trials may change), or choose a new hydra.sweep.dir"
        )


def _check_folders(settings: Settings, ours: list[optuna.trial.FrozenTrial]) -> None:
    """A job folder the study does not know would be overwritten by a new trial."""
    if not settings.sweep_dir.is_dir():
        return
    numbers = {t.number for t in ours}
    strangers = sorted(
        d.name
        for d in settings.sweep_dir.iterdir()
        if (d / layout.HYDRA).is_dir() and not (d.name.isdigit() and int(d.name) in numbers)
    )
    if strangers:
        raise UserError(
            f"{settings.sweep_dir} holds job folders that are not trials of this search "
            f"({', '.join(strangers[:3])}{' ...' if len(strangers) > 3 else ''}): choose a "
            "new hydra.sweep.dir"
        )
