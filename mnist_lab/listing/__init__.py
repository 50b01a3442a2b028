"""The run listing: the runs below some folders as plain records, their filters, sort, diff and
best run (what ``mnist-lab-runs`` and ``mnist_lab.runs()`` show), and ensembles of saved runs.
Reads files only: no TensorFlow, no Hydra app."""

from mnist_lab.listing.runs_list import (
    DEFAULT_FOLDER,
    METRIC_KEYS,
    Run,
    best,
    diff,
    find,
    looks_like_filter,
    reproduce_command,
    runs,
)

__all__ = [
    "DEFAULT_FOLDER",
    "METRIC_KEYS",
    "Run",
    "best",
    "diff",
    "find",
    "looks_like_filter",
    "reproduce_command",
    "runs",
]
