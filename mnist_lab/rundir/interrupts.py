"""Stopping a run cleanly: Ctrl-C and SIGTERM (and the search's pruner) ask the loop to stop
after the current compiled call; the loop then saves a checkpoint and raises ``Interrupted``.
A sweep's job in a worker process of the sweep's own (the joblib launcher's) stops the same way
when that process is gone (``kill -9``): nobody would see its results, and its folder's lock
would keep the rerun from continuing it.

A second signal exits at once: TensorFlow's checkpoint state file is replaced atomically, so an
interrupted write is never read as a checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from mnist_lab.core.console import FILE_ONLY

log = logging.getLogger(__name__)

# Set by a sweep's process for the workers it starts: the process that observes their jobs.
SWEEP_PID_ENV = "MNIST_LAB_SWEEP_PID"
# How often a worker looks for its sweep's process (a stop waits for the current steps anyway).
_WATCH_SECONDS = 1.0
# Set once this worker's sweep process was found gone: the worker ends after its checkpoint.
sweep_lost = False


class Interrupted(BaseException):  # noqa: N818 - named for what happened, like KeyboardInterrupt
    """The run stopped on a signal after saving its checkpoint.

    A BaseException, like KeyboardInterrupt: it passes through Hydra's job runner and its
    launchers (which catch Exception), so a signal ends a whole sweep, not only its job.
    """

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports it


class TrialPruned(Exception):  # noqa: N818 - Optuna's name for the same outcome
    """The search's pruner stopped the run; its checkpoint and ``pruned.json`` are saved."""


class StopRequests:
    """Why the loop should stop early, if it should: a signal, or the pruner."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.pruned = False

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.pruned

    def prune(self) -> None:
        self.pruned = True

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """Turn SIGINT and SIGTERM into a stop request for the duration."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be installed from the main thread
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        done = threading.Event()
        sweep_pid = _observing_sweep()
        if sweep_pid is not None:
            watch = (sweep_pid, done)
            threading.Thread(target=self._watch, args=watch, daemon=True).start()
        try:
            yield
        finally:
            done.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self, sweep_pid: int, done: threading.Event) -> None:
        """Stop, as SIGTERM would, once the sweep's process is gone (this one is re-parented)."""
        global sweep_lost
        while not done.wait(_WATCH_SECONDS):
            if os.getppid() != sweep_pid:
                sweep_lost = True
                if self.signum is None:
                    self.signum = signal.SIGTERM
                    log.warning(
                        "the sweep's process %d is gone: stopping after the current steps to "
                        "save a checkpoint",
                        sweep_pid,
                    )
                return

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            name = signal.Signals(signum).name
            log.warning("%s again: exiting now", name, extra=FILE_ONLY)  # the run's log file
            # Straight to the descriptor: this handler may have interrupted a write to the same
            # buffered stream, which Python then refuses to reenter (the line would be lost).
            with suppress(OSError):
                os.write(sys.stderr.fileno(), f"{name} again: exiting now\n".encode())
            with suppress(Exception):
                sys.stdout.flush()
            os._exit(128 + signum)  # nothing half-written is ever read: no cleanup to wait for
        self.signum = signum
        log.warning(
            "%s: stopping after the current steps to save a checkpoint (again to quit at once)",
            signal.Signals(signum).name,
        )


def _observing_sweep() -> int | None:
    """The pid of the sweep's process when this process is a worker it started itself (the
    joblib launcher's); None in the sweep's own process, a single run, Ray or SLURM."""
    try:
        pid = int(os.environ.get(SWEEP_PID_ENV, ""))
    except ValueError:
        return None
    return pid if pid != os.getpid() and pid == os.getppid() else None
