"""The console scripts, one module each: ``mnist-lab`` (run.py), ``mnist-lab-eval`` (eval.py),
``mnist-lab-predict`` (predict.py), ``mnist-lab-data`` (data.py), ``mnist-lab-runs`` (runs.py),
``mnist-lab-ensemble`` (ensemble.py). Each turns errors into exit statuses the same way."""

from __future__ import annotations

import errno
import io
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from mnist_lab.core.console import error_line
from mnist_lab.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from mnist_lab.rundir.interrupts import Interrupted

# No room for the output (a full disk, a quota, a file-size limit): the machine failed, not
# the input, so exit 1 rather than a user error's 2.
EXIT_NO_ROOM = 1
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def run_command(body: Callable[[], Any]) -> None:
    """Run a command's body; a user error is one line and exit 2, an interruption 130/143, no
    room for the output one line and exit 1, a reader gone (``| head``) a quiet exit."""
    try:
        _whole_writes()
        body()
        sys.stdout.flush()  # what is still buffered fails here, where it can be reported
    except UserError as ex:
        error_line(str(ex))
        _flush_or_drop()
        # core.files.replacing's "cannot write <file>: No space left on device"
        sys.exit(EXIT_NO_ROOM if _no_room(ex.__cause__) else EXIT_USER_ERROR)
    except Interrupted as ex:
        sys.exit(ex.exit_status)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # `mnist-lab-runs | head`: the reader has gone. End quietly, as a shell tool would.
        _drop_stdout()
        sys.exit(128 + signal.SIGPIPE)
    except OSError as ex:
        if not _no_room(ex):
            raise
        # Files are written through core.files.replacing (a UserError); this is stdout.
        error_line(f"cannot write {ex.filename or 'the standard output'}: {ex.strerror or ex}")
        _drop_stdout()
        sys.exit(EXIT_NO_ROOM)


def _no_room(ex: BaseException | None) -> bool:
    return isinstance(ex, OSError) and ex.errno in _NO_ROOM


def _whole_writes() -> None:
    """With PYTHONUNBUFFERED (or ``python -u``) stdout's text layer writes straight to the file
    and drops what a short write left (a file-size limit reached mid-line) without an error: a
    buffered writer between them writes the rest, and so raises. Line by line, as before."""
    buffer = getattr(sys.stdout, "buffer", None)
    if not isinstance(buffer, io.FileIO):
        return
    sys.stdout.flush()
    raw = io.FileIO(buffer.fileno(), "w", closefd=False)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=sys.stdout.encoding,
        errors=sys.stdout.errors,
        line_buffering=True,
    )


def _flush_or_drop() -> None:
    """What was printed before an error: written now, or dropped if there is no room for it."""
    try:
        sys.stdout.flush()
    except OSError:
        _drop_stdout()


def _drop_stdout() -> None:
    """After a failed write: stdout to /dev/null, so that Python's own flush at exit does not
    fail once more with a traceback of its own."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
