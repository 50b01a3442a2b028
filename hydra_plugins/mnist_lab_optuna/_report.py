"""A search's results: the best trial as a command, and the parameters' importances, printed and
written in the sweep folder (best.json, importances.json). The ranked table follows
(SweepSummary)."""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hydra_plugins.mnist_lab_optuna._definition import Definition
from hydra_plugins.mnist_lab_optuna._study import ENDED, OVERRIDES_ATTR, SWEEP_DIR_ATTR, Study
from mnist_lab.core.console import console
from mnist_lab.rundir import records
from mnist_lab.sweeps import trial as job_side

# Files the search writes in the sweep folder (the study's journal is job_side.JOURNAL).
BEST = "best.json"
IMPORTANCES = "importances.json"


def report(study: Study, definition: Definition) -> None:
    settings = study.settings
    metric = definition.metric
    trials = study.optuna_study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in ENDED}
    lines = [
        f"search: study {settings.name!r}, {len(trials)} trials ("
        + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        + f"); {settings.shown_storage}"
    ]
    # A trial told complete whose folder no longer holds a sound result (its metrics.json was
    # damaged since): the summary calls it interrupted, so it is not the best here either.
    unsound = _unsound(study, finished)
    for number, why in unsound.items():
        lines.append(
            f"trial {number}: complete in the study, but {why}: not ranked; "
            f"`mnist-lab-runs {settings.job_dir(number)}` says how to complete it"
        )
    best = _best(study, definition, [t for t in finished if t.number not in unsound])
    if best["trial"] is None:
        lines.append("best trial: none (no trial finished)")
    else:
        lines += [
            f"best trial ({settings.direction} {metric}): {best['trial']}, "
            f"{metric} {best['value']:.4f}: "
            + " ".join(f"{k}={v}" for k, v in best["params"].items()),
            f"to rerun it alone: {best['command']}",
        ]
    importances = _importances(study, definition, finished)
    if importances["importances"] is None:
        lines.append(f"parameter importances: {importances['note']}")
    else:
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in importances["importances"].items())
        lines.append(
            f"parameter importances for {metric} ({len(finished)} finished trials): " + ranked
        )
    best_file, importances_file = settings.sweep_dir / BEST, settings.sweep_dir / IMPORTANCES
    records.write_json(best_file, best)
    records.write_json(importances_file, importances)
    lines.append(f"search results: {best_file} {importances_file}")
    if not job_side.is_url(settings.storage_spec):
        lines.append(shlex.join(["optuna-dashboard", settings.storage_spec]))
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def _best(
    study: Study, definition: Definition, finished: list[optuna.trial.FrozenTrial]
) -> dict[str, Any]:
    """best.json: the best trial, its values and the command that runs it alone."""
    settings = study.settings
    best: dict[str, Any] = {
        "study": settings.name,
        "storage": settings.shown_storage,
        "optimized_metric": definition.metric,
        "direction": definition.direction,
        "trial": None,
    }
    if not finished:
        return best
    # Optuna's own choice (the first of the best values), among the trials still sound.
    sign = 1 if definition.direction == "maximize" else -1
    trial = max(finished, key=lambda t: (sign * float(t.value or 0.0), -t.number))
    overrides = trial.user_attrs.get(OVERRIDES_ATTR) or definition.space.overrides(trial.params)
    sweep_dir = Path(trial.user_attrs.get(SWEEP_DIR_ATTR, settings.sweep_dir))
    return {
        **best,
        "trial": trial.number,
        "value": trial.value,
        "params": trial.params,
        "overrides": overrides,
        "dir": str(sweep_dir / str(trial.number)),
        # A single run of the same config: the search preset stays (it sets the model, the
        # optimizer and the steps), its multirun mode does not.
        "command": shlex.join(["mnist-lab", *overrides, "hydra.mode=RUN"]),
    }


def _unsound(study: Study, finished: list[optuna.trial.FrozenTrial]) -> dict[int, str]:
    """This folder's complete trials whose job folder is not finished now, and why."""
    unsound = {}
    for trial in finished:
        if not study.ours(trial):
            continue  # another machine's folder: its own search reads it
        info = records.read_run(study.settings.job_dir(trial.number))
        if not info.finished:
            unsound[trial.number] = info.damaged or f"its folder is {info.status}"
    return unsound


def _importances(
    study: Study, definition: Definition, finished: list[optuna.trial.FrozenTrial]
) -> dict[str, Any]:
    """importances.json: how much each parameter mattered, or a note saying why not known."""
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    result: dict[str, Any] = {
        "optimized_metric": definition.metric,
        "direction": definition.direction,
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
                study.optuna_study, evaluator=evaluator
            )
        except (ValueError, RuntimeError) as ex:
            result["note"] = f"cannot be computed: {ex}"
            return result
    result["importances"] = {k: float(v) for k, v in importances.items()}
    if caught:
        result["note"] = " ".join(str(w.message) for w in caught)
    return result
