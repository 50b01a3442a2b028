"""The one train/eval loop: config -> data -> model -> ``model.fit`` with callbacks -> outputs.

Training is a single Keras ``fit`` over a stream of exactly ``trainer.steps`` batches (fewer
when resuming). The periodic work (validation, logging, summaries, checkpoints) happens in
callbacks keyed by the global step, so a run of any length and any ``eval_every`` is one
compiled loop.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnist_lab.backend import configure_tensorflow, keras  # first: imports TensorFlow quietly
from mnist_lab.callbacks import DivergenceGuard, PeriodicEvaluation, TrainingClock
from mnist_lab.checkpoints import Checkpoints
from mnist_lab.data import load_dataset
from mnist_lab.data.pipeline import train_batches
from mnist_lab.evaluation import SPLITS, Evaluator, SplitResult, print_report, write_metrics
from mnist_lab.models import build_model
from mnist_lab.optimizers import build_optimizer
from mnist_lab.progress import Progress
from mnist_lab.summaries import RunSummaries

log = logging.getLogger(__name__)


def build_compiled_model(cfg: DictConfig) -> keras.Model:
    """The model of ``cfg.model`` compiled with ``cfg.optimizer``, ready to train or restore."""
    t = cfg.trainer
    model = build_model(cfg.model)
    model.compile(
        optimizer=build_optimizer(cfg.optimizer, total_steps=t.steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="precision")],
        steps_per_execution=t.steps_per_execution,
        jit_compile=t.jit_compile,
    )
    return model


def train(cfg: DictConfig, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Train, evaluate on all three splits, write ``metrics.json``; return the metrics."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    configure_tensorflow(cfg)
    t = cfg.trainer

    data = load_dataset(cfg.data)
    log.info(
        "data: %s (%d train, %d validation, %d test)",
        data.name,
        len(data.train),
        len(data.validation),
        len(data.test),
    )

    model = build_compiled_model(cfg)
    log.info("model: %s, %s parameters", model.name, f"{model.count_params():,}")

    checkpoints = Checkpoints(run_dir / "checkpoints", model, cfg)
    start_step = checkpoints.restore_latest()
    metrics_file = run_dir / "metrics.json"
    if start_step == t.steps and metrics_file.exists():
        log.info("this run already finished; its results: %s", metrics_file)
        metrics = json.loads(metrics_file.read_text())
        print_report({s: SplitResult.from_dict(metrics[s]) for s in SPLITS}, _title(model, cfg))
        return metrics

    evaluator = Evaluator(model, t.eval_batch_size)
    summaries = RunSummaries(run_dir / "tensorboard", model, cfg, data)
    progress = Progress(total_steps=t.steps, batch_size=t.batch_size, start_step=start_step)
    evaluation = PeriodicEvaluation(
        evaluator,
        data.validation,
        every=t.eval_every,
        total_steps=t.steps,
        start_step=start_step,
        listeners=[progress.on_evaluation, summaries.on_evaluation, checkpoints.on_evaluation],
    )
    clock = TrainingClock()
    # Order matters: the clock marks the first call before any periodic work; divergence stops
    # the run before anything records the bad step.
    callbacks = [
        clock,
        DivergenceGuard(start_step),
        evaluation,
        *summaries.callbacks(start_step),
        checkpoints.callback(start_step),
        progress,
    ]

    if start_step < t.steps:
        try:
            with checkpoints.saved_on_interrupt():
                model.fit(
                    train_batches(data.train, t.batch_size, seed=cfg.seed, start_step=start_step),
                    steps_per_epoch=t.steps - start_step,
                    epochs=1,
                    verbose=0,
                    shuffle=False,  # the pipeline shuffles, from the seed
                    callbacks=callbacks,
                )
        finally:
            progress.close()  # Keras skips on_train_end when fit raises

    # Each split's result and predicted classes: the summaries draw validation's.
    evaluation_started = time.perf_counter()
    evaluated = {split: evaluator.run(getattr(data, split)) for split in SPLITS}
    final_evaluation_seconds = time.perf_counter() - evaluation_started
    results = {split: result for split, (result, _) in evaluated.items()}
    metrics = {
        "step": t.steps,
        **{name: r.as_dict() for name, r in results.items()},
        **throughput(
            cfg, start_step, clock, evaluation.seconds, summaries.seconds, checkpoints.seconds
        ),
        "final_evaluation_seconds": final_evaluation_seconds,
        "wall_seconds": time.perf_counter() - started,
        "resumed_from_step": start_step,
    }
    # The results first: whatever happens to the summaries or the export, they are kept.
    write_metrics(metrics_file, metrics)
    print_report(results, _title(model, cfg))
    summaries.on_end(results, validation_predicted=evaluated["validation"][1])
    checkpoints.export(run_dir)
    log.info("metrics: %s", metrics_file)
    if t.tensorboard:
        log.info("tensorboard --logdir %s", run_dir / "tensorboard")
    return metrics


def throughput(
    cfg: DictConfig,
    start_step: int,
    clock: TrainingClock,
    evaluation_seconds: float,
    summaries_seconds: float,
    checkpoints_seconds: float,
) -> dict[str, float | None]:
    """Examples per second of training steps alone, and of the loop with everything it writes.

    Both leave out the first compiled call (tracing, a one-off cost) unless it was the only
    one, and the periodic validation passes. ``loop_examples_per_second`` keeps summaries and
    checkpoints in: it is the figure to compare with a plain ``model.fit``.
    """
    t = cfg.trainer
    steps = t.steps - start_step
    if steps == 0:
        return {"train_examples_per_second": None, "loop_examples_per_second": None}
    seconds = clock.seconds_after_first_call
    if steps > t.steps_per_execution:
        steps -= t.steps_per_execution
    else:
        seconds += clock.first_call_seconds
    loop = max(seconds - evaluation_seconds, 1e-9)
    train = max(loop - summaries_seconds - checkpoints_seconds, 1e-9)
    examples = steps * t.batch_size
    return {
        "train_examples_per_second": examples / train,
        "loop_examples_per_second": examples / loop,
    }


def _title(model: keras.Model, cfg: DictConfig) -> str:
    return f"{model.name} on {cfg.data.name}, step {cfg.trainer.steps}"
