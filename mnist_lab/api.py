"""``mnist_lab.run(overrides)``: what ``mnist-lab <overrides>`` does, in the calling process.

Hydra is driven the way ``@hydra.main`` drives it (the same config tree, callbacks, logging and
run folder), with ``mnist_lab.commands.run.job`` as the task, so a notebook's run and a shell's
run are the same run. What differs is the end: the metrics come back as a dict, and every
refusal or bad value is raised as a ``UserError`` carrying the line the CLI would print.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mnist_lab.core.errors import Refused, UserError
from mnist_lab.rundir import layout, locks, records


class RunResult(dict[str, Any]):
    """A run's ``metrics.json`` as a dict, with the run folder as ``.dir``."""

    dir: Path


def run(overrides: str | Sequence[str] = ()) -> RunResult:
    """Train and evaluate as ``mnist-lab <overrides>`` would; return the run's metrics.

    The run folder is Hydra's, as on the command line: ``outputs/<date>/<time>/`` below the
    current folder, or ``hydra.run.dir=...``; running into a folder again continues or reuses
    it exactly as the CLI does. Raises ``mnist_lab.UserError`` with the CLI's one-line message;
    an interruption (the kernel's stop button) saves a checkpoint and raises ``Interrupted``.

    >>> metrics = mnist_lab.run(["model=mlp", "data=fake", "trainer.steps=100"])
    >>> metrics["test"]["precision"], metrics.dir
    """
    arguments = [overrides] if isinstance(overrides, str) else [str(o) for o in overrides]
    flags = [a for a in arguments if a.startswith("-")]
    if flags:
        raise UserError(
            f"mnist_lab.run() takes overrides only, not {flags[0]}: sweeps and --cfg are the "
            "command line's (mnist-lab -m ...)"
        )
    # Hydra is imported here: `import mnist_lab` and the listing stay light.
    from hydra.core.global_hydra import GlobalHydra

    from mnist_lab.commands import run as cli

    global_hydra = GlobalHydra.instance()
    # A notebook may hold its own Hydra (hydra.initialize for compose): put it back after.
    previous = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    held_before = locks.holding()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        job = _run_job(cli, arguments)
    except (Exception, Refused) as ex:
        error = cli.as_user_error(ex)
        if error is None:
            raise
        raise error from None
    finally:
        global_hydra.clear()
        if previous is not None:
            global_hydra.initialize(previous)
        # The lock is this process's until it ends; a notebook may want to run there again.
        for folder in locks.holding() - held_before:
            locks.release(folder)
        _restore_logging(root, handlers, level)
    run_dir = Path(job.hydra_cfg.hydra.runtime.output_dir)
    metrics = job.return_value
    if not isinstance(metrics, dict):  # optimized_metric set: the job returned one number
        metrics = records.read_json(run_dir / layout.METRICS) or {}
    result = RunResult(metrics)
    result.dir = run_dir
    return result


def _run_job(cli: ModuleType, arguments: list[str]) -> Any:
    """What ``@hydra.main`` does for a single run, through its internal steps (Hydra < 1.4)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
    )

    calling_file, calling_module = detect_calling_file_or_module_from_task_function(cli.job)
    search_path = create_automatic_config_search_path(calling_file, calling_module, cli.CONFIG_PATH)
    app = Hydra.create_main_hydra2(
        task_name=detect_task_name(calling_file, calling_module), config_search_path=search_path
    )
    # hydra.main adds hydra.mode=RUN when the config does not name a mode, and so does this.
    return app.run(
        config_name=cli.CONFIG_NAME, task_function=cli.job, overrides=[*arguments, "hydra.mode=RUN"]
    )


def _restore_logging(root: logging.Logger, handlers: list[logging.Handler], level: int) -> None:
    """Hydra pointed the root logger at the run's log file: close it, give back the old ones."""
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
