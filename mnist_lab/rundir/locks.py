"""One writer per run folder: an OS lock that the kernel releases when its process ends.

``flock`` on ``<folder>/.lock``: a second process that asks for the folder is refused at once
(``FolderBusyError``, naming the folder and the holder's pid), and nothing is left to clean up
after a crash or ``kill -9``. A process may ask again for a folder it already holds (the CLI
locks the run folder before Hydra writes into it, the loop asks again).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mnist_lab.core.errors import FolderBusyError, UserError
from mnist_lab.rundir.layout import LOCK

try:
    import fcntl
except ImportError:  # Windows: no flock; runs still work, unguarded
    fcntl = None  # type: ignore[assignment]

_held: dict[Path, int] = {}
RETRIES, RETRY_SECONDS = 20, 0.05  # folder -> the open descriptor that holds its lock


def acquire(folder: Path, what: str = "run folder") -> None:
    """Take ``folder``'s lock for this process (creating the folder), or raise FolderBusyError."""
    folder = Path(folder).absolute()
    if folder in _held or fcntl is None:
        return
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: a file, not a folder; expected the {what} (or nothing there)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(folder / LOCK, os.O_RDWR | os.O_CREAT)
    except NotALockFile as ex:
        raise UserError(
            f"{folder / LOCK} is not a file (a link, a FIFO or a device): the lock of a {what} "
            "is a file of mnist-lab's own; remove it, or choose another folder"
        ) from ex
    except OSError as ex:
        raise UserError(f"cannot write in the {what} {folder}: {ex.strerror or ex}") from ex
    # A reader (holder(), which mnist-lab-runs calls on every folder) holds a shared lock for
    # an instant: try a little longer before calling the folder busy.
    for attempt in range(RETRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if attempt < RETRIES - 1:
                time.sleep(RETRY_SECONDS)
    else:
        pid = _read_pid(fd)
        os.close(fd)
        raise FolderBusyError(
            f"{folder} is in use by process {pid or '?'}: one process writes a {what}; wait "
            f"for it to end, or choose another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[folder] = fd


@contextmanager
def held(folder: Path, what: str = "run folder") -> Iterator[None]:
    """Hold ``folder`` for the duration; given back after unless this process already held it."""
    already = Path(folder).absolute() in _held
    acquire(folder, what)
    try:
        yield
    finally:
        if not already:
            release(folder)


def release(folder: Path) -> None:
    """Give the lock back (the process ending does the same)."""
    fd = _held.pop(Path(folder).absolute(), None)
    if fd is not None:
        os.close(fd)


def holding() -> set[Path]:
    """The folders this process holds (absolute paths)."""
    return set(_held)


def holder(folder: Path) -> int | None:
    """The pid of the live process that holds ``folder``, or None when nobody does."""
    folder = Path(folder).absolute()
    if folder in _held:
        return os.getpid()
    if fcntl is None:
        return None
    try:
        fd = _open_lock(folder / LOCK, os.O_RDONLY)
    except OSError:  # none, or not a lock mnist-lab made: nobody holds the folder through it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_pid(fd) or -1
    else:
        return None
    finally:
        os.close(fd)  # closing also drops a lock taken here


class NotALockFile(OSError):
    """Something other than a regular file where the lock file belongs."""


def _open_lock(path: Path, flags: int) -> int:
    """Open a lock file without following a link (a write through it would land elsewhere) or
    blocking on a FIFO; NotALockFile for anything but a regular file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as ex:
        if ex.errno == errno.ELOOP:  # O_NOFOLLOW's answer for a link
            raise NotALockFile(path) from ex
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotALockFile(path)
    return fd


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
