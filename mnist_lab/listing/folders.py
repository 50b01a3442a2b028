"""Finding run folders below the folders a user names.

A **run folder** is a folder with ``.hydra/`` or ``checkpoints/``: a single run or a job of a
sweep. Folders are searched below the ones named, without entering a run folder's own
subfolders, hidden folders or symbolic links.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mnist_lab.core.errors import UserError
from mnist_lab.rundir import layout


def is_run_folder(folder: Path) -> bool:
    return (folder / layout.HYDRA).is_dir() or (folder / layout.CHECKPOINTS).is_dir()


def find(folders: Iterable[Path]) -> Iterator[tuple[Path, Path | None]]:
    """Each run folder below ``folders`` (absolute), with the sweep folder it belongs to."""
    seen: set[Path] = set()
    for folder in folders:
        folder = Path(os.path.abspath(folder))
        if not folder.exists():
            raise UserError(f"no such folder: {folder}")
        if not folder.is_dir():
            raise UserError(f"not a folder: {folder}")
        for run_dir, sweep in _walk(folder, sweep_of(folder)):
            if run_dir not in seen:  # folders named twice, or one inside another
                seen.add(run_dir)
                yield run_dir, sweep


def one_run_folder(folder: str | Path) -> tuple[Path, Path | None]:
    """A folder named as one run (``mnist-lab-runs diff A B``), absolute, with its sweep."""
    path = Path(os.path.abspath(folder))
    if not path.is_dir():
        raise UserError(f"no such folder: {path}")
    if not is_run_folder(path):
        raise UserError(f"not a run folder (no .hydra/ nor checkpoints/ in it): {path}")
    return path, sweep_of(path)


def sweep_of(folder: Path) -> Path | None:
    """The sweep a named folder is a job of (``mnist-lab-runs outputs/multirun/.../3``)."""
    for parent in folder.parents:
        if (parent / layout.MULTIRUN).is_file():
            return parent
    return None


def _walk(folder: Path, sweep: Path | None) -> Iterator[tuple[Path, Path | None]]:
    if is_run_folder(folder):
        yield folder, sweep
        return
    if (folder / layout.MULTIRUN).is_file():
        sweep = folder
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return  # unreadable: nothing to list there
    for entry in entries:
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), sweep)
