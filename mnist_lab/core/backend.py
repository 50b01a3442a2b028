"""TensorFlow, imported quietly, and the per-job runtime setup (seeds, determinism, threads).

Import this module before anything that imports TensorFlow or Keras.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger(__name__)


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration.

    TensorFlow's shared libraries log a few lines (oneDNN, CUDA stubs, absl) from C++ while
    they load, before TF_CPP_MIN_LOG_LEVEL is read, and each appears twice. Python-level
    errors are unaffected: they are raised, and printed after the descriptor is restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Importing TensorFlow and Keras creates millions of objects that live as long as the process
# and almost no garbage: with the collector paused, the import skips the full collections that
# would scan them all (benchmarks/README.md); frozen, later collections leave them alone.
gc.disable()
try:
    with _native_stderr_silenced():
        import keras
        import tensorflow as tf
        from tensorflow.python.framework import config as tf_config

        # Listing devices is where a CPU-only machine logs its failed CUDA probe: keep it quiet.
        GPUS = tf.config.list_physical_devices("GPU")
        # Several jobs may share a GPU (a sweep, a notebook beside a run): take memory as needed
        # instead of all of it up front. Must happen before the runtime starts.
        for gpu in GPUS:
            tf.config.experimental.set_memory_growth(gpu, True)
finally:
    gc.freeze()
    gc.enable()

# absl's Python logger would otherwise print TensorFlow's Python warnings a second time.
logging.getLogger("absl").setLevel(logging.ERROR)
tf.get_logger().setLevel(logging.ERROR)


_jobs_configured = 0  # jobs of this process so far: a sweep runs many in one process


def configure_tensorflow(cfg: DictConfig) -> None:
    """Threads, seeds, determinism, precision. Called at the start of every job (sweeps share
    a process), so every setting is applied both ways: nothing leaks from the previous job."""
    global _jobs_configured
    # Thread pools can only be set before TensorFlow's runtime starts (at the first op);
    # later jobs of a sweep in the same process keep the first job's setting.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.trainer.intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(cfg.trainer.inter_op_threads)
    except RuntimeError:
        if cfg.trainer.intra_op_threads or cfg.trainer.inter_op_threads:
            log.warning("thread settings ignored: TensorFlow already started in this process")
    with _native_stderr_silenced():
        tf.constant(0)  # the runtime logs once more as it starts: keep that quiet too
    # A fresh process has nothing to collect: skip the garbage collection (start-up time).
    keras.backend.clear_session(free_memory=_jobs_configured > 0)
    _jobs_configured += 1
    keras.utils.set_random_seed(cfg.seed)  # Python, NumPy and TensorFlow
    if cfg.trainer.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        # TensorFlow exports no public "off" switch; a previous job of a sweep in this
        # process may have turned it on.
        tf_config.disable_op_determinism()
    keras.mixed_precision.set_global_policy(precision_policy(cfg.trainer.mixed_precision))


def precision_policy(mixed_precision: bool) -> str:
    """The Keras dtype policy: float32, or half-precision compute where the hardware has it.

    Weights stay float32 either way. A GPU computes in float16 on its tensor cores; a CPU with
    bfloat16 dot-product instructions (AVX-512 BF16, AMX) in bfloat16 through oneDNN, about
    much faster for the CNN (benchmarks/README.md). Elsewhere half precision is emulated and
    slower than float32, so it is not used.
    """
    if not mixed_precision:
        return "float32"
    if GPUS:
        log.info("mixed precision: float16 compute on the GPU")
        return "mixed_float16"
    if cpu_has_bfloat16():
        log.info("mixed precision: bfloat16 compute on the CPU")
        return "mixed_bfloat16"
    log.warning(
        "trainer.mixed_precision: no GPU and no bfloat16 instructions in this CPU, "
        "so computing in float32"
    )
    return "float32"


def cpu_has_bfloat16() -> bool:
    """Whether the CPU has bfloat16 dot-product instructions (read from Linux's cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()  # Linux; elsewhere, assume not
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))
