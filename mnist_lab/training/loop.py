"""The one train/eval loop: config -> data -> model -> ``model.fit`` -> outputs.

Training is a single Keras ``fit`` over a stream of exactly ``trainer.steps`` batches (fewer
when resuming). The step clock (``training.clock``) runs the periodic work (validation, logs,
summaries, checkpoints) at the global steps where it is due, so a run of any length, cadence
and steps per call is one compiled loop.

A run ends all or nothing: the final evaluation, the summaries, ``model.keras`` and the
predictions are written first and ``metrics.json`` last, so a run is finished exactly when
``metrics.json`` exists. A run stopped anywhere before that (kill -9, Ctrl-C, a full disk)
is completed by running the same command again, with the same results.
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

from omegaconf import DictConfig, OmegaConf

from mnist_lab.core.backend import configure_tensorflow, keras  # first: imports TensorFlow quietly
from mnist_lab.core.errors import DivergedError, FolderRefused, UserError
from mnist_lab.data import Dataset, load_dataset
from mnist_lab.data.pipeline import train_batches
from mnist_lab.rundir import layout, locks, records, resume
from mnist_lab.rundir.checkpoints import Checkpoints
from mnist_lab.rundir.interrupts import Interrupted, StopRequests, TrialPruned
from mnist_lab.rundir.results import EvalRecord, SplitResult
from mnist_lab.show.progress import Progress
from mnist_lab.show.report import print_report
from mnist_lab.show.summaries import RunSummaries
from mnist_lab.training.clock import CHECKPOINTS, EVALUATION, SUMMARIES, StepClock
from mnist_lab.training.evaluation import Evaluator
from mnist_lab.training.models import build_compiled_model, export_model

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
        return _finished(run_dir, data)
    if plan == resume.CONTINUE:
        resume.check_same_data(run_dir, data.fingerprint)
    _start_record(run_dir, cfg, overrides, data, started_at)

    configure_tensorflow(cfg)
    model = build_compiled_model(cfg)
    log.info("model: %s, %s parameters", model.name, f"{model.count_params():,}")
    checkpoints = Checkpoints(layout.checkpoints_dir(run_dir), model, cfg.seed, t.keep_checkpoints)
    start_step = checkpoints.restore_latest()  # resume.plan refused steps below the newest
    evaluator = Evaluator(model, t.eval_batch_size)
    summaries = RunSummaries(run_dir / layout.TENSORBOARD, model, cfg, data)

    late_signal = None
    if start_step < t.steps:
        training = _fit(cfg, model, data, evaluator, summaries, checkpoints, start_step, pruner)
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
        _update_record(run_dir, training=training)
    else:
        training = _recorded_training(run_dir, t.steps)

    metrics = _finish(cfg, run_dir, model, data, evaluator, summaries, training, overrides,
                      started, started_at)  # fmt: skip
    if late_signal is not None:
        # Ctrl-C during the last compiled call: the run finished anyway (and is complete);
        # the signal still stops what comes next, a sweep's next job say.
        log.warning("stopping: %s came as the run finished", signal.Signals(late_signal).name)
        raise Interrupted(late_signal, "stopped after the run finished")
    return metrics


# ---------------------------------------------------------------- the parts


def _finished(run_dir: Path, data: Dataset) -> dict[str, Any]:
    """A run already finished with this config: show its results, write nothing."""
    metrics = records.read_json(run_dir / layout.METRICS) or {}
    recorded = (metrics.get("data") or {}).get("fingerprint")
    if recorded is not None and recorded != data.fingerprint:
        raise FolderRefused(
            f"{run_dir} finished on other data ({metrics['data'].get('location')}) than the "
            f"data named now ({data.location}); use another folder to train on it"
        )
    log.info("this run already finished; its results: %s", run_dir / layout.METRICS)
    results = {s: SplitResult.from_dict(metrics[s]) for s in layout.SPLITS}
    print_report(results, _title(metrics["config"], metrics["step"]))
    return metrics


def _start_record(
    run_dir: Path, cfg: DictConfig, overrides: list[str], data: Dataset, started_at: str
) -> None:
    """Write what the run is, before anything else: its config and its record.

    A rerun of a run that had finished with another config (more steps, say) makes its old
    results stale, and a pruned or failed run is trying again: their markers go first.
    """
    for stale in (layout.METRICS, layout.PRUNED, layout.ERROR, layout.PREDICTIONS):
        (run_dir / stale).unlink(missing_ok=True)
    folder = layout.checkpoints_dir(run_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{layout.SAVED_CONFIG}.tmp"
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        tmp.replace(folder / layout.SAVED_CONFIG)
    except OSError as ex:
        raise UserError(f"cannot write in {folder}: {ex.strerror or ex}") from ex
    previous = records.read_json(layout.run_record(run_dir)) or {}
    records.write_json(
        layout.run_record(run_dir),
        {
            "started": started_at,
            "overrides": overrides,
            "data": {"name": data.name, "location": data.location, "fingerprint": data.fingerprint},
            # Kept when the run had finished training: a rerun completes only its end.
            "training": previous.get("training"),
        },
    )


def _update_record(run_dir: Path, **fields: Any) -> None:
    record = records.read_json(layout.run_record(run_dir)) or {}
    records.write_json(layout.run_record(run_dir), {**record, **fields})


def _recorded_training(run_dir: Path, steps: int) -> dict[str, Any]:
    """The training figures of a run whose training ended in an earlier process."""
    training = (records.read_json(layout.run_record(run_dir)) or {}).get("training") or {}
    if training.get("step") == steps:
        return training
    return {
        "step": steps,
        "resumed_from_step": steps,
        "train_examples_per_second": None,
        "loop_examples_per_second": None,
    }


def _fit(
    cfg: DictConfig,
    model: keras.Model,
    data: Dataset,
    evaluator: Evaluator,
    summaries: RunSummaries,
    checkpoints: Checkpoints,
    start_step: int,
    pruner: Pruner | None,
) -> dict[str, Any]:
    """Train from ``start_step`` to ``trainer.steps``; the training figures, and why it stopped
    early (``stopped``: (step, signal number or "pruned")) if it did."""
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
            if pruner is not None and step < t.steps and pruner(record):
                stops.prune()
        rate = clock.examples_per_second_since_last_asked()
        with clock.timed(SUMMARIES):
            summaries.write_evaluation(record, rate)
        with clock.timed(CHECKPOINTS):
            checkpoints.keep_if_best(record)

    def save(step: int, logs: dict[str, Any]) -> None:
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
    if clock.step < t.steps:
        stopped = (clock.step, "pruned" if stops.pruned else stops.signum)
    return {
        "step": clock.step,
        "resumed_from_step": start_step,
        **clock.throughput(steps_per_call),
        "stopped": stopped,
        "late_signal": stops.signum if stopped is None else None,
    }


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


def _finish(
    cfg: DictConfig,
    run_dir: Path,
    model: keras.Model,
    data: Dataset,
    evaluator: Evaluator,
    summaries: RunSummaries,
    training: dict[str, Any],
    overrides: list[str],
    started: float,
    started_at: str,
) -> dict[str, Any]:
    """Evaluate the three splits, write everything else, then ``metrics.json``."""
    evaluation_started = time.perf_counter()
    evaluated = {split: evaluator.run(getattr(data, split)) for split in layout.SPLITS}
    final_evaluation_seconds = time.perf_counter() - evaluation_started
    wall_seconds = time.perf_counter() - started
    results = {split: predictions.result for split, predictions in evaluated.items()}

    summaries.end(results, validation_predicted=evaluated["validation"].classes)
    export_model(model, run_dir / layout.MODEL)
    _write_predictions(run_dir / layout.PREDICTIONS, data, evaluated)
    metrics = {
        "step": training["step"],
        **{name: r.as_dict() for name, r in results.items()},
        "train_examples_per_second": training.get("train_examples_per_second"),
        "loop_examples_per_second": training.get("loop_examples_per_second"),
        "final_evaluation_seconds": final_evaluation_seconds,
        "wall_seconds": wall_seconds,
        "resumed_from_step": training.get("resumed_from_step", cfg.trainer.steps),
        "started": started_at,
        "overrides": overrides,
        "data": {"name": data.name, "location": data.location, "fingerprint": data.fingerprint},
        "config": resume.as_dict(cfg),
    }
    # Last: from here on the run is finished, for resume, sweeps and every listing.
    records.write_json(run_dir / layout.METRICS, metrics)
    print_report(results, _title(metrics["config"], metrics["step"]))
    log.info("metrics: %s", run_dir / layout.METRICS)
    if cfg.trainer.tensorboard:
        log.info("%s", resume.tensorboard_command(run_dir / layout.TENSORBOARD))
    return metrics


def _write_predictions(path: Path, data: Dataset, evaluated: dict[str, Any]) -> None:
    """Each split's labels and predicted probabilities, for ensembles of runs."""
    records.write_predictions(
        path,
        {split: predictions.probabilities for split, predictions in evaluated.items()},
        {split: getattr(data, split).labels for split in evaluated},
    )


def _title(config: dict[str, Any], step: int) -> str:
    return f"{config['model']['name']} on {config['data']['name']}, step {step}"
