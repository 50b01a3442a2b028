"""Real servers for the tests (SLURM's daemons, MariaDB, PostgreSQL): find their binaries, start
them in the foreground, wait until they answer, and stop exactly the processes started here, by
pid, nothing found by name.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

# Debian puts daemons in sbin (not on a normal user's PATH) and PostgreSQL's programs in a
# versioned folder.
SEARCH = ["/usr/sbin", "/sbin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]


def which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((f"{d}/{name}" for d in SEARCH if os.access(f"{d}/{name}", os.X_OK)), None)


def require(names: list[str], what: str, install: str) -> dict[str, str]:
    """The binaries' paths; skip when one is missing, fail instead in CI (``CI=true``)."""
    paths = {name: which(name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        skip_or_fail(f"{what} need {', '.join(missing)}: {install}")
    return {name: str(path) for name, path in paths.items()}


def require_module(name: str, install: str) -> None:
    """Skip without the Python module ``name``; fail instead in CI."""
    try:
        __import__(name)
    except ImportError:
        skip_or_fail(f"these tests need {name}: {install}")


def skip_or_fail(reason: str) -> None:
    """Skip a test whose servers or modules are missing here; in CI (``CI=true``) fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run these tests, not skip them)", pytrace=False)
    pytest.skip(reason)


def start(
    command: list[str],
    log: Path,
    stack: ExitStack,
    env: dict[str, str] | None = None,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
) -> subprocess.Popen:
    """Start one daemon in the foreground, output to ``log``; ``stack`` stops it."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            user=user,
        )
    stack.callback(stop, proc, signum=stop_signal)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 30, signum: int = signal.SIGTERM) -> None:
    """End a daemon started by ``start``, by its pid: ``signum``, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signum)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else f"(no {log})"


def wait_for(
    ready: Callable[[], bool],
    what: str,
    log: Path,
    procs: tuple[subprocess.Popen, ...] = (),
    timeout: float = 90,
) -> None:
    """Poll ``ready`` until it holds; fail with ``log``'s end if a daemon exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{what}: {proc.args[0]} exited:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready in {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.2)
