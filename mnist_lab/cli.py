"""The ``mnist-lab`` console script: compose the config with Hydra, check it, train.

This module stays light: TensorFlow is imported only once the config is known to be valid,
so ``--help``, ``--cfg job`` and config errors answer in about a second.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mnist_lab.config import register_configs, validate
from mnist_lab.console import FILE_ONLY, error_line
from mnist_lab.errors import EXIT_USER_ERROR, UserError

log = logging.getLogger("mnist_lab")

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# The mode of each job this process ran (Hydra forgets it once the job is over).
_finished_modes: list[RunMode | None] = []

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def run(cfg: DictConfig) -> Any:
    """One Hydra job: a validated config in, the run's metrics (or the swept metric) out."""
    validate(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _finished_modes.append(HydraConfig.get().mode)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return objective(cfg, sweep_job(cfg, run_dir))
    try:
        return objective(cfg, train(cfg, run_dir))
    except UserError as ex:
        # Report it here: Hydra would first add its own "Error executing job" line, and the
        # message belongs in the run's log file too. SystemExit passes through Hydra untouched.
        log.error("%s", ex, extra=FILE_ONLY)
        error_line(str(ex))
        raise SystemExit(EXIT_USER_ERROR) from None


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from mnist_lab.train import train as train_run  # TensorFlow is heavy: only for real work

    return train_run(cfg, run_dir)


def sweep_job(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """A job of a sweep: skip it if it already finished, and never let it stop the others.

    A failure is logged and written to ``error.json`` in the job's directory, where the sweep
    summary finds it; the sweep still runs its other jobs and exits non-zero at the end.
    """
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        log.info("already finished, skipping: %s", metrics_file)
        return json.loads(metrics_file.read_text())
    try:
        return train(cfg, run_dir)
    except Exception as ex:
        if isinstance(ex, UserError):
            log.error("job failed: %s", ex)
        else:
            log.exception("job failed: %s", ex)
        error = {"error": " ".join(str(ex).split()), "type": type(ex).__name__}
        (run_dir / "error.json").write_text(json.dumps(error) + "\n")
        return None


def objective(cfg: DictConfig, metrics: dict[str, Any] | None) -> Any:
    """What Hydra's sweeper sees: the whole metrics, or one number to optimise."""
    if cfg.optimized_metric is None:
        return metrics
    if metrics is None:
        return float("nan")  # a failed trial; Optuna records it as failed
    split, _, name = cfg.optimized_metric.partition(".")
    return metrics[split][name]


# OmegaConf's detail lines: the message above them already names the key.
_NOISE = ("full_key:", "reference_type", "object_type")


def _one_line(ex: BaseException) -> str:
    """Squeeze Hydra's and OmegaConf's multi-line messages into one readable line."""
    parts: list[str] = []
    for e in (ex, ex.__cause__):
        if e is None or (parts and str(e) in parts[0]):
            continue
        text = str(e).split("Config search path")[0]
        keep = [
            line.strip().rstrip(".")
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith(_NOISE)
        ]
        parts.append(" ".join(keep))
    return ": ".join(parts)


def _exit_now() -> None:
    """End a finished single run without TensorFlow's teardown, which takes about a second.

    Everything the run wrote is closed by then (summary writers, checkpoints, metrics.json);
    logging and the standard streams are flushed here. Sweeps exit normally: their launchers
    (Ray, joblib) clean up their workers at exit.
    """
    if _finished_modes != [RunMode.RUN]:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    # Let exceptions reach us instead of Hydra's reporter, so each user error becomes one line.
    # A user who sets HYDRA_FULL_ERROR themselves still gets the full trace.
    wants_trace = "HYDRA_FULL_ERROR" in os.environ
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run()
    except UserError as ex:
        error_line(str(ex))
        sys.exit(EXIT_USER_ERROR)
    except (HydraException, OmegaConfBaseException) as ex:
        if wants_trace:
            raise
        error_line(_one_line(ex))
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        # Ctrl-C outside training (loading data, the final evaluation); during training the
        # checkpoint handler saves and exits 130 itself.
        error_line("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except OSError as ex:
        if wants_trace:
            raise
        # An unwritable or full output folder: Hydra's own mkdir or log file, before our code.
        error_line(f"{ex.filename or ''}: {ex.strerror or ex}")
        sys.exit(EXIT_USER_ERROR)
    except ValueError as ex:
        # Hydra's check of conflicting flags (-m with --cfg) raises a plain ValueError.
        if wants_trace or not str(ex).startswith("Only one of"):
            raise
        error_line(str(ex))
        sys.exit(EXIT_USER_ERROR)
    _exit_now()


if __name__ == "__main__":
    main()
