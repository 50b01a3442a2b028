"""All console output: one rich Console, rich log lines on a terminal, plain lines otherwise."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

console = Console(highlight=False)

# ``log.error(..., extra=FILE_ONLY)``: for the run's log file only, when the same message is
# shown on the console another way (the one-line ``error:`` on stderr).
FILE_ONLY = {"file_only": True}


class RichLogHandler(RichHandler):
    """Hydra's console log handler (see conf/hydra/job_logging/rich.yaml).

    On a terminal it is rich's handler, sharing the Console with the progress bar so the two
    never garble each other. In a pipe or a file rich would wrap lines at 80 columns, so there
    it writes each record as one plain line.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level, console=console, show_path=False, markup=False)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):
            return
        if self.console.is_terminal:
            super().emit(record)
            return
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def error_line(message: str) -> None:
    """Print a user error as exactly one line on stderr (no markup: the text is the user's)."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
