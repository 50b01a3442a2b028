"""How ``mnist-lab-runs`` shows runs: each value as a cell (a config value as an override
writes it, metrics, durations, start times, folders, statuses), the listing as a rich table for
a terminal or aligned plain lines for a pipe, and the diff's key-and-values tables. Built here,
printed by the command (its console, its stdout)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from mnist_lab.listing.read import Run
from mnist_lab.rundir import records
from mnist_lab.show.report import stop_text

# Up to this many differing config keys get a column each in the terminal's table.
TABLE_KEYS = 5
STATUS_STYLES = {
    records.FINISHED: "green",
    records.RUNNING: "blue",
    records.PRUNED: "cyan",
    records.FAILED: "red",
    records.INTERRUPTED: "yellow",
}


# ---------------------------------------------------------------- cells


def value(config_value: Any) -> str:
    """A config value as a user would write it in an override."""
    if config_value is None:
        return "null"
    if isinstance(config_value, bool):
        return str(config_value).lower()
    if isinstance(config_value, float):
        return f"{config_value:.6g}"
    if isinstance(config_value, (list, dict)):
        return json.dumps(config_value, separators=(",", ":"))
    return str(config_value)


def metric(key: str, number: Any, signed: bool = False) -> str:
    """A metric by its kind: precisions, recalls and losses to 4 places, throughput whole,
    seconds."""
    if number is None or isinstance(number, bool) or not isinstance(number, (int, float)):
        return "-" if number is None else str(number)
    sign = "+" if signed else ""
    if key.endswith(("precision", "recall", "loss")):
        return format(number, f"{sign}.4f")
    if key.endswith("examples_per_second"):
        return format(number, f"{sign},.0f")
    if key.endswith("seconds"):
        return format(number, f"{sign}.1f") + "s"
    return format(number, f"{sign}d") if isinstance(number, int) else format(number, f"{sign}.4g")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def started(iso: str | None) -> str:
    """A start time in local time, to the second."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, TypeError, OverflowError, OSError):
        return str(iso)


def folder(path: str) -> str:
    """Below the current folder: relative, as the user would type it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def status(run: Run) -> str:
    if run.status == records.RUNNING:
        return f"running (pid {run.pid})"
    if run.status in (records.PRUNED, records.INTERRUPTED):
        return f"{run.status} at step {run.step}" if run.step is not None else run.status
    return run.status


def counts(found: list[Run]) -> str:
    """How many runs of each status: "3 finished, 1 interrupted"."""
    by_status = {s: sum(r.status == s for r in found) for s in STATUS_STYLES}
    return ", ".join(f"{n} {s}" for s, n in by_status.items() if n)


def _note(run: Run) -> str:
    if run.status == records.FAILED:
        return run.error or ""
    # A damaged metrics.json: said first, so that nobody takes the run for one never finished.
    notes = [f"{run.damaged} (its results are not shown)"] if run.damaged else []
    if run.resume:
        notes.append(f"to resume: {run.resume}")
    return "; ".join(notes)


# ---------------------------------------------------------------- tables


def rows(found: list[Run]) -> tuple[list[str], list[list[str]]]:
    """The listing's header and a row a run: status, start, time, the differing config keys,
    the precisions, the folder and a note (a failed run's error, an interrupted one's resume)."""
    keys = list(dict.fromkeys(k for run in found for k in run.differs))
    header = ["status", "started", "time", *keys, "validation", "test", "stop", "folder", "note"]
    cells = [
        [
            status(run),
            started(run.started),
            duration(run.duration),
            *(value(run.differs[k]) if k in run.differs else "-" for k in keys),
            metric("precision", run.validation_precision),
            metric("precision", run.test_precision),
            stop_text(
                records.metric(run.metrics, "stop.reason"),
                run.step,
                records.metric(run.metrics, "stop.best_step"),
            ),
            folder(run.dir),
            _note(run),
        ]
        for run in found
    ]
    return header, cells


def plain(header: list[str], lines: list[list[str]]) -> str:
    """Aligned columns, one line a row; the last column (the note) is not padded."""
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header) - 1)]
    text = ""
    for row in [header, *lines]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        text += "  ".join(cells).rstrip() + "\n"
    return text


def key_table(title: str, header: list[str], lines: list[list[str]]) -> Table:
    """The diff's tables: a key, then values."""
    table = Table(title=title, title_justify="left")
    table.add_column(header[0], no_wrap=True)
    for name in header[1:]:
        table.add_column(name, justify="right", overflow="fold")
    for row in lines:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _short(keys: list[str]) -> list[str]:
    """Column titles for config keys: optimizer.name -> optimizer, optimizer.lr -> lr, when
    that names one key only."""
    shorts = [k.split(".")[-2] if k.endswith(".name") else k.split(".")[-1] for k in keys]
    return [s if shorts.count(s) == 1 else k for s, k in zip(shorts, keys, strict=True)]


def listing_table(title: str, found: list[Run]) -> tuple[Table, list[str]]:
    """The listing for a terminal, and the notes to print below it, numbered: errors and resume
    commands whole, so that a command can be copied and pasted."""
    header, lines = rows(found)
    keys = header[3:-4]
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("status", "started"):
        table.add_column(name, no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    # A column a key while they fit; beyond that, key=value pairs in one column.
    by_key = len(keys) <= TABLE_KEYS
    for name in _short(keys) if by_key else ["config"] if keys else []:
        table.add_column(name, overflow="fold")
    for name in ("validation", "test"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("folder", overflow="fold")
    notes: list[str] = []
    for run, row in zip(found, lines, strict=True):
        shown = Text(row[0], style=STATUS_STYLES[run.status])
        if row[-1]:
            notes.append(f"[{len(notes) + 1}] {row[-1]}")
            shown.append(f" [{len(notes)}]")
        config = row[3 : 3 + len(keys)]
        if not by_key:
            pairs = zip(_short(keys), config, strict=True)
            config = [" ".join(f"{k}={v}" for k, v in pairs if v != "-")]
        table.add_row(shown, *(Text(cell) for cell in [*row[1:3], *config, *row[-4:-1]]))
    return table, notes
