"""``mnist-lab-runs``: list, filter, compare and pick runs, from their folders alone.

    mnist-lab-runs [FOLDER ...] [FILTER ...] [--sort KEY] [--limit N] [--json | --csv]
    mnist-lab-runs diff RUN_A RUN_B
    mnist-lab-runs best [FOLDER ...] [FILTER ...]

The records, filters and statuses are ``mnist_lab.listing``'s (``mnist_lab.runs()`` in Python);
this module only parses arguments and prints, through ``mnist_lab.listing.table``: a rich
table on a terminal, plain lines in a pipe.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from mnist_lab import listing
from mnist_lab.commands import run_command
from mnist_lab.core.console import console
from mnist_lab.core.errors import UserError
from mnist_lab.listing import Run, table
from mnist_lab.rundir import records

PROG = "mnist-lab-runs"
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


# ---------------------------------------------------------------- the commands


def _json(record: dict[str, Any]) -> str:
    """Strict JSON: a NaN or an infinity (from a hand-edited config.yaml, say) is not JSON, so
    it is written as the string "nan", "inf" or "-inf", as YAML and Python print it."""
    try:
        return json.dumps(record, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(record), allow_nan=False)


def _finite(node: Any) -> Any:
    if isinstance(node, float) and not math.isfinite(node):
        return str(node)
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_finite(v) for v in node]
    return node


def list_runs(args: argparse.Namespace) -> None:
    if args.json and args.csv:
        raise UserError("--json and --csv: choose one")
    folders, filters = _folders_and_filters(args)
    found = listing.runs(folders, filters, sort=args.sort, limit=args.limit, reverse=args.reverse)
    if args.json:
        # A record a line: json's fast encoder (an indent would take the slow one), and diffable.
        lines = ",\n".join(_json(run.to_dict()) for run in found)
        sys.stdout.write(f"[\n{lines}\n]\n" if found else "[]\n")
    elif args.csv:
        write_csv(found)
    elif not found:
        what = " matching " + " ".join(filters) if filters else ""
        print(f"no runs{what} in {' '.join(folders)}", file=sys.stderr)
    elif console.is_terminal:
        title = f"{len(found)} runs ({table.counts(found)}) in {' '.join(folders)}"
        shown, notes = table.listing_table(title, found)
        console.print(shown)
        for note in notes:
            console.print(note, markup=False, highlight=False, soft_wrap=True)
    else:
        sys.stdout.write(table.plain(*table.rows(found)))


def write_csv(found: list[Run]) -> None:
    """One row a run: its fields, the differing config keys, then the main metrics."""
    keys = list(dict.fromkeys(k for run in found for k in run.differs))
    columns = ["dir", "status", "started", "duration", "step", *keys, *listing.METRIC_KEYS]
    columns += ["pid", "error", "resume", "overrides"]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for run in found:
        values = [run.dir, run.status, run.started, run.duration, run.step]
        values += [table.value(run.differs[k]) if k in run.differs else None for k in keys]
        values += [run.get(k) for k in listing.METRIC_KEYS]
        values += [run.pid, run.error or run.damaged, run.resume, " ".join(run.overrides)]
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
            f"({len(found)} runs: {table.counts(found) or 'none'})"
        )
    command = listing.reproduce_command(top)
    if args.json:
        json.dump({"best": top.to_dict(), "command": command}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    differs = " ".join(f"{k}={table.value(v)}" for k, v in top.differs.items())
    for line in (
        f"best by validation precision, of {finished} finished runs: {table.folder(top.dir)}",
        f"validation {table.metric('precision', top.validation_precision)}, test "
        f"{table.metric('precision', top.test_precision)}" + (f"; {differs}" if differs else ""),
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
    a, b = table.folder(result.a.dir), table.folder(result.b.dir)
    for name, run in (("a", result.a), ("b", result.b)):
        when = table.started(run.started)
        print(f"{name}: {table.folder(run.dir)} ({table.status(run)}, started {when})")
    config_rows = [[key, table.value(x), table.value(y)] for key, x, y in result.config]
    metric_rows = [
        [key, table.metric(key, x), table.metric(key, y), table.metric(key, d, signed=True)]
        for key, x, y, d in result.metrics
    ]
    if console.is_terminal:
        if config_rows:
            console.print(table.key_table("config", ["key", a, b], config_rows))
        console.print(table.key_table("metrics", ["metric", a, b, "b - a"], metric_rows))
    else:
        print()
        if config_rows:
            sys.stdout.write(
                table.plain(["config", "a", "b", ""], [[*row, ""] for row in config_rows])
            )
            print()
        sys.stdout.write(table.plain(["metric", "a", "b", "b - a"], metric_rows))
    if not config_rows:
        print("same config")


def _main(argv: Sequence[str]) -> None:
    command = argv[0] if argv and argv[0] in ("diff", "best") else None
    rest = list(argv[1:] if command else argv)
    parser = _parser(command)
    args = parser.parse_args(rest) if command == "diff" else parser.parse_intermixed_args(rest)
    {"diff": show_diff, "best": show_best, None: list_runs}[command](args)


def main(argv: Sequence[str] | None = None) -> None:
    # run_command also ends `mnist-lab-runs | head` quietly, and a full disk in one line.
    run_command(lambda: _main(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
