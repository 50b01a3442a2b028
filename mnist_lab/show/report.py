"""The one table of results that training, mnist-lab-eval and mnist-lab-ensemble print.
No TensorFlow here, so commands that only read results start fast."""

from __future__ import annotations

import logging

from rich.table import Table

from mnist_lab.core.console import FILE_ONLY, console
from mnist_lab.rundir.results import SplitResult

log = logging.getLogger("mnist_lab.train")


def print_report(results: dict[str, SplitResult], title: str) -> None:
    table = Table(title=title)
    table.add_column("split")
    table.add_column("num_examples", justify="right")
    table.add_column("num_correct", justify="right")
    table.add_column("precision@1", justify="right")
    for name, r in results.items():
        precision = "n/a" if r.precision is None else f"{r.precision:.4f}"
        table.add_row(name, f"{r.num_examples:,}", f"{r.num_correct:,}", precision)
    console.print(table)
    for name, r in results.items():
        log.info(
            "%s: %d examples, %d correct, precision@1 %s",
            name,
            r.num_examples,
            r.num_correct,
            "n/a" if r.precision is None else f"{r.precision:.4f}",
            extra=FILE_ONLY,
        )


def stop_text(reason: str | None, step: int | None, best_step: int | None) -> str:
    """``early_stopping, best 80``: why a run ended before its steps, and whose weights show."""
    other_weights = best_step is not None and best_step != step
    if reason in (None, "steps") and not other_weights:
        return "-"
    return f"{reason or 'steps'}, best {best_step}" if other_weights else str(reason)
