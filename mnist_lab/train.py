"""The one train/eval loop: config -> data -> model -> ``model.fit`` with callbacks -> outputs.

Training is a single Keras ``fit`` over a stream of exactly ``trainer.steps`` batches (fewer
when resuming). The periodic work (validation, logging, summaries, checkpoints) happens in
callbacks keyed by the global step, so a run of any length and any ``eval_every`` is one
compiled loop.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnist_lab.backend import configure_tensorflow, keras  # first: imports TensorFlow quietly
from mnist_lab.callbacks import DivergenceGuard, PeriodicEvaluation
from mnist_lab.checkpoints import Checkpoints
from mnist_lab.data import load_dataset
from mnist_lab.data.pipeline import train_batches
from mnist_lab.evaluation import Evaluator, print_report, write_metrics
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
        "data: %s (%d train, %d validation, %d test) from %s",
        data.name,
        len(data.train),
        len(data.validation),
        len(data.test),
        data.source,
    )

    model = build_compiled_model(cfg)
    log.info("model: %s, %s parameters", model.name, f"{model.count_params():,}")

    checkpoints = Checkpoints(run_dir / "checkpoints", model, cfg)
    start_step = checkpoints.restore_latest()

    evaluator = Evaluator(model, t.eval_batch_size)
    summaries = RunSummaries(run_dir / "tensorboard", model, cfg, data, evaluator)
    progress = Progress(total_steps=t.steps, batch_size=t.batch_size, start_step=start_step)
    evaluation = PeriodicEvaluation(
        evaluator,
        data.validation,
        every=t.eval_every,
        total_steps=t.steps,
        start_step=start_step,
        listeners=[progress.on_evaluation, summaries.on_evaluation, checkpoints.on_evaluation],
    )
    # Order matters: stop on divergence before anything records the bad step.
    callbacks = [
        DivergenceGuard(start_step),
        evaluation,
        *summaries.callbacks(start_step),
        checkpoints.callback(start_step),
        progress,
    ]

    if start_step < t.steps:
        with checkpoints.saved_on_interrupt():
            model.fit(
                train_batches(data.train, t.batch_size, seed=cfg.seed, start_step=start_step),
                steps_per_epoch=t.steps - start_step,
                epochs=1,
                verbose=0,
                shuffle=False,  # the pipeline shuffles, from the seed
                callbacks=callbacks,
            )
    # Time in evaluation, summaries and checkpoints is not training time.
    train_seconds = progress.train_seconds - evaluation.seconds - summaries.seconds
    train_seconds -= checkpoints.seconds

    results = {
        "train": evaluator.evaluate(data.train),
        "validation": evaluator.evaluate(data.validation),
        "test": evaluator.evaluate(data.test),
    }
    trained_steps = t.steps - start_step
    metrics = {
        "step": t.steps,
        **{name: r.as_dict() for name, r in results.items()},
        "train_examples_per_second": (
            trained_steps * t.batch_size / train_seconds if trained_steps else None
        ),
        "wall_seconds": time.perf_counter() - started,
        "resumed_from_step": start_step,
    }
    summaries.on_end(results)
    checkpoints.export(run_dir)
    print_report(results, title=f"{model.name} on {data.name}, step {t.steps}")
    write_metrics(run_dir / "metrics.json", metrics)
    log.info("metrics: %s", run_dir / "metrics.json")
    log.info("tensorboard --logdir %s", run_dir / "tensorboard")
    return metrics
