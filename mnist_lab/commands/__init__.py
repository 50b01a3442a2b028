"""The console scripts, one module each: ``mnist-lab`` (run.py), ``mnist-lab-eval`` (eval.py),
``mnist-lab-predict`` (predict.py), ``mnist-lab-data`` (data.py), ``mnist-lab-runs`` (runs.py),
``mnist-lab-ensemble`` (ensemble.py). Each turns errors into exit statuses the same way."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from mnist_lab.core.console import error_line
from mnist_lab.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from mnist_lab.rundir.interrupts import Interrupted


def run_command(body: Callable[[], Any]) -> None:
    """Run a command's body; a user error is one line and exit 2, an interruption 130/143."""
    try:
        body()
    except UserError as ex:
        error_line(str(ex))
        sys.exit(EXIT_USER_ERROR)
    except Interrupted as ex:
        sys.exit(ex.exit_status)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(EXIT_INTERRUPTED)
