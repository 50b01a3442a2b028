"""``mnist-lab-eval``: evaluate a run's checkpoint on train/validation/test.

The model is rebuilt from the config the run saved next to its checkpoints, the weights are
restored, and the splits are counted by the same Evaluator as training used, so on a finished
run the numbers are exactly those of its ``metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from mnist_lab.console import error_line
from mnist_lab.errors import EXIT_USER_ERROR, UserError

SPLITS = ("train", "validation", "test")
# The run's layout, as mnist_lab.checkpoints writes it (not imported here: it loads TensorFlow;
# tests/test_eval_predict.py checks the two agree).
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"
STATE_FILE = "checkpoint"  # TensorFlow's checkpoint state file


@dataclass(frozen=True)
class Target:
    """What to evaluate: the run it belongs to, and a checkpoint prefix or folder."""

    run_dir: Path
    checkpoint: Path  # a checkpoint prefix (…/ckpt-60) or a folder whose latest is meant


def locate(path: Path, best: bool = False) -> Target:
    """Resolve a run folder, its ``checkpoints/`` (or ``best/``) folder, or one checkpoint."""
    if path.name.endswith(".index"):
        path = path.with_name(path.name[: -len(".index")])
    if (path / CHECKPOINTS_DIR).is_dir():
        return locate(path / CHECKPOINTS_DIR, best)
    if (path / STATE_FILE).is_file() or (path / BEST_DIR).is_dir():
        folder = path / BEST_DIR if best and path.name != BEST_DIR else path
        return Target(_run_of(folder), folder)
    if path.with_name(path.name + ".index").is_file():
        if best:
            raise UserError(f"--best is not valid with one checkpoint ({path}): give the run dir")
        return Target(_run_of(path.parent), path)
    raise UserError(
        f"no checkpoint at {path}: expected a run directory of mnist-lab, its checkpoints/ "
        "folder or a checkpoint such as <run>/checkpoints/ckpt-1200"
    )


def _run_of(folder: Path) -> Path:
    """The run dir of a checkpoint folder: <run>/checkpoints or <run>/checkpoints/best."""
    return folder.parent.parent if folder.name == BEST_DIR else folder.parent


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
    from mnist_lab.backend import configure_tensorflow  # TensorFlow: only once args are good
    from mnist_lab.checkpoints import latest_checkpoint, load_config, restore_model
    from mnist_lab.data import load_dataset
    from mnist_lab.evaluation import Evaluator, print_report, write_metrics
    from mnist_lab.train import build_compiled_model

    cfg = load_config(target.run_dir / CHECKPOINTS_DIR / CONFIG_FILE)
    checkpoint = latest_checkpoint(target.checkpoint)
    configure_tensorflow(cfg)
    data = load_dataset(cfg.data)
    model = build_compiled_model(cfg)
    step = restore_model(model, checkpoint)
    evaluator = Evaluator(model, cfg.trainer.eval_batch_size)
    results = {name: evaluator.evaluate(getattr(data, name)) for name in splits}
    name = Path(checkpoint).name
    name = f"{BEST_DIR}/{name}" if Path(checkpoint).parent.name == BEST_DIR else name
    print_report(results, title=f"{model.name} on {data.name}, step {step} ({name})")
    report = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "step": step,
        **{name: r.as_dict() for name, r in results.items()},
    }
    try:
        write_metrics(output, report)
    except OSError as ex:
        raise UserError(f"cannot write {output}: {ex.strerror or ex}") from ex
    print(f"results: {output}")
    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        target = locate(args.path, best=args.best)
        output = args.output or target.run_dir / "eval.json"
        splits = list(dict.fromkeys(args.split or SPLITS))  # in order, each once
        evaluate(target, splits, output)
    except UserError as ex:
        error_line(str(ex))
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
