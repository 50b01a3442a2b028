"""mnist-lab: a configurable experiment runner for MNIST.

From Python (a notebook, say), the same runs as the command line:

    import mnist_lab
    metrics = mnist_lab.run(["model=cnn", "optimizer=adam"])   # as `mnist-lab model=cnn ...`
    mnist_lab.runs(filters=["model=cnn"])                      # as `mnist-lab-runs model=cnn`

Both are imported on first use: ``import mnist_lab`` imports neither TensorFlow nor Hydra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnist_lab.core.errors import UserError

if TYPE_CHECKING:
    from mnist_lab.api import run
    from mnist_lab.listing import runs

__version__ = "0.1.0"
__all__ = ["UserError", "__version__", "run", "runs"]


def __getattr__(name: str) -> Any:
    # The function `runs` lives in mnist_lab.listing, not in a module named `runs`: importing a
    # submodule sets the package attribute of its name, which would hide the function.
    if name == "run":
        from mnist_lab.api import run

        return run
    if name == "runs":
        from mnist_lab.listing import runs

        return runs
    raise AttributeError(f"module 'mnist_lab' has no attribute {name!r}")
