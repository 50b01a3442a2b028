"""``mnist-lab-runs``: list, filter, compare and pick runs, from their folders alone.

    mnist-lab-runs [FOLDER ...] [FILTER ...] [--sort KEY] [--limit N] [--json | --csv]
    mnist-lab-runs diff RUN_A RUN_B
    mnist-lab-runs best [FOLDER ...] [FILTER ...]

The records, filters and statuses are ``mnist_lab.listing``'s (``mnist_lab.runs()`` in Python);
this module only parses arguments and prints: a rich table on a terminal, plain lines in a pipe.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from rich import box
from rich.table import Table
from rich.text import Text

from mnist_lab import listing
from mnist_lab.commands import run_command
from mnist_lab.core.console import console
from mnist_lab.core.errors import UserError
from mnist_lab.listing import Run
from mnist_lab.rundir import records

PROG = "mnist-lab-runs"
# Up to this many differing config keys get a column each in the terminal's table.
TABLE_KEYS = 5
STATUS_STYLES = {
    records.FINISHED: "green",
    records.RUNNING: "blue",
    records.PRUNED: "cyan",
    records.FAILED: "red",
    records.INTERRUPTED: "yellow",
}
EXAMPLES = """\
FOLDER: where to look for runs (default: outputs/); every run and sweep job below it is listed.
An argument that is a folder is a folder; -f FILTER forces a filter.
FILTER: KEY OP VALUE, OP one of = != < <= > >= (quote < and > for the shell). KEY is a config
key (optimizer.lr; model=cnn means model.name=cnn), a result (validation.precision,
test.loss, wall_seconds), status, started, duration or step, or an override (experiment=...).

examples:
  mnist-lab-runs                                      every run below outputs/, newest first
  mnist-lab-runs model=cnn 'optimizer.lr<0.01'        the CNNs with a small learning rate
  mnist-lab-runs status=interrupted                   what to resume, and the command for each
  mnist-lab-runs --sort validation.precision --limit 5
  mnist-lab-runs --json > runs.json                   for scripts (also --csv)
  mnist-lab-runs diff RUN_A RUN_B                     config and metrics of two runs
  mnist-lab-runs best model=mlp                       the best MLP and how to train it again
"""


# ---------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one-line errors of every mnist-lab command."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def _parser(command: str | None) -> argparse.ArgumentParser:
    if command == "diff":
        parser = _Parser(
            prog=f"{PROG} diff",
            description="Compare two runs: the config keys that differ, then their metrics.",
        )
        parser.add_argument("a", metavar="RUN_A", help="a run folder")
        parser.add_argument("b", metavar="RUN_B", help="another run folder")
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser
    parser = _Parser(
        prog=f"{PROG} best" if command == "best" else PROG,
        description=(
            "The finished run with the best validation precision, and the command that "
            "trains it again."
            if command == "best"
            else "List every mnist-lab run and sweep job below some folders. "
            f"Also: '{PROG} diff RUN_A RUN_B', '{PROG} best [FOLDER|FILTER ...]'."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("args", nargs="*", metavar="FOLDER|FILTER", help="folders and filters")
    parser.add_argument(
        "-f", "--filter", action="append", default=[], metavar="FILTER", help="a filter"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    if command == "best":
        return parser
    parser.add_argument(
        "--sort",
        metavar="KEY",
        help="sort by KEY: precisions, throughput, step and started high to low, anything "
        "else low to high; runs without it last (default: newest first)",
    )
    parser.add_argument("--reverse", action="store_true", help="reverse the order")
    parser.add_argument("--limit", type=int, metavar="N", help="list at most N runs")
    parser.add_argument("--csv", action="store_true", help="print CSV")
    return parser


def _folders_and_filters(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Positional arguments are folders when they are folders, filters when they read as one."""
    folders, filters = [], list(args.filter)
    for arg in args.args:
        if not Path(arg).is_dir() and listing.looks_like_filter(arg):
            filters.append(arg)
        else:
            folders.append(arg)
    if not folders:
        if not Path(listing.DEFAULT_FOLDER).is_dir():
            raise UserError(
                f"no {listing.DEFAULT_FOLDER}/ folder in {Path.cwd()}: run {PROG} where you "
                "ran mnist-lab, or name the folders that hold your runs"
            )
        folders = [listing.DEFAULT_FOLDER]
    return folders, filters


# ---------------------------------------------------------------- formatting


def _value(value: Any) -> str:
    """A config value as a user would write it in an override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _metric(key: str, value: Any, signed: bool = False) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    sign = "+" if signed else ""
    if key.endswith(("precision", "loss")):
        return format(value, f"{sign}.4f")
    if key.endswith("examples_per_second"):
        return format(value, f"{sign},.0f")
    if key.endswith("seconds"):
        return format(value, f"{sign}.1f") + "s"
    return format(value, f"{sign}d") if isinstance(value, int) else format(value, f"{sign}.4g")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _started(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _folder(path: str) -> str:
    """Below the current folder: relative, as the user would type it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _status(run: Run) -> str:
    if run.status == records.RUNNING:
        return f"running (pid {run.pid})"
    if run.status in (records.PRUNED, records.INTERRUPTED):
        return f"{run.status} at step {run.step}" if run.step is not None else run.status
    return run.status


def _note(run: Run) -> str:
    if run.status == records.FAILED:
        return run.error or ""
    if run.resume:
        return f"to resume: {run.resume}"
    return ""


def _rows(found: list[Run]) -> tuple[list[str], list[list[str]]]:
    keys = list(dict.fromkeys(k for run in found for k in run.differs))
    header = ["status", "started", "time", *keys, "validation", "test", "folder", "note"]
    rows = [
        [
            _status(run),
            _started(run.started),
            _duration(run.duration),
            *(_value(run.differs[k]) if k in run.differs else "-" for k in keys),
            _metric("precision", run.validation_precision),
            _metric("precision", run.test_precision),
            _folder(run.dir),
            _note(run),
        ]
        for run in found
    ]
    return header, rows


def _plain(header: list[str], rows: list[list[str]]) -> None:
    """Aligned columns, one line a run; the last column (the note) is not padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        sys.stdout.write("  ".join(cells).rstrip() + "\n")


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """The diff's tables: a key, then values."""
    table = Table(title=title, title_justify="left")
    table.add_column(header[0], no_wrap=True)
    for name in header[1:]:
        table.add_column(name, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def _short(keys: list[str]) -> list[str]:
    """Column titles for config keys: optimizer.name -> optimizer, optimizer.lr -> lr, when
    that names one key only."""
    shorts = [k.split(".")[-2] if k.endswith(".name") else k.split(".")[-1] for k in keys]
    return [s if shorts.count(s) == 1 else k for s, k in zip(shorts, keys, strict=True)]


def _print_table(title: str, found: list[Run]) -> None:
    """The listing on a terminal. Errors and resume commands go below the table, whole, so a
    command can be copied and pasted."""
    header, rows = _rows(found)
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
    for run, row in zip(found, rows, strict=True):
        status = Text(row[0], style=STATUS_STYLES[run.status])
        if row[-1]:
            notes.append(row[-1])
            status.append(f" [{len(notes)}]")
        config = row[3 : 3 + len(keys)]
        if not by_key:
            pairs = zip(_short(keys), config, strict=True)
            config = [" ".join(f"{k}={v}" for k, v in pairs if v != "-")]
        table.add_row(status, *(Text(cell) for cell in [*row[1:3], *config, *row[-4:-1]]))
    console.print(table)
    for number, note in enumerate(notes, start=1):
        console.print(f"[{number}] {note}", markup=False, highlight=False, soft_wrap=True)


def _counts(found: list[Run]) -> str:
    counts = {s: sum(r.status == s for r in found) for s in STATUS_STYLES}
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n)


# ---------------------------------------------------------------- the commands


def list_runs(args: argparse.Namespace) -> None:
    if args.json and args.csv:
        raise UserError("--json and --csv: choose one")
    folders, filters = _folders_and_filters(args)
    found = listing.runs(folders, filters, sort=args.sort, limit=args.limit, reverse=args.reverse)
    if args.json:
        # A record a line: json's fast encoder (an indent would take the slow one), and diffable.
        lines = ",\n".join(json.dumps(run.to_dict()) for run in found)
        sys.stdout.write(f"[\n{lines}\n]\n" if found else "[]\n")
    elif args.csv:
        write_csv(found)
    elif not found:
        what = " matching " + " ".join(filters) if filters else ""
        print(f"no runs{what} in {' '.join(folders)}", file=sys.stderr)
    elif console.is_terminal:
        _print_table(f"{len(found)} runs ({_counts(found)}) in {' '.join(folders)}", found)
    else:
        _plain(*_rows(found))


def write_csv(found: list[Run]) -> None:
    """One row a run: its fields, the differing config keys, then the main metrics."""
    keys = list(dict.fromkeys(k for run in found for k in run.differs))
    columns = ["dir", "status", "started", "duration", "step", *keys, *listing.METRIC_KEYS]
    columns += ["pid", "error", "resume", "overrides"]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for run in found:
        values = [run.dir, run.status, run.started, run.duration, run.step]
        values += [_value(run.differs[k]) if k in run.differs else None for k in keys]
        values += [run.get(k) for k in listing.METRIC_KEYS]
        values += [run.pid, run.error, run.resume, " ".join(run.overrides)]
        writer.writerow(["" if v is None else v for v in values])


def show_best(args: argparse.Namespace) -> None:
    folders, filters = _folders_and_filters(args)
    found = listing.runs(folders, filters)
    top = listing.best(found)
    finished = sum(r.status == records.FINISHED for r in found)
    if top is None:
        what = f" matching {' '.join(filters)}" if filters else ""
        raise UserError(
            f"no finished run with a validation precision{what} in {' '.join(folders)} "
            f"({len(found)} runs: {_counts(found) or 'none'})"
        )
    command = listing.reproduce_command(top)
    if args.json:
        json.dump({"best": top.to_dict(), "command": command}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    differs = " ".join(f"{k}={_value(v)}" for k, v in top.differs.items())
    for line in (
        f"best by validation precision, of {finished} finished runs: {_folder(top.dir)}",
        f"validation {_metric('precision', top.validation_precision)}, test "
        f"{_metric('precision', top.test_precision)}" + (f"; {differs}" if differs else ""),
        f"to train it again: {command}",
    ):
        print(line)


def show_diff(args: argparse.Namespace) -> None:
    result = listing.diff(args.a, args.b)
    if args.json:
        data = {
            "a": result.a.to_dict(),
            "b": result.b.to_dict(),
            "config": [list(row) for row in result.config],
            "metrics": [list(row) for row in result.metrics],
        }
        json.dump(data, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    a, b = _folder(result.a.dir), _folder(result.b.dir)
    for name, run in (("a", result.a), ("b", result.b)):
        print(f"{name}: {_folder(run.dir)} ({_status(run)}, started {_started(run.started)})")
    config_rows = [[key, _value(x), _value(y)] for key, x, y in result.config]
    metric_rows = [
        [key, _metric(key, x), _metric(key, y), _metric(key, d, signed=True)]
        for key, x, y, d in result.metrics
    ]
    if console.is_terminal:
        if config_rows:
            _table("config", ["key", a, b], config_rows)
        _table("metrics", ["metric", a, b, "b - a"], metric_rows)
    else:
        print()
        if config_rows:
            _plain(["config", "a", "b", ""], [[*row, ""] for row in config_rows])
            print()
        _plain(["metric", "a", "b", "b - a"], metric_rows)
    if not config_rows:
        print("same config")


def _main(argv: Sequence[str]) -> None:
    command = argv[0] if argv and argv[0] in ("diff", "best") else None
    rest = list(argv[1:] if command else argv)
    parser = _parser(command)
    args = parser.parse_args(rest) if command == "diff" else parser.parse_intermixed_args(rest)
    {"diff": show_diff, "best": show_best, None: list_runs}[command](args)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        run_command(lambda: _main(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # `mnist-lab-runs | head`: the reader has gone. End quietly, as a shell tool would
        # (stdout to /dev/null, or Python's exit would fail flushing it once more).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)


if __name__ == "__main__":
    main()
