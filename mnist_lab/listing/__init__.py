"""The run listing: the runs below some folders as plain records, their filters, sort, diff and
best run (what ``mnist-lab-runs`` and ``mnist_lab.runs()`` show), and ensembles of saved runs.
Reads files only: no TensorFlow, no Hydra app.

One job a module: ``folders`` finds run folders, ``read`` makes one into a ``Run``, ``filters``
is the filter language, ``compare`` sorts, diffs and picks the best, ``query`` is ``runs()``,
``table`` shows runs as text; ``members`` reads and checks the runs an ensemble may combine,
``ensemble`` combines them. No module is named after a public function here: importing it
would set the package's attribute of that name.
"""

from mnist_lab.listing.compare import METRIC_KEYS, best, diff, reproduce_command
from mnist_lab.listing.filters import looks_like_filter
from mnist_lab.listing.folders import find
from mnist_lab.listing.query import DEFAULT_FOLDER, runs
from mnist_lab.listing.read import Run

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
