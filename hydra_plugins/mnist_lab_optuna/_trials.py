"""The trial loop: ask the study, launch the jobs through the Hydra launcher, tell.

A trial's life:

1. ask: Optuna creates trial N (RUNNING), which records the sweep folder; the sampler suggests
   its values;
2. launch: a Hydra job with those values as overrides, in ``<sweep dir>/N/``, told its study and
   trial through the environment (``mnist_lab.sweeps.trial`` reports every evaluation and asks
   whether to prune);
3. tell: what the job folder holds (``records.read_run``) decides: finished -> COMPLETE with the
   optimized metric, pruned -> PRUNED, failed (or no result) -> FAIL with the error.

A sweep killed anywhere leaves trials RUNNING. The next run of the same command tells each from
its folder, or launches it again into the same folder if it had not ended (``settle``): the loop
continues from its checkpoint, and a trial's values never change (Optuna keeps the suggested
ones).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.mnist_lab_optuna._definition import Definition, JobConfigs
from hydra_plugins.mnist_lab_optuna._study import ENDED, OVERRIDES_ATTR, SWEEP_DIR_ATTR, Study
from mnist_lab.core.console import console
from mnist_lab.core.errors import Refused, UserError
from mnist_lab.rundir import layout, records, resume
from mnist_lab.rundir.resume import hydra_value
from mnist_lab.sweeps import trial as job_side


class Trials:
    def __init__(
        self, study: Study, definition: Definition, jobs: JobConfigs, launcher: Launcher
    ) -> None:
        self.study = study
        self.settings = study.settings
        self.definition = definition
        self.jobs = jobs
        self.launcher = launcher
        self.relaunch: list[int] = []  # trials of an earlier run to launch again
        self._asked: dict[int, optuna.trial.Trial] = {}

    def settle(self) -> None:
        """Trials a killed sweep left RUNNING: tell those that ended, relaunch the others."""
        running = self.study.optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in running:
            if not self.study.ours(trial):
                continue
            job_dir = self.settings.job_dir(trial.number)
            info = records.read_run(job_dir) if job_dir.is_dir() else None
            if info is not None and info.status == records.RUNNING:
                raise UserError(
                    f"trial {trial.number} is still running in process {info.pid} ({job_dir}): "
                    "wait for it to end, then run this command again"
                )
            if info is None or info.status == records.INTERRUPTED:
                resume.check_own_files(job_dir)  # before Hydra opens its files again
                self.relaunch.append(trial.number)
            else:
                self._tell(trial.number, info, None)
        if self.relaunch:
            many = len(self.relaunch) > 1
            _say(
                f"resuming the search: trial{'s' if many else ''} "
                f"{', '.join(map(str, self.relaunch))} start{'' if many else 's'} again, from "
                "the last checkpoint"
            )

    def run(self) -> list[list[JobReturn]]:
        """Launch the relaunched trials, then new ones, ``n_jobs`` at a time, until the study
        has ``n_trials``."""
        sweep_dir = self.settings.sweep_dir
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.jobs.config, sweep_dir / layout.MULTIRUN)
        n_jobs = self.settings.n_jobs
        returns: list[list[JobReturn]] = []
        pending = list(self.relaunch)
        while True:
            batch, pending = pending[:n_jobs], pending[n_jobs:]
            while len(batch) < n_jobs and self._counted() < self.settings.n_trials:
                batch.append(self._ask())
            if not batch:
                return returns
            returns.append(self._launch(batch))

    def _counted(self) -> int:
        # Every trial of the study counts, whoever runs it: n_trials is the search's total.
        states = (*ENDED, TrialState.RUNNING)
        return len(self.study.optuna_study.get_trials(deepcopy=False, states=states))

    def _ask(self) -> int:
        trial = self.study.optuna_study.ask()
        # First: a sweep killed from here on finds its trial by this folder.
        trial.set_user_attr(SWEEP_DIR_ATTR, str(self.settings.sweep_dir))
        self._asked[trial.number] = trial
        return trial.number

    def _trial(self, number: int) -> optuna.trial.Trial:
        if number not in self._asked:
            self._asked[number] = optuna.trial.Trial(
                self.study.optuna_study, self.study.trial_id(number)
            )
        return self._asked[number]

    def _launch(self, numbers: list[int]) -> list[JobReturn]:
        space = self.definition.space
        jobs = []
        for number in numbers:
            trial = self._trial(number)
            # For a trial of an earlier run, Optuna returns the values it suggested then.
            overrides = space.overrides({p.name: p.suggest(trial) for p in space.params})
            trial.set_user_attr(OVERRIDES_ATTR, overrides)
            self._check_composes(number, overrides)
            _say(f"trial {number}: {' '.join(o for o in overrides if o not in space.fixed)}")
            jobs.append([*overrides, *self._job_settings(number)])
        returns = list(self.launcher.launch(jobs, initial_job_idx=min(numbers)))
        for number, job_return in zip(numbers, returns, strict=True):
            self._tell(number, records.read_run(self.settings.job_dir(number)), job_return)
        return returns

    def _check_composes(self, number: int, overrides: list[str]) -> None:
        """A combination of values the one-key-at-a-time check could not see (a model key
        with another model) fails its trial, and stops the search: the space needs fixing."""
        problem = self.jobs.problem(overrides)
        if problem is not None:
            self.study.fail(number, problem)
            raise Refused(UserError(f"trial {number} ({' '.join(overrides)}): {problem}"))

    def _job_settings(self, number: int) -> list[str]:
        """Hydra overrides for trial ``number``'s job: its folder, and its trial's address in
        its environment (``hydra.job.env_set`` is applied in the job's own process)."""
        env = {
            job_side.ENV_STORAGE: self.settings.storage_spec,
            job_side.ENV_STUDY: self.settings.name,
            job_side.ENV_TRIAL: str(number),
        }
        return [
            f"hydra.sweep.subdir={number}",
            *(f"++hydra.job.env_set.{key}={hydra_value(value)}" for key, value in env.items()),
        ]

    def _tell(self, number: int, info: records.RunInfo, job_return: JobReturn | None) -> None:
        """Tell the study how trial ``number`` ended, from its job folder."""
        metric = self.definition.metric
        value = None
        if info.status == records.FINISHED:
            value = _finite(records.metric(info.metrics, metric))
            error = None if value is not None else f"{metric} is null in its metrics.json"
        elif info.status == records.PRUNED:
            error = None
        elif info.status == records.FAILED:
            error = info.error or "failed"
        else:
            kind, error = _job_error(job_return)
            # The job raised before it could say so (an import, Hydra's own setup): say it in
            # its folder, where the summary looks.
            if info.status == records.INTERRUPTED and info.dir.is_dir():
                records.write_json(info.dir / layout.ERROR, {"error": error, "type": kind})
            error = f"{kind}: {error}"
        if value is not None:
            self.study.optuna_study.tell(number, value, skip_if_finished=True)
            _say(f"trial {number} finished: {metric} {value:.4f}")
        elif error is None:
            self.study.optuna_study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
            _say(f"trial {number} pruned at step {(info.pruned or {}).get('step')}")
        else:
            self.study.fail(number, error)
            _say(f"trial {number} failed: {error}")


def _say(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


def _finite(value: Any) -> float | None:
    """A metric's value as a float; None where it is missing, not a number, NaN or infinite."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _job_error(job_return: JobReturn | None) -> tuple[str, str]:
    """Why a job that left no result ended: its exception's type and message."""
    # JobReturn.return_value re-raises a job's exception (and prints to stderr): read the field.
    if job_return is not None and job_return.status == JobStatus.FAILED:
        ex = getattr(job_return, "_return_value", None)
        if isinstance(ex, BaseException):
            return type(ex).__name__, " ".join(str(ex).split())
    return "NoResult", "the job ended without a result; see its mnist-lab.log"
