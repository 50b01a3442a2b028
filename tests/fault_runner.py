"""Run ``mnist-lab`` and kill it with SIGKILL at a chosen point: the real process, a real kill.

    python tests/fault_runner.py POINT [mnist-lab arguments ...]

Each point wraps one function of the package (or of TensorFlow's checkpointing) so that the
process kills itself there, before or after the function does its work. Nothing in the
package knows about this: the tests inject the fault from outside, as a crash would.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_around(owner: Any, name: str, when: Callable[..., bool], after: bool = False) -> None:
    """Replace ``owner.name`` so that a call for which ``when(*args)`` is true is the last."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        now = when(*args, **kwargs)  # once: a point may act (send a signal) as it is asked
        if now and not after:
            die()
        result = original(*args, **kwargs)
        if now and after:
            die()
        return result

    setattr(owner, name, wrapper)


def install(point: str) -> None:
    import mnist_lab.data
    import mnist_lab.training.loop as loop
    from mnist_lab.rundir import records, run_record
    from mnist_lab.training import finish
    from mnist_lab.training.clock import StepClock
    from mnist_lab.training.stopping import StoppingRules

    def always(*args: Any, **kwargs: Any) -> bool:
        return True

    if point == "loading data":
        kill_around(loop, "load_dataset", always)
    elif point == "after the run record":
        kill_around(run_record, "start", always, after=True)
    elif point == "mid-step":
        kill_around(StepClock, "on_train_batch_end", lambda clock, batch, logs=None: batch == 29)
    elif point == "ctrl-c at the last step":
        # The signal arrives during the last compiled call (steps 51-60 of 60).
        def last(clock: Any, batch: int, logs: Any = None) -> bool:
            if batch + 1 == clock.total_steps - clock.start_step:
                os.kill(os.getpid(), signal.SIGINT)
            return False

        kill_around(StepClock, "on_train_batch_end", last)
    elif point in ("mid-checkpoint", "mid-best-checkpoint"):
        # After the new checkpoint's files are complete, before the state file names it.
        from tensorflow.python.checkpoint import checkpoint_management

        folder = "best" if point == "mid-best-checkpoint" else "checkpoints"
        kill_around(
            checkpoint_management,
            "update_checkpoint_state_internal",
            lambda save_dir, *args, **kwargs: str(save_dir).endswith(folder),
        )
    elif point == "after the stop decision":
        # A stopping rule has just decided: nothing of the decision is saved yet.
        observe = StoppingRules.observe

        def decided(self: Any, *args: Any, **kwargs: Any) -> Any:
            decision = observe(self, *args, **kwargs)
            if decision.stop is not None:
                die()
            return decision

        StoppingRules.observe = decided  # type: ignore[method-assign]
    elif point == "after the stop checkpoint":
        # The stop step is checkpointed with the decision; the run record is not updated.
        kill_around(run_record, "update", always)
    elif point == "before restoring the best":
        kill_around(loop, "_restore_best", always)
    elif point == "final evaluation":
        from mnist_lab.training.evaluation import Evaluator

        # The third split of the final evaluation (train, validation, test).
        calls = {"n": 0}
        original = Evaluator.run

        def run(self: Any, split: Any) -> Any:
            calls["n"] += 1
            if len(split) == 1000 and calls["n"] > 2:  # the test split, after training
                die()
            return original(self, split)

        Evaluator.run = run  # type: ignore[method-assign]
    elif point == "before the summaries end":
        from mnist_lab.show.summaries import RunSummaries

        kill_around(RunSummaries, "end", always)
    elif point == "before the export":
        kill_around(finish, "export_model", always)
    elif point == "before the predictions":
        kill_around(finish, "_write_predictions", always)
    elif point == "before metrics.json":
        kill_around(records, "write_json", lambda path, data: str(path).endswith("metrics.json"))
    elif point == "mid metrics.json":
        original_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            if str(dst).endswith("metrics.json"):
                die()
            original_replace(src, dst)

        os.replace = replace  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown fault point {point!r}")
    assert mnist_lab.data  # imported for its side effect of loading the package first


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = ["mnist-lab", *sys.argv[2:]]
    from mnist_lab.commands.run import main

    main()
