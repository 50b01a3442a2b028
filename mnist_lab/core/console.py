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


# OmegaConf's detail lines about types: noise. Its "full_key: x" is kept as "(at x)" when the
# message does not name the key itself (`Interpolation key 'oops' not found`, for `seed`).
_NOISE = ("reference_type", "object_type")


def one_line(ex: BaseException) -> str:
    """Squeeze Hydra's and OmegaConf's multi-line messages into one readable line."""
    parts: list[str] = []
    for e in (ex, ex.__cause__):
        if e is None or (parts and str(e) in parts[0]):
            continue
        text = str(e).split("Config search path")[0]
        keep, key = [], ""
        for line in (line.strip() for line in text.splitlines()):
            if line.startswith("full_key:"):
                key = line.removeprefix("full_key:").strip()
            elif line and not line.startswith(_NOISE):
                keep.append(line.rstrip("."))
        message = " ".join(keep)
        if key and key not in message:
            message += f" (at {key})"
        parts.append(message)
    return ": ".join(parts)
