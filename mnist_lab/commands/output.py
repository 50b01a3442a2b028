"""Standard output when there is no room for it (a full disk, a quota, a file-size limit) or
nobody reads it (``| head``): never a traceback.

A short command whose output is what the user asked for (``mnist-lab-runs``, ``-eval``) stops
at the first failed write (``run_command``). ``mnist-lab``'s results are its run folder and its
console is commentary: ``GuardedStdout`` drops what it cannot print and lets the run finish
its files; the command reports the lost output at its end.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import sys
from typing import Any

from mnist_lab.core.console import error_line

# No room for the output: the machine failed, not the input, so exit 1 rather than a user
# error's 2.
EXIT_NO_ROOM = 1
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def no_room(ex: BaseException | None) -> bool:
    return isinstance(ex, OSError) and ex.errno in _NO_ROOM


def whole_writes() -> None:
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


def flush_or_drop() -> None:
    """What was printed before an error: written now, or dropped if there is no room for it."""
    try:
        sys.stdout.flush()
    except OSError:
        drop_stdout()


def drop_stdout() -> None:
    """After a failed write: stdout to /dev/null, so that Python's own flush at exit does not
    fail once more with a traceback of its own."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class GuardedStdout(io.TextIOBase):
    """``sys.stdout`` that never raises: the first failed write is kept in ``failure``, and
    the rest of the output goes nowhere."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        self._guarded(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call: Any, *args: Any) -> None:
        if self.failure is not None:
            return
        try:
            call(*args)
        except OSError as ex:
            self.failure = ex
            drop_stdout()  # and what is still buffered is flushed to /dev/null at exit

    def fileno(self) -> int:
        return int(self._stream.fileno())

    def isatty(self) -> bool:
        return bool(self._stream.isatty())

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(self._stream.encoding)

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._stream.errors  # type: ignore[no-any-return]


def guard_stdout() -> GuardedStdout:
    whole_writes()
    guarded = GuardedStdout(sys.stdout)
    sys.stdout = guarded
    return guarded


def lost_output_status(stdout: GuardedStdout, status: int) -> int:
    """The exit status once the command is over: its own, or, where it succeeded but its
    output was lost, 1 with one line (no room) or a quiet 141 (the reader went away)."""
    failure = stdout.failure
    if failure is None:
        return status
    if failure.errno == errno.EPIPE:
        return status or 128 + signal.SIGPIPE  # as a shell tool's
    error_line(f"cannot write the standard output: {failure.strerror or failure}")
    return status or EXIT_NO_ROOM
