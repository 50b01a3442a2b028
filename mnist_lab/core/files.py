"""Writing a file atomically: a reader (or a rerun after a kill) sees the old file or the new
one, never half of one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from mnist_lab.core.errors import UserError


@contextmanager
def replacing(path: Path, temp: Path | None = None, *, user_error: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; once written, it replaces ``path``.

    The temporary file never outlives a failure, Ctrl-C included. It is ``.<stem>.tmp<suffix>``
    unless named (numpy and Keras insist on their suffix); one name per target, so a rerun
    after a kill writes over what the kill left. An OSError becomes
    ``UserError("cannot write <path>: <reason>")`` unless ``user_error`` is false.
    """
    tmp = temp or path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as ex:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if user_error and isinstance(ex, OSError):
            raise UserError(f"cannot write {path}: {ex.strerror or ex}") from ex
        raise
