"""The search behind OptunaSweeper: its study, its trials and their job folders.

A trial's life:

1. ask: Optuna creates trial N (RUNNING), which records the sweep folder; the sampler suggests
   its values;
2. launch: a Hydra job with those values as overrides, in ``<sweep dir>/N/``, told its study and
   trial through the environment (``mnist_lab.sweeps.trial`` reports every evaluation and asks
   whether to prune);
3. tell: what the job folder holds (``records.read_run``) decides: finished -> COMPLETE with the
   optimized metric, pruned -> PRUNED, failed (or no result) -> FAIL with the error.

A sweep killed anywhere leaves trials RUNNING. The next run of the same command tells each from
its folder, or launches it again into the same folder if it had not ended: the loop continues
from its checkpoint, and a trial's values never change (Optuna keeps the suggested ones).
"""

from __future__ import annotations

import math
import shlex
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.trial import TrialState

from hydra_plugins.mnist_lab_optuna._space import Space, parse
from mnist_lab.config import validate
from mnist_lab.core.console import console, one_line
from mnist_lab.core.errors import Refused, UserError
from mnist_lab.rundir import layout, locks, records
from mnist_lab.rundir.resume import hydra_value
from mnist_lab.sweeps import trial as job_side

# Files the search writes in the sweep folder (the study's journal is job_side.JOURNAL).
BEST = "best.json"
IMPORTANCES = "importances.json"

# A trial's user attrs.
SWEEP_DIR_ATTR = "sweep_dir"
OVERRIDES_ATTR = "overrides"
ERROR_ATTR = "error"

SAMPLERS = ("tpe", "random")
DIRECTIONS = ("maximize", "minimize")
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class Search:
    def __init__(self, config: DictConfig, hydra_context: HydraContext, launcher: Launcher) -> None:
        # The settings resolved in the whole config: sampler.seed is ${seed}, a key outside.
        resolved = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
        assert isinstance(resolved, dict)
        self.settings: dict[str, Any] = {str(k): v for k, v in resolved.items()}
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = launcher
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.name = str(self.settings["study_name"])
        self.direction = str(self.settings["direction"])
        self.n_trials = int(self.settings["n_trials"])
        self.n_jobs = int(self.settings["n_jobs"])
        setting = self.settings.get("storage") or None
        # The study lives in the sweep folder unless the user names another storage.
        self.own_storage = setting is None
        if setting is None:
            self.storage_spec = str(self.sweep_dir / job_side.JOURNAL)
        elif job_side.is_url(str(setting)):
            self.storage_spec = str(setting)
        else:
            self.storage_spec = str(Path(str(setting)).expanduser().absolute())
        self.metric = ""
        self.space = Space(params=[], fixed=[])
        self.relaunch: list[int] = []  # trials of an earlier run to launch again
        self._trials: dict[int, optuna.trial.Trial] = {}

    # ------------------------------------------------------------ before any trial

    def prepare(self, arguments: list[str]) -> None:
        """Check the settings and the space, open the study, settle an earlier run's trials:
        anything refused here is one ``error:`` line and exit 2, before any trial starts."""
        job_side.quiet_optuna()
        try:
            self._check_settings()
            self._parse_and_check_space(arguments)
            # One search a folder: the CLI's callback leaves this lock to the search.
            locks.acquire(self.sweep_dir, "sweep folder")
            self._open_study()
            self._settle_earlier_trials()
        except UserError as ex:
            raise Refused(ex) from None
        except (HydraException, OmegaConfBaseException) as ex:
            raise Refused(UserError(one_line(ex))) from None

    def _check_settings(self) -> None:
        s = self.settings
        if self.direction not in DIRECTIONS:
            _refuse("hydra.sweeper.direction", self.direction, "maximize or minimize")
        if self.n_trials < 1:
            _refuse("hydra.sweeper.n_trials", self.n_trials, "at least 1")
        if self.n_jobs < 1:
            _refuse("hydra.sweeper.n_jobs", self.n_jobs, "at least 1")
        sampler = s.get("sampler") or {}
        if sampler.get("name") not in SAMPLERS:
            _refuse("hydra.sweeper.sampler.name", sampler.get("name"), " or ".join(SAMPLERS))
        if s.get("pruner") not in job_side.PRUNERS:
            _refuse("hydra.sweeper.pruner", s.get("pruner"), ", ".join(job_side.PRUNERS))

    def _parse_and_check_space(self, arguments: list[str]) -> None:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        params = self.settings.get("params")
        # The config without the searched values: its checks, its metric, its integer keys.
        fixed = parse(params, arguments, parser).fixed
        base = self._compose(fixed)
        validate(base)
        metric = base.get("optimized_metric")
        if metric is None:
            raise UserError(
                "optimized_metric is null: a search needs the metric it optimises, e.g. "
                "optimized_metric=validation.precision (hparams_search=optuna sets it)"
            )
        self.metric = str(metric)
        wrong = "minimize" if self.metric.endswith("precision") else "maximize"
        if self.direction == wrong:
            raise UserError(
                f"hydra.sweeper.direction={wrong} with optimized_metric={self.metric}: this "
                f"search would look for the worst trials; use hydra.sweeper.direction="
                f"{'maximize' if wrong == 'minimize' else 'minimize'}"
            )
        self.space = parse(params, arguments, parser, base)
        if not self.space.params:
            raise UserError(
                "the search space is empty: give hydra.sweeper.params, or a sweep on the "
                "command line such as 'optimizer.lr=tag(log, interval(1e-4, 0.1))'"
            )
        # Every choice and both bounds of each range, one key at a time: a bad value (a
        # negative learning rate, a key the model does not have) stops the search here.
        for param in self.space.params:
            for value in param.extremes():
                try:
                    validate(self._compose([*self.space.fixed, param.override(value)]))
                except UserError as ex:
                    raise UserError(f"in the search space, {param.text}: {ex}") from None
                except (HydraException, OmegaConfBaseException) as ex:
                    raise UserError(f"in the search space, {param.text}: {one_line(ex)}") from None

    def _compose(self, overrides: list[str]) -> DictConfig:
        """A job's config, as the launcher will compose it."""
        return self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides)
        )

    def _open_study(self) -> None:
        if self.own_storage:
            _repair_journal(Path(self.storage_spec))
        self.storage = job_side.open_storage(self.storage_spec)
        studies = {s.study_name: s for s in self.storage.get_all_studies()}
        others = sorted(set(studies) - {self.name})
        if self.own_storage and others:
            raise UserError(
                f"{self.sweep_dir} holds the study {others[0]!r}, not {self.name!r} "
                "(hydra.sweeper.study_name): run that search to resume it, or choose a new "
                "hydra.sweep.dir"
            )
        pruner = job_side.make_pruner(self._pruner_settings())
        if self.name in studies:
            # Loaded, not created with load_if_exists: a refused rerun must not write a line.
            study_id = self.storage.get_study_id_from_name(self.name)
            before = len(self.storage.get_all_trials(study_id, deepcopy=False))
            self.study = optuna.load_study(
                study_name=self.name,
                storage=self.storage,
                sampler=self._sampler(before),
                pruner=pruner,
            )
        else:
            self._check_folders([])  # before the study exists: a refusal writes nothing
            self.study = optuna.create_study(
                storage=self.storage,
                study_name=self.name,
                direction=optuna.study.StudyDirection[self.direction.upper()],
                sampler=self._sampler(0),
                pruner=pruner,
                load_if_exists=True,  # another machine may create it at the same moment
            )
        self.study_id = self.storage.get_study_id_from_name(self.name)
        self._check_same_search()
        self._check_folders(self.study.get_trials(deepcopy=False))
        # Not part of what defines the search: a rerun may prune otherwise. Its jobs read it.
        self.study.set_user_attr(job_side.PRUNER_ATTR, self._pruner_settings())

    def _sampler(self, trials_before: int) -> optuna.samplers.BaseSampler:
        settings = self.settings["sampler"]
        seed = settings.get("seed")
        # A resumed search must not draw its first random points again: its seed moves on
        # by the trials it already has.
        if seed is not None:
            seed = int(seed) + trials_before
        if settings["name"] == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=int(settings["n_startup_trials"])
        )

    def _pruner_settings(self) -> dict[str, Any]:
        name = self.settings["pruner"]
        return {"name": name, **(self.settings.get(f"{name}_pruner") or {})}

    def _definition(self) -> dict[str, Any]:
        return {
            job_side.METRIC_ATTR: self.metric,  # what every trial reports to the pruner
            "direction": self.direction,
            "space": self.space.as_record(),
            "fixed_overrides": sorted(self.space.fixed),
            "space_text": {p.name: p.text for p in self.space.params},
        }

    def _check_same_search(self) -> None:
        """Refuse to mix two searches in one study: a rerun must be the same search."""
        wanted = self._definition()
        recorded = self.study.user_attrs
        if "space" not in recorded:
            if self.study.get_trials(deepcopy=False):
                raise UserError(
                    f"the study {self.name!r} in {self.storage_spec} was not started by "
                    "mnist-lab: choose another hydra.sweeper.study_name or hydra.sweep.dir"
                )
            # "space" marks a defined search: written last, so a kill between these writes
            # leaves a study that the next run defines again rather than one it refuses.
            for key, value in sorted(wanted.items(), key=lambda item: item[0] == "space"):
                self.study.set_user_attr(key, value)
        difference = _difference(recorded, wanted) if "space" in recorded else None
        if difference:
            where = (
                str(self.sweep_dir)
                if self.own_storage
                else f"the study {self.name!r} in {self.storage_spec}"
            )
            raise UserError(
                f"{where} holds another search: {difference}; run the same search to resume it "
                "(hydra.sweeper.n_trials may change), or choose a new hydra.sweep.dir"
            )

    def _ours(self, trial: optuna.trial.FrozenTrial) -> bool:
        # A study in a shared storage has trials of other sweep folders (other machines).
        return self.own_storage or trial.user_attrs.get(SWEEP_DIR_ATTR) in (
            None,
            str(self.sweep_dir),
        )

    def _check_folders(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """A job folder the study does not know would be overwritten by a new trial."""
        if not self.sweep_dir.is_dir():
            return
        ours = {t.number for t in trials if self._ours(t)}
        strangers = sorted(
            d.name
            for d in self.sweep_dir.iterdir()
            if (d / layout.HYDRA).is_dir() and not (d.name.isdigit() and int(d.name) in ours)
        )
        if strangers:
            raise UserError(
                f"{self.sweep_dir} holds job folders that are not trials of this search "
                f"({', '.join(strangers[:3])}{' ...' if len(strangers) > 3 else ''}): choose a "
                "new hydra.sweep.dir"
            )

    def _settle_earlier_trials(self) -> None:
        """Trials a killed sweep left RUNNING: tell those that ended, relaunch the others."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not self._ours(trial):
                continue
            job_dir = self._job_dir(trial.number)
            info = records.read_run(job_dir) if job_dir.is_dir() else None
            if info is not None and info.status == records.RUNNING:
                raise UserError(
                    f"trial {trial.number} is still running in process {info.pid} ({job_dir}): "
                    "wait for it to end, then run this command again"
                )
            if info is None or info.status == records.INTERRUPTED:
                self.relaunch.append(trial.number)
            else:
                self._tell(trial.number, info, None)
        if self.relaunch:
            many = len(self.relaunch) > 1
            console.print(
                f"resuming the search: trial{'s' if many else ''} "
                f"{', '.join(map(str, self.relaunch))} start{'' if many else 's'} again, from "
                "the last checkpoint",
                markup=False,
                soft_wrap=True,
            )

    # ------------------------------------------------------------ the trials

    def run(self) -> list[list[JobReturn]]:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / layout.MULTIRUN)
        returns: list[list[JobReturn]] = []
        pending = list(self.relaunch)
        while True:
            batch, pending = pending[: self.n_jobs], pending[self.n_jobs :]
            while len(batch) < self.n_jobs and self._counted() < self.n_trials:
                batch.append(self._ask())
            if not batch:
                return returns
            returns.append(self._launch(batch))

    def _counted(self) -> int:
        # Every trial of the study counts, whoever runs it: n_trials is the search's total.
        states = (*ENDED, TrialState.RUNNING)
        return len(self.study.get_trials(deepcopy=False, states=states))

    def _ask(self) -> int:
        trial = self.study.ask()
        # First: a sweep killed from here on finds its trial by this folder.
        trial.set_user_attr(SWEEP_DIR_ATTR, str(self.sweep_dir))
        self._trials[trial.number] = trial
        return trial.number

    def _trial(self, number: int) -> optuna.trial.Trial:
        if number not in self._trials:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
            self._trials[number] = optuna.trial.Trial(self.study, trial_id)
        return self._trials[number]

    def _job_dir(self, number: int) -> Path:
        return self.sweep_dir / str(number)

    def _launch(self, numbers: list[int]) -> list[JobReturn]:
        jobs = []
        for number in numbers:
            trial = self._trial(number)
            # For a trial of an earlier run, Optuna returns the values it suggested then.
            overrides = self.space.overrides({p.name: p.suggest(trial) for p in self.space.params})
            trial.set_user_attr(OVERRIDES_ATTR, overrides)
            self._check_composes(number, overrides)
            console.print(
                f"trial {number}: {' '.join(o for o in overrides if o not in self.space.fixed)}",
                markup=False,
                soft_wrap=True,
            )
            jobs.append([*overrides, *self._job_settings(number)])
        returns = list(self.launcher.launch(jobs, initial_job_idx=min(numbers)))
        for number, job_return in zip(numbers, returns, strict=True):
            self._tell(number, records.read_run(self._job_dir(number)), job_return)
        return returns

    def _check_composes(self, number: int, overrides: list[str]) -> None:
        """A combination of values the one-key-at-a-time check could not see (a model key
        with another model) fails its trial, and stops the search: the space needs fixing."""
        try:
            validate(self._compose(overrides))
        except (UserError, HydraException, OmegaConfBaseException) as ex:
            message = str(ex) if isinstance(ex, UserError) else one_line(ex)
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
            self.storage.set_trial_user_attr(trial_id, ERROR_ATTR, message)
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            raise Refused(UserError(f"trial {number} ({' '.join(overrides)}): {message}")) from None

    def _job_settings(self, number: int) -> list[str]:
        """Hydra overrides for trial ``number``'s job: its folder, and its trial's address in
        its environment (``hydra.job.env_set`` is applied in the job's own process)."""
        env = {
            job_side.ENV_STORAGE: self.storage_spec,
            job_side.ENV_STUDY: self.name,
            job_side.ENV_TRIAL: str(number),
        }
        return [
            f"hydra.sweep.subdir={number}",
            *(f"++hydra.job.env_set.{key}={hydra_value(value)}" for key, value in env.items()),
        ]

    def _tell(self, number: int, info: records.RunInfo, job_return: JobReturn | None) -> None:
        """Tell the study how trial ``number`` ended, from its job folder."""
        value = None
        if info.status == records.FINISHED:
            value = _metric(info.metrics or {}, self.metric)
            error = None if value is not None else f"{self.metric} is null in its metrics.json"
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
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        if value is not None:
            self.study.tell(number, value, skip_if_finished=True)
            line = f"trial {number} finished: {self.metric} {value:.4f}"
        elif error is None:
            self.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
            step = (info.pruned or {}).get("step")
            line = f"trial {number} pruned at step {step}"
        else:
            self.storage.set_trial_user_attr(trial_id, ERROR_ATTR, error)
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            line = f"trial {number} failed: {error}"
        console.print(line, markup=False, soft_wrap=True)

    # ------------------------------------------------------------ the results

    def report(self) -> None:
        """The best trial as a command, and the parameters' importances: printed and written
        (best.json, importances.json). The ranked table follows (SweepSummary)."""
        trials = self.study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state == TrialState.COMPLETE]
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in ENDED}
        lines = [
            f"search: study {self.name!r}, {len(trials)} trials ("
            + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
            + f"); {self.storage_spec}"
        ]
        best = self._best(finished)
        if best["trial"] is None:
            lines.append("best trial: none (no trial finished)")
        else:
            lines += [
                f"best trial ({self.direction} {self.metric}): {best['trial']}, "
                f"{self.metric} {best['value']:.4f}: "
                + " ".join(f"{k}={v}" for k, v in best["params"].items()),
                f"to rerun it alone: {best['command']}",
            ]
        importances = self._importances(finished)
        if importances["importances"] is None:
            lines.append(f"parameter importances: {importances['note']}")
        else:
            ranked = ", ".join(f"{k} {v:.2f}" for k, v in importances["importances"].items())
            lines.append(
                f"parameter importances for {self.metric} ({len(finished)} finished trials): "
                + ranked
            )
        records.write_json(self.sweep_dir / BEST, best)
        records.write_json(self.sweep_dir / IMPORTANCES, importances)
        lines.append(f"search results: {self.sweep_dir / BEST} {self.sweep_dir / IMPORTANCES}")
        if not job_side.is_url(self.storage_spec):
            lines.append(shlex.join(["optuna-dashboard", self.storage_spec]))
        for line in lines:
            console.print(line, markup=False, soft_wrap=True)

    def _best(self, finished: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
        best: dict[str, Any] = {
            "study": self.name,
            "storage": self.storage_spec,
            "optimized_metric": self.metric,
            "direction": self.direction,
            "trial": None,
        }
        if not finished:
            return best
        trial = self.study.best_trial
        overrides = trial.user_attrs.get(OVERRIDES_ATTR) or self.space.overrides(trial.params)
        return {
            **best,
            "trial": trial.number,
            "value": trial.value,
            "params": trial.params,
            "overrides": overrides,
            "dir": str(
                Path(trial.user_attrs.get(SWEEP_DIR_ATTR, self.sweep_dir)) / str(trial.number)
            ),
            # A single run of the same config: the search preset stays (it sets the model,
            # the optimizer and the steps), its multirun mode does not.
            "command": shlex.join(["mnist-lab", *overrides, "hydra.mode=RUN"]),
        }

    def _importances(self, finished: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        result: dict[str, Any] = {
            "optimized_metric": self.metric,
            "direction": self.direction,
            "evaluator": type(evaluator).__name__,
            "finished_trials": len(finished),
            "importances": None,
            "note": None,
        }
        if len(finished) < 2:
            result["note"] = f"need at least 2 finished trials (have {len(finished)})"
            return result
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                importances = optuna.importance.get_param_importances(
                    self.study, evaluator=evaluator
                )
            except (ValueError, RuntimeError) as ex:
                result["note"] = f"cannot be computed: {ex}"
                return result
        result["importances"] = {k: float(v) for k, v in importances.items()}
        if caught:
            result["note"] = " ".join(str(w.message) for w in caught)
        return result


def _refuse(key: str, value: Any, expected: str) -> None:
    raise UserError(f"{key}={value!r} is not valid: expected {expected}")


def _metric(metrics: dict[str, Any], metric: str) -> float | None:
    split, _, name = metric.partition(".")
    value = (metrics.get(split) or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _job_error(job_return: JobReturn | None) -> tuple[str, str]:
    """Why a job that left no result ended: its exception's type and message."""
    # JobReturn.return_value re-raises a job's exception (and prints to stderr): read the field.
    if job_return is not None and job_return.status == JobStatus.FAILED:
        ex = getattr(job_return, "_return_value", None)
        if isinstance(ex, BaseException):
            return type(ex).__name__, " ".join(str(ex).split())
    return "NoResult", "the job ended without a result; see its mnist-lab.log"


def _difference(recorded: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """The first way the recorded search differs from the wanted one, in words."""
    for key in (job_side.METRIC_ATTR, "direction"):
        if recorded.get(key) != wanted[key]:
            name = "hydra.sweeper.direction" if key == "direction" else key
            return f"{name} was {recorded.get(key)!r}, now {wanted[key]!r}"
    old_space, new_space = recorded.get("space") or {}, wanted["space"]
    old_text, new_text = recorded.get("space_text") or {}, wanted["space_text"]
    for key in sorted(old_space.keys() | new_space.keys()):
        if key not in new_space:
            return f"{key} is not searched now (it was: {old_text.get(key, key)})"
        if key not in old_space:
            return f"{new_text[key]} is searched now (it was not)"
        if old_space[key] != new_space[key]:
            return f"the search space had {old_text.get(key, key)}, now {new_text[key]}"
    old_fixed, new_fixed = (
        set(recorded.get("fixed_overrides") or []),
        set(wanted["fixed_overrides"]),
    )
    if old_fixed != new_fixed:
        was = " ".join(sorted(old_fixed - new_fixed)) or "nothing"
        now = " ".join(sorted(new_fixed - old_fixed)) or "nothing"
        return f"the other overrides had {was}, now {now}"
    return None


def _repair_journal(path: Path) -> None:
    """A kill during a write can leave half a line at the end of the journal; Optuna would
    refuse the file once another line follows it. Cut it: that change never happened."""
    try:
        with path.open("rb+") as f:
            size = f.seek(0, 2)
            if size == 0 or (f.seek(size - 1) >= 0 and f.read(1) == b"\n"):
                return
            f.seek(0)
            data = f.read()
            f.truncate(data.rfind(b"\n") + 1)
        console.print(f"{path}: dropped an unfinished last line (a killed write)", markup=False)
    except FileNotFoundError:
        return
    except OSError as ex:
        raise UserError(f"cannot read the study journal {path}: {ex.strerror or ex}") from ex
