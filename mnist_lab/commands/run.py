"""``mnist-lab``: compose the config with Hydra, check it, run the loop (or a sweep of it).

This module stays light: TensorFlow is imported only once the config is known to be valid,
so ``--help``, ``--cfg job`` and config errors answer in about a second.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.mnist_lab_optuna import expose_to_hydra
from mnist_lab.commands import hydra_callbacks
from mnist_lab.commands.output import guard_stdout, lost_output_status
from mnist_lab.config import register_configs, validate
from mnist_lab.config.user_files import check_user_files
from mnist_lab.core.console import FILE_ONLY, error_line, one_line
from mnist_lab.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    FolderRefused,
    Refused,
    UserError,
)
from mnist_lab.rundir import interrupts, layout, records
from mnist_lab.rundir.interrupts import Interrupted, TrialPruned

log = logging.getLogger("mnist_lab")

# The mode of each job this process ran (Hydra forgets it once the job is over).
_finished_modes: list[RunMode | None] = []

# The config tree (conf/, shipped as mnist_lab.conf) and its root; the Python API uses them too.
CONFIG_PATH = "pkg://mnist_lab.conf"
CONFIG_NAME = "config"

register_configs()
# Our sweeper: Hydra's plugin scan cannot list it through an editable install's import hook.
expose_to_hydra()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def run(cfg: DictConfig) -> Any:
    """One Hydra job: a config in, the run's metrics (or the swept metric) out."""
    return job(cfg)


def job(cfg: DictConfig) -> Any:
    """The task function, shared with ``mnist_lab.run`` (the Python API)."""
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    overrides = list(hydra_config.overrides.task)
    _finished_modes.append(hydra_config.mode)
    if hydra_config.mode == RunMode.MULTIRUN:
        return objective(cfg, sweep_job(cfg, run_dir, overrides))
    from mnist_lab.training.loop import (
        train_and_evaluate,  # TensorFlow is heavy: only for real work
    )

    # The values and the folder were checked before Hydra wrote into it (hydra_callbacks).
    try:
        return objective(cfg, train_and_evaluate(cfg, run_dir, overrides=overrides))
    except UserError as ex:
        # Logged here, in the run's log file; Refused passes through Hydra's job runner, which
        # would otherwise add its own "Error executing job" report.
        log.error("%s", ex, extra=FILE_ONLY)
        if not isinstance(ex, FolderRefused):  # a refused folder is not this run's to mark
            _record_failure(run_dir, ex)
        raise Refused(ex) from None


def sweep_job(cfg: DictConfig, run_dir: Path, overrides: Sequence[str]) -> dict[str, Any] | None:
    """A job of a sweep: never let it stop the others.

    A finished job whose config is this one is reused (the loop shows its results). A failure
    is logged and written to ``error.json`` in the job's folder, where the sweep summary finds
    it; the sweep still runs its other jobs and exits non-zero at the end. A trial the pruner
    stopped has ``pruned.json`` instead. A folder the job may not write (another config's run,
    another process's) stops the whole sweep, as it stops a single run: nothing is written.
    """
    try:
        # Imported here too: a job whose code cannot even load is recorded as failed.
        from mnist_lab.sweeps.trial import pruner_from_environment
        from mnist_lab.training.loop import train_and_evaluate

        validate(cfg)
        return train_and_evaluate(
            cfg,
            run_dir,
            overrides=overrides,
            exact=True,
            pruner=pruner_from_environment(),
            resume_hint=hydra_callbacks.sweep_resume_hint,
        )
    except TrialPruned:
        return None
    except Interrupted:
        if interrupts.sweep_lost:
            # A worker whose sweep was killed: its checkpoint is saved, nobody waits for it.
            logging.shutdown()
            os._exit(EXIT_TERMINATED)
        raise
    except FolderRefused as ex:
        raise Refused(ex) from None
    except Exception as ex:
        if isinstance(ex, UserError):
            log.error("job failed: %s", ex)
        else:
            log.exception("job failed: %s", ex)
        _record_failure(run_dir, ex)
        return None


def _record_failure(run_dir: Path, ex: Exception) -> None:
    """``error.json``: the run failed (diverged, bad data, values that only fail once the data
    is loaded), so every listing says ``failed`` with why, not ``interrupted`` with a resume
    command that would fail again. A rerun removes it (run_record.start)."""
    if records.read_run(run_dir).finished:  # a finished run's folder is not touched
        return
    error = {"error": " ".join(str(ex).split()), "type": type(ex).__name__}
    try:
        records.write_json(run_dir / layout.ERROR, error)
    except UserError as write_error:
        log.error("%s", write_error)


def objective(cfg: DictConfig, metrics: dict[str, Any] | None) -> Any:
    """What Hydra's sweeper sees: the whole metrics, or one number to optimise."""
    if cfg.optimized_metric is None:
        return metrics
    if metrics is None:
        return float("nan")  # a failed or pruned trial
    split, _, name = cfg.optimized_metric.partition(".")
    return metrics[split][name]


def _exit_now(status: int) -> None:
    """End the command with ``status``; a finished single run without TensorFlow's teardown,
    which takes about a second.

    Everything the run wrote is closed by then (summary writers, checkpoints, metrics.json);
    logging and the standard streams are flushed here. Sweeps exit normally: their launchers
    (Ray, joblib) clean up their workers at exit.
    """
    if status != 0 or _finished_modes != [RunMode.RUN]:
        sys.exit(status)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _arguments_with_resolve(argv: list[str]) -> list[str]:
    """``--cfg`` prints the config with its interpolations resolved: the values a run uses
    (trainer.steps_per_execution's, say), not the formulas. Not ``--cfg hydra``: Hydra prints
    its node without the job's keys, and the search's ``sampler.seed: ${seed}`` names one."""
    for i, arg in enumerate(argv):
        if arg.startswith("--cfg="):
            shown = arg.partition("=")[2]
        elif arg in ("--cfg", "-c"):
            shown = argv[i + 1] if i + 1 < len(argv) else ""
        else:
            continue
        if shown != "hydra" and "--resolve" not in argv:
            return [*argv, "--resolve"]
    return argv


def lost_worker(ex: BaseException) -> str | None:
    """What to say when a parallel launcher's worker process died under a job (``kill -9``, the
    OOM killer): joblib ends the whole sweep with its TerminatedWorkerError. None for others."""
    loky = sys.modules.get("joblib.externals.loky.process_executor")
    if loky is None or not isinstance(ex, loky.TerminatedWorkerError):
        return None
    codes = re.search(r"exit codes of the workers are (\{.*?\})", str(ex))
    line = (
        "a worker process of the sweep's launcher died under its job"
        + (f" (exit codes {codes.group(1)})" if codes else "")
        + ": the sweep stopped; its finished jobs are kept and the others continue from their "
        "last checkpoint"
    )
    hint = hydra_callbacks.sweep_resume_hint
    return f"{line}; to resume the sweep: {hint}" if hint else line


def as_user_error(ex: BaseException) -> UserError | None:
    """The one line a user is shown for ``ex``, as a UserError; None when ``ex`` is a bug.

    Shared by the CLI and the Python API, so both say the same thing.
    """
    lost = lost_worker(ex)
    if lost is not None:
        return UserError(lost)
    if isinstance(ex, Refused):
        return ex.error
    if isinstance(ex, UserError):
        return ex
    if isinstance(ex, (HydraException, OmegaConfBaseException)):
        return UserError(one_line(ex))
    # A config file of the user's own (--config-dir) that Hydra could not read.
    if isinstance(ex, yaml.YAMLError):
        return UserError(f"a config file is not valid YAML: {one_line(ex)}")
    if isinstance(ex, UnicodeDecodeError):
        return UserError(f"a config file is not UTF-8 text ({ex.reason} at byte {ex.start})")
    if isinstance(ex, RecursionError):
        return UserError(
            "a config's defaults list includes itself, directly or through another config"
        )
    if isinstance(ex, OSError):
        # An unwritable or full output folder: Hydra's own mkdir or log file, before our code.
        return UserError(f"{ex.filename or ''}: {ex.strerror or ex}")
    if isinstance(ex, ValueError):
        cause = ex.__cause__
        if isinstance(cause, OSError):
            # logging's "Unable to configure handler 'file'": the run's log file cannot be
            # opened (a folder in its place, a full or read-only disk).
            return UserError(f"{cause.filename or ''}: {cause.strerror or cause}")
        if str(ex).startswith(("Only one of", "Config group override")):
            # Hydra's plain ValueErrors: conflicting flags (-m with --cfg), `model=null`.
            return UserError(one_line(ex))
    return None


def main() -> None:
    # The run's results are its folder: output that cannot be printed (a full disk, a file-size
    # limit, a reader gone) is dropped and reported at the end, never the end of the run.
    stdout = guard_stdout()
    try:
        _main()
        status = 0
    except SystemExit as ex:
        if ex.code is not None and not isinstance(ex.code, int):
            raise  # a message for Python to print
        status = ex.code or 0
    _exit_now(lost_output_status(stdout, status))


def _main() -> None:
    # Let exceptions reach us instead of Hydra's reporter, so each user error becomes one line.
    # A user who sets HYDRA_FULL_ERROR themselves still gets the full trace of Hydra's errors.
    wants_trace = "HYDRA_FULL_ERROR" in os.environ
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # A log file that cannot be written (a full disk) must not print logging's own traceback.
    logging.raiseExceptions = False
    sys.argv[1:] = _arguments_with_resolve(sys.argv[1:])
    try:
        check_user_files(sys.argv[1:])
        run()
    except (Interrupted, KeyboardInterrupt) as ex:
        # The loop said where its checkpoint is and how to resume; a sweep says it for itself.
        if hydra_callbacks.sweep_resume_hint:
            print(f"to resume the sweep: {hydra_callbacks.sweep_resume_hint}", file=sys.stderr)
        sys.exit(ex.exit_status if isinstance(ex, Interrupted) else EXIT_INTERRUPTED)
    except (Exception, Refused) as ex:
        error = as_user_error(ex)
        if error is None or (wants_trace and not isinstance(ex, (UserError, Refused))):
            raise
        error_line(str(error))
        # A lost worker is a job that failed, not bad input: a sweep's status 1.
        sys.exit(EXIT_JOB_FAILED if lost_worker(ex) else EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
