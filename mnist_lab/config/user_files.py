"""The user's own config files (``--config-dir``), checked before Hydra composes them.

A file that is empty, ``null`` or a YAML list is valid YAML, and Hydra takes it: what fails
later is a key the user never wrote (``Interpolation key 'model.name' not found``, ``Key
'experiment' not in 'Config'``). Here such a file is named, with what it holds instead of keys.
Only the files a command names are read: the ``--config-name`` file and each ``group=option``
override found in the user's folder, and the user's files their defaults lists name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from mnist_lab.core.errors import UserError


def check_user_files(argv: Sequence[str]) -> None:
    """Refuse a named config file of the user's that holds no keys (one line naming it)."""
    folder, name, overrides = _named(argv)
    if folder is None:
        return
    primary = _find(folder, name) if name else None
    todo = [primary] if primary else []
    todo += [p for group, option in _choices(overrides) if (p := _find(folder / group, option))]
    seen: set[Path] = set()
    while todo:  # the named files, then the user's files their defaults lists name
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for group, option in _defaults(_check(path)):
            found = _find(folder / group, option)
            todo += [found] if found else []


_FOLDER, _NAME = ("--config-dir", "-cd"), ("--config-name", "-cn")


def _named(argv: Sequence[str]) -> tuple[Path | None, str | None, list[str]]:
    """The config folder, the config name and the overrides given on the command line."""
    folder = name = None
    overrides: list[str] = []
    args = iter(argv)
    for arg in args:
        flag, equals, value = arg.partition("=")
        if flag in (*_FOLDER, *_NAME):
            if not equals:  # `--config-dir X`, else `--config-dir=X`
                value = next(args, "")
            if flag in _FOLDER:
                folder = Path(value).expanduser()
            else:
                name = value
        elif not arg.startswith("-"):
            overrides.append(arg)
    return folder, name, overrides


def _choices(overrides: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``group=option`` pairs (``+group=option`` and ``group@pkg=option`` too)."""
    for override in overrides:
        key, equals, value = override.lstrip("+~").partition("=")
        key = key.partition("@")[0]
        if equals and value and "." not in key and "," not in value:
            yield key, value


def _defaults(content: Any) -> Iterator[tuple[str, str]]:
    entries = content.get("defaults") if isinstance(content, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if isinstance(key, str) and isinstance(value, str):
                    group = key.removeprefix("override ").lstrip("+~/").partition("@")[0]
                    yield group, value


def _find(folder: Path, name: str) -> Path | None:
    for path in (folder / name, folder / f"{name}.yaml", folder / f"{name}.yml"):
        if path.is_file():
            return path
    return None


def _check(path: Path) -> Any:
    """The file's content when it is a mapping of keys; else one line naming it."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # Hydra reads it next and says what is wrong in its own line
    if isinstance(content, dict):
        return content
    if content is None:
        holds = "holds no keys (it is empty, or only null or comments)"
    elif isinstance(content, list):
        holds = "holds a YAML list"
    else:
        holds = f"holds a single {type(content).__name__} ({content!r:.40})"
    raise UserError(f"{path}: the config file {holds}; expected config keys (key: value lines)")
