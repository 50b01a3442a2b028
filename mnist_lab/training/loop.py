"""The one train/eval loop: config -> data -> model -> ``model.fit`` -> outputs.

Training is a single Keras ``fit`` over a stream of exactly ``trainer.steps`` batches (fewer
when resuming). The step clock (``training.clock``) runs the periodic work (validation, logs,
summaries, checkpoints) at the global steps where it is due, so a run of any length, cadence
and steps per call is one compiled loop.

A run ends all or nothing: the final evaluation, the summaries, ``model.keras`` and the
predictions are written first and ``metrics.json`` last, so a run is finished exactly when
``metrics.json`` exists (and is sound: ``rundir/judge.py``). A run stopped anywhere before
that (kill -9, Ctrl-C, a full disk) is completed by running the same command again, with the
same results.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnist_lab.core import machine
from mnist_lab.core.backend import configure_tensorflow, keras  # first: imports TensorFlow quietly
from mnist_lab.core.errors import DivergedError, UserError
from mnist_lab.data import Dataset, load_dataset
from mnist_lab.data.pipeline import train_batches
from mnist_lab.rundir import layout, locks, records, resume, run_record
from mnist_lab.rundir.checkpoints import Checkpoints, restore_model
from mnist_lab.rundir.interrupts import Interrupted, StopRequests, TrialPruned
from mnist_lab.rundir.results import EvalRecord
from mnist_lab.show.progress import Progress
from mnist_lab.show.summaries import RunSummaries
from mnist_lab.training import finish
from mnist_lab.training.clock import CHECKPOINTS, EVALUATION, SUMMARIES, StepClock
from mnist_lab.training.evaluation import Evaluator
from mnist_lab.training.models import build_compiled_model
from mnist_lab.training.stopping import TARGET, StoppingRules

log = logging.getLogger(__name__)

# Called at each evaluation with its record; True stops the run (a search's pruner).
Pruner = Callable[[EvalRecord], bool]


def train_and_evaluate(
    cfg: DictConfig,
    run_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    exact: bool = False,
    pruner: Pruner | None = None,
    resume_hint: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate on all three splits, write the run folder; return ``metrics.json``.

    ``overrides`` are recorded with the results; ``exact`` reuses a finished run only when its
    config is exactly ``cfg`` (sweep jobs); ``resume_hint`` is the command printed when the run
    is interrupted (a sweep's own command, for its jobs).
    """
    run_dir = Path(run_dir)
    hint = resume_hint or resume.resume_command(run_dir, overrides)
    try:
        with locks.held(run_dir):
            return _run(cfg, run_dir, list(overrides), exact, pruner, hint)
    except KeyboardInterrupt:
        # Ctrl-C outside training (loading data, the final evaluation): nothing to save.
        log.warning("interrupted; to resume: %s", hint)
        raise Interrupted(2) from None


def _run(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    exact: bool,
    pruner: Pruner | None,
    hint: str,
) -> dict[str, Any]:
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    config = resume.as_dict(cfg)
    plan = resume.plan(run_dir, config, exact=exact)
    t = cfg.trainer

    data = load_dataset(cfg.data)
    log.info(
        "data: %s (%d train, %d validation, %d test) from %s",
        data.name,
        len(data.train),
        len(data.validation),
        len(data.test),
        data.location,
    )
    if plan == resume.FINISHED:
        return finish.reuse_finished(run_dir, data)
    if plan == resume.CONTINUE:
        resume.check_same_data(run_dir, data.fingerprint)
    run_record.start(run_dir, cfg, overrides, data, started_at)

    configure_tensorflow(cfg)
    here = machine.describe(keras.mixed_precision.global_policy().name)
    model = build_compiled_model(cfg)
    log.info("model: %s, %s parameters", model.name, f"{model.count_params():,}")
    rules = StoppingRules(t)
    checkpoints = Checkpoints(
        layout.checkpoints_dir(run_dir),
        model,
        cfg.seed,
        t.keep_checkpoints,
        state=rules if rules.enabled else None,
    )
    start_step = checkpoints.restore_latest()  # resume.plan refused steps below the newest
    if not rules.enabled:  # no stopping state in the checkpoint: the best one says its value
        rules.best_value = checkpoints.recorded_best()
    evaluator = Evaluator(model, t.eval_batch_size)
    summaries = RunSummaries(run_dir / layout.TENSORBOARD, model, cfg, data, machine=here)

    late_signal = None
    if start_step < t.steps and rules.stopped is None:
        training = _fit(
            cfg, model, data, evaluator, summaries, checkpoints, rules, start_step, pruner, started
        )
        training["machine"] = here  # where the training ran: its figures are this machine's
        stopped, late_signal = training.pop("stopped"), training.pop("late_signal")
        if stopped is not None:
            step, why = stopped
            checkpoints.save(step)
            summaries.close()
            if why == "pruned":
                records.write_json(run_dir / layout.PRUNED, {"step": step, "started": started_at})
                log.info("pruned at step %d: this trial is clearly worse than the others", step)
                raise TrialPruned(f"pruned at step {step}")
            log.warning("stopped at step %d, checkpoint saved in %s", step, checkpoints.directory)
            log.warning("to resume: %s", hint)
            raise Interrupted(why, f"stopped at step {step}")
        if rules.stopped is not None:  # the decision is in this checkpoint: a rerun keeps it
            checkpoints.save(training["step"])
        run_record.update(run_dir, training=training)
    else:
        training = run_record.recorded_training(
            run_dir, rules.stop_step if rules.stopped else t.steps
        )
    training.setdefault("machine", here)  # trained before machines were recorded: this one
    training["stop"] = rules.record(training["step"], t.batch_size)
    if rules.reported_step(training["step"]) != training["step"]:
        _restore_best(model, checkpoints, rules)

    metrics = finish.finish(cfg, run_dir, model, data, evaluator, summaries, training, overrides,
                      started, started_at)  # fmt: skip
    if late_signal is not None:
        # Ctrl-C during the last compiled call: the run finished anyway (and is complete);
        # the signal still stops what comes next, a sweep's next job say.
        log.warning("stopping: %s came as the run finished", signal.Signals(late_signal).name)
        raise Interrupted(late_signal, "stopped after the run finished")
    return metrics


# ---------------------------------------------------------------- the parts


def _restore_best(model: keras.Model, checkpoints: Checkpoints, rules: StoppingRules) -> None:
    """Load the best evaluation's weights for the final evaluation and everything after it."""
    path = checkpoints.best_path
    if path is None or restore_model(model, path) != rules.best_step:
        raise UserError(
            f"the best checkpoint of step {rules.best_step} is missing or damaged in "
            f"{checkpoints.directory / layout.BEST}; rerun with "
            "trainer.early_stopping.restore_best=false to report the last weights"
        )
    log.info("reporting the weights of step %d, the best evaluation", rules.best_step)


def _fit(
    cfg: DictConfig,
    model: keras.Model,
    data: Dataset,
    evaluator: Evaluator,
    summaries: RunSummaries,
    checkpoints: Checkpoints,
    rules: StoppingRules,
    start_step: int,
    pruner: Pruner | None,
    job_started: float,
) -> dict[str, Any]:
    """Train from ``start_step`` to ``trainer.steps`` or a stopping rule's stop; the training
    figures, and why it was interrupted (``stopped``: (step, signal number or "pruned"))."""
    t = cfg.trainer
    steps_per_call = _steps_per_call(t.steps_per_execution, t.steps - start_step, start_step)
    model.steps_per_execution = steps_per_call

    # Each batch is a function of (seed, step): iterating again starts over at the same batch.
    batches = train_batches(
        data.train, t.batch_size, seed=cfg.seed, start_step=start_step, augment=cfg.data.augment
    )
    if summaries.enabled:
        first = next(iter(batches))
        summaries.start(start_step, (first[0].numpy(), first[1].numpy()))
    clock = StepClock(start_step, t.steps, t.batch_size)
    progress = Progress(t.steps, t.batch_size, start_step)
    stops = StopRequests()
    # The run's times before this process (a resume), to which this one's are added.
    carried_training, carried_wall = rules.training_seconds, rules.wall_seconds

    def check_divergence(step: int, logs: dict[str, Any]) -> None:
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            where = (
                f"at step {step}"
                if step - clock.previous_step == 1
                else f"between steps {clock.previous_step + 1} and {step}"
            )
            lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
            raise DivergedError(
                f"training diverged {where}: loss is {loss} (learning rate {lr:g}); "
                "try a smaller optimizer.lr"
            )

    def stop_if_asked(step: int, logs: dict[str, Any]) -> None:
        if stops.requested:
            model.stop_training = True

    def evaluate(step: int, logs: dict[str, Any]) -> None:
        with clock.timed(EVALUATION):
            record = EvalRecord(
                step=step,
                train_loss=float(logs.get("loss", math.nan)),
                train_precision=float(logs.get("precision", math.nan)),
                validation=evaluator.evaluate(data.validation),
                learning_rate=float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
            )
            model.reset_metrics()  # each record describes its own period
            progress.on_evaluation(record)
            decision = rules.observe(
                record,
                carried_training + clock.training_seconds(),
                carried_wall + time.perf_counter() - job_started,
                final=step == t.steps,
            )
            if decision.stop is not None:
                model.stop_training = True
                log.info("%s", _stop_message(rules, step))
            elif pruner is not None and step < t.steps and pruner(record):
                stops.prune()  # a run stopping anyway is finished, never pruned
        rate = clock.examples_per_second_since_last_asked()
        with clock.timed(SUMMARIES):
            summaries.write_evaluation(record, rate)
        if decision.improved:
            assert rules.best_value is not None
            with clock.timed(CHECKPOINTS):
                checkpoints.keep_best(step, rules.best_value)

    def save(step: int, logs: dict[str, Any]) -> None:
        rules.training_seconds = carried_training + clock.training_seconds()
        rules.wall_seconds = carried_wall + time.perf_counter() - job_started
        with clock.timed(CHECKPOINTS):
            checkpoints.save(step)

    # Order matters: divergence stops the run before anything records the bad step.
    clock.each_call(check_divergence)
    clock.each_call(stop_if_asked)
    clock.each_call(progress.update)
    clock.every(t.eval_every, evaluate)
    clock.every(t.checkpoint_every, save)

    progress.begin()
    try:
        with stops.on_signals():
            model.fit(
                batches,
                steps_per_epoch=t.steps - start_step,
                epochs=1,
                verbose=0,
                shuffle=False,  # the pipeline shuffles, from the seed
                callbacks=[clock],
            )
    finally:
        progress.close()
    stopped = None
    if clock.step < t.steps and rules.stopped is None:
        stopped = (clock.step, "pruned" if stops.pruned else stops.signum)
    return {
        "step": clock.step,
        "resumed_from_step": start_step,
        **clock.throughput(steps_per_call),
        "stopped": stopped,
        "late_signal": stops.signum if stopped is None else None,
    }


def _stop_message(rules: StoppingRules, step: int) -> str:
    if rules.stopped == TARGET:
        return f"stopping at step {step}: validation precision reached {rules.target}"
    return (
        f"early stopping at step {step}: {rules.monitor} has not improved by more than "
        f"{rules.min_delta:g} for {rules.patience} evaluations (best at step {rules.best_step})"
    )


def _steps_per_call(configured: int, steps_left: int, start_step: int) -> int:
    """``trainer.steps_per_execution``, or a divisor of it that fits the steps left.

    A run resumed at a step that is not a multiple of it (a run stopped by Ctrl-C with another
    setting, say) runs fewer steps per call: the cadence, and so the results, stay the same.
    """
    if steps_left % configured == 0:
        return configured
    fitted = math.gcd(configured, steps_left)
    log.info(
        "trainer.steps_per_execution=%d does not divide the %d steps left after step %d: "
        "running %d per call",
        configured,
        steps_left,
        start_step,
        fitted,
    )
    return fitted
