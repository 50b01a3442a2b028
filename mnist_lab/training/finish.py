"""The end of a run: the final evaluation of the three splits, the summaries, ``model.keras``,
``predictions.npz``, then ``metrics.json``, last, atomically: from then on the run is
finished, for resume, sweeps and every listing. Also the reuse of a run finished before."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnist_lab.core.backend import keras
from mnist_lab.core.errors import FolderRefused
from mnist_lab.data import Dataset
from mnist_lab.rundir import layout, records, resume
from mnist_lab.rundir.results import SplitResult
from mnist_lab.show.report import print_report
from mnist_lab.show.summaries import RunSummaries
from mnist_lab.training.evaluation import Evaluator, per_class
from mnist_lab.training.models import export_model

log = logging.getLogger("mnist_lab.training.loop")


def reuse_finished(run_dir: Path, data: Dataset) -> dict[str, Any]:
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
    # An older mnist-lab's metrics.json has no config: its checkpoints/config.yaml is the one.
    print_report(results, title(metrics, records.read_run(run_dir).config))
    log_stop(metrics)
    return metrics


def finish(
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

    validation = evaluated["validation"]
    summaries.end(results, validation.classes, training["stop"], validation.probabilities)
    if cfg.trainer.tensorboard and cfg.trainer.embeddings and len(data.validation):
        _write_projector(cfg, run_dir, model, data, validation.classes, training["stop"])
    export_model(model, run_dir / layout.MODEL)
    _write_predictions(run_dir / layout.PREDICTIONS, data, evaluated)
    metrics = {
        "step": training["step"],
        **{name: r.as_dict() for name, r in results.items()},
        "per_class": _per_class(data, evaluated),
        "train_examples_per_second": training.get("train_examples_per_second"),
        "loop_examples_per_second": training.get("loop_examples_per_second"),
        "final_evaluation_seconds": final_evaluation_seconds,
        "wall_seconds": wall_seconds,
        "resumed_from_step": training.get("resumed_from_step", cfg.trainer.steps),
        "stop": training["stop"],
        "machine": training["machine"],
        "started": started_at,
        "overrides": overrides,
        "data": {"name": data.name, "location": data.location, "fingerprint": data.fingerprint},
        "config": resume.as_dict(cfg),
    }
    # Last: from here on the run is finished, for resume, sweeps and every listing.
    records.write_json(run_dir / layout.METRICS, metrics)
    print_report(results, title(metrics))
    log_stop(metrics)
    log.info("metrics: %s", run_dir / layout.METRICS)
    if cfg.trainer.tensorboard:
        log.info("%s", resume.tensorboard_command(run_dir / layout.TENSORBOARD))
    return metrics


def _per_class(data: Dataset, evaluated: dict[str, Any]) -> dict[str, Any]:
    """Each class's precision, recall and support on the splits that are not for training."""
    return {
        split: per_class(
            getattr(data, split).labels, evaluated[split].classes, len(data.class_names)
        )
        for split in ("validation", "test")
    }


def _write_projector(
    cfg: DictConfig,
    run_dir: Path,
    model: keras.Model,
    data: Dataset,
    predicted: Any,
    stop: dict[str, Any],
) -> None:
    """The embedding projector of the first validation images, once, at the end."""
    from mnist_lab.show.projector import write_projector  # only for the runs that have it

    n = min(cfg.trainer.embeddings_size, len(data.validation))
    validation = data.validation
    folder = write_projector(
        run_dir / layout.TENSORBOARD,
        model,
        validation.images[:n],
        validation.labels[:n],
        predicted[:n],
        data.class_names,
        step=int(stop["best_step"]),  # whose weights these are
        batch_size=cfg.trainer.eval_batch_size,
    )
    log.info("projector: %d validation images in %s", n, folder)


def _write_predictions(path: Path, data: Dataset, evaluated: dict[str, Any]) -> None:
    """Each split's labels and predicted probabilities, for ensembles of runs."""
    records.write_predictions(
        path,
        {split: predictions.probabilities for split, predictions in evaluated.items()},
        {split: getattr(data, split).labels for split in evaluated},
    )


def title(metrics: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """``cnn on mnist, step 1600``: of ``config``, by default the one in ``metrics``."""
    config = metrics.get("config") if config is None else config
    model, data = records.metric(config, "model.name"), records.metric(config, "data.name")
    return f"{model} on {data}, step {metrics['step']}"


def log_stop(metrics: dict[str, Any]) -> None:
    """Below the table: why training ended where it did, and whose weights these are."""
    stop = metrics.get("stop")
    if not stop:  # a run made before stopping rules existed: it ran its steps
        return
    reason = stop.get("reason")
    if reason in (None, "steps") and stop.get("best_step") == metrics["step"]:
        return
    words = "the steps ran out" if reason in (None, "steps") else str(reason).replace("_", " ")
    line = f"stopped: {words} at step {stop['step']}"
    if stop.get("best_step") != stop.get("step"):
        line += f"; weights of step {stop['best_step']}, the best evaluation"
    log.info("%s", line)
