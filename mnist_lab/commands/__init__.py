"""The console scripts, one module each: ``mnist-lab`` (run.py), ``mnist-lab-eval`` (eval.py),
``mnist-lab-predict`` (predict.py), ``mnist-lab-data`` (data.py), ``mnist-lab-runs`` (runs.py),
``mnist-lab-ensemble`` (ensemble.py). Each turns errors into exit statuses the same way."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

from mnist_lab.commands.output import (
    EXIT_NO_ROOM,
    drop_stdout,
    flush_or_drop,
    no_room,
    whole_writes,
)
from mnist_lab.core.console import error_line
from mnist_lab.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from mnist_lab.rundir.interrupts import Interrupted


def run_command(body: Callable[[], Any]) -> None:
    """Run a command's body; a user error is one line and exit 2, an interruption 130/143, no
    room for the output one line and exit 1, a reader gone (``| head``) a quiet exit."""
    try:
        whole_writes()
        body()
        sys.stdout.flush()  # what is still buffered fails here, where it can be reported
    except UserError as ex:
        error_line(str(ex))
        flush_or_drop()
        # core.files.replacing's "cannot write <file>: No space left on device"
        sys.exit(EXIT_NO_ROOM if no_room(ex.__cause__) else EXIT_USER_ERROR)
    except Interrupted as ex:
        sys.exit(ex.exit_status)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `mnist-lab-runs | head`: the reader has gone. End quietly, as a shell tool would.
        drop_stdout()
        sys.exit(128 + signal.SIGPIPE)
    except OSError as ex:
        if not no_room(ex):
            raise
        # Files are written through core.files.replacing (a UserError); this is stdout.
        error_line(f"cannot write {ex.filename or 'the standard output'}: {ex.strerror or ex}")
        drop_stdout()
        sys.exit(EXIT_NO_ROOM)
