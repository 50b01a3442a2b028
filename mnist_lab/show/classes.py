"""The per-class table that ``mnist-lab-eval`` prints below the results: each class's
precision, recall and support on each split, as ``metrics.json``'s ``per_class`` holds them.
No TensorFlow here."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from mnist_lab.core.console import console


def print_per_class(per_class: dict[str, dict[str, list[Any]]], names: tuple[str, ...]) -> None:
    """One section a split, one row a class; ``n/a`` where nothing was predicted or counted."""
    table = Table(title="per class")
    table.add_column("split")
    table.add_column("class")
    for column in ("precision", "recall", "support"):
        table.add_column(column, justify="right")
    for split, figures in per_class.items():
        for index, name in enumerate(names):
            table.add_row(
                split if index == 0 else "",
                name,
                _fraction(figures["precision"][index]),
                _fraction(figures["recall"][index]),
                f"{figures['support'][index]:,}",
                end_section=index == len(names) - 1,
            )
    console.print(table)


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
