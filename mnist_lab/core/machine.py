"""Where a run ran: the machine, the precision actually used, the versions of what ran it.

A time or a throughput means little without the CPU it was measured on, and an accuracy can
differ between bfloat16 and float32: every run records this beside its figures (``machine``
in metrics.json, a text in TensorBoard), so a figure is never read without it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from mnist_lab.core.backend import GPUS, cpu_has_bfloat16, keras, tf

SOURCE = Path(__file__).resolve().parents[2]  # the checkout, when run from one


def describe(precision_policy: str) -> dict[str, Any]:
    """This process's machine; ``precision_policy`` is the Keras policy the job used."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        # 0 is TensorFlow's own choice: one thread per core available.
        "intra_op_threads": intra or cores,
        "inter_op_threads": inter or cores,
        "bfloat16": cpu_has_bfloat16(),
        "gpus": [gpu.name for gpu in GPUS],
        "precision": {"float32": "float32", "mixed_bfloat16": "bfloat16"}.get(
            precision_policy, "float16"
        ),
        "mnist_lab": version(),
        "git": git_commit(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


@cache
def version() -> str | None:
    try:
        return metadata.version("mnist-lab")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return None


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes) when mnist-lab runs from
    one; None for an installed package."""
    if not (SOURCE / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(SOURCE), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(SOURCE), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head
