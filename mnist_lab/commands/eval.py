"""``mnist-lab-eval``: evaluate a run's checkpoint on train/validation/test.

The model is rebuilt from the config that produced the run's results (the one inside its
``metrics.json``, or the one saved with its checkpoints), the weights are restored, and the
splits are counted by the same Evaluator as training used, so on a finished run the numbers
are exactly those of its ``metrics.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mnist_lab.commands import run_command
from mnist_lab.core.errors import UserError
from mnist_lab.rundir import records, resume
from mnist_lab.rundir.layout import (
    BEST,
    CHECKPOINTS,
    EVAL,
    SPLITS,
    STATE_FILE,
    checkpoint_steps,
)


@dataclass(frozen=True)
class Target:
    """What to evaluate: the run it belongs to, and a checkpoint prefix or folder."""

    run_dir: Path
    checkpoint: Path  # a checkpoint prefix (…/ckpt-60) or a folder whose latest is meant


def locate(path: Path, best: bool = False) -> Target:
    """Resolve a run folder, its ``checkpoints/`` (or ``best/``) folder, or one checkpoint."""
    if path.name.endswith(".index"):
        path = path.with_name(path.name[: -len(".index")])
    if (path / CHECKPOINTS).is_dir():
        return locate(path / CHECKPOINTS, best)
    if (path / STATE_FILE).is_file() or (path / BEST).is_dir():
        folder = path / BEST if best and path.name != BEST else path
        if best and not checkpoint_steps(folder):  # no TensorFlow yet: the files say
            _no_best(_run_of(folder), folder)
        return Target(_run_of(folder), folder)
    if path.with_name(path.name + ".index").is_file():
        if best:
            raise UserError(f"--best is not valid with one checkpoint ({path}): give the run dir")
        return Target(_run_of(path.parent), path)
    raise UserError(
        f"no checkpoint at {path}: expected a run directory of mnist-lab, its checkpoints/ "
        "folder or a checkpoint such as <run>/checkpoints/ckpt-1200"
    )


def _no_best(run_dir: Path, folder: Path) -> None:
    """Why a run has no best checkpoint: no validation split to choose one, a finished run's
    that is gone, or none saved yet."""
    info = records.read_run(run_dir)
    data = records.metric(info.config, "data.validation_size")
    if data == 0:
        raise UserError(
            f"no best checkpoint in {run_dir}: the run has no validation split "
            "(data.validation_size=0), and the best is chosen on it; evaluate its last "
            "checkpoint without --best"
        )
    if info.finished:
        raise UserError(
            f"no best checkpoint in {folder}: the run kept one and it is not there (deleted?); "
            "evaluate its last checkpoint without --best"
        )
    raise UserError(f"no checkpoint in {folder}: the run saved none yet")


def _run_of(folder: Path) -> Path:
    """The run dir of a checkpoint folder: <run>/checkpoints or <run>/checkpoints/best."""
    return folder.parent.parent if folder.name == BEST else folder.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mnist-lab-eval",
        description="Evaluate a checkpoint of an mnist-lab run and write the results as JSON.",
    )
    parser.add_argument("path", type=Path, help="a run dir, its checkpoints/ or one checkpoint")
    parser.add_argument(
        "--split",
        action="append",
        choices=SPLITS,
        help="a split to evaluate (repeatable; default: all three)",
    )
    parser.add_argument(
        "--best", action="store_true", help="the best checkpoint by validation precision"
    )
    parser.add_argument("--output", type=Path, help="the JSON file (default: <run>/eval.json)")
    return parser.parse_args(argv)


def evaluate(target: Target, splits: list[str], output: Path) -> dict:
    """Restore ``target``, evaluate ``splits``, print the report, write ``output``."""
    cfg = resume.recorded_config(target.run_dir)
    from mnist_lab.core.backend import configure_tensorflow  # TensorFlow: only once args are good
    from mnist_lab.data import load_dataset
    from mnist_lab.rundir.checkpoints import latest_checkpoint, restore_model
    from mnist_lab.show.classes import print_per_class
    from mnist_lab.show.report import print_report
    from mnist_lab.training.evaluation import Evaluator, per_class
    from mnist_lab.training.models import build_compiled_model

    checkpoint = latest_checkpoint(target.checkpoint)
    configure_tensorflow(cfg)
    data = load_dataset(cfg.data)
    resume.check_same_data(target.run_dir, data.fingerprint, action="evaluate")
    model = build_compiled_model(cfg)
    step = restore_model(model, checkpoint)
    evaluator = Evaluator(model, cfg.trainer.eval_batch_size)
    predictions = {name: evaluator.run(getattr(data, name)) for name in splits}
    results = {name: p.result for name, p in predictions.items()}
    classes = {
        name: per_class(getattr(data, name).labels, p.classes, len(data.class_names))
        for name, p in predictions.items()
    }
    name = Path(checkpoint).name
    name = f"{BEST}/{name}" if Path(checkpoint).parent.name == BEST else name
    print_report(results, title=f"{model.name} on {data.name}, step {step} ({name})")
    print_per_class(classes, data.class_names)
    report = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "step": step,
        **{name: r.as_dict() for name, r in results.items()},
        "per_class": classes,
    }
    records.write_json(output, report)
    print(f"results: {output}")
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> None:
        target = locate(args.path, best=args.best)
        output = args.output or target.run_dir / EVAL
        splits = list(dict.fromkeys(args.split or SPLITS))  # in order, each once
        evaluate(target, splits, output)

    run_command(body)


if __name__ == "__main__":
    main()
