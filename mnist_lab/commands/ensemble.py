"""``mnist-lab-ensemble``: average the predicted probabilities of a sweep's finished runs.

    mnist-lab-ensemble outputs/multirun/2026-11-22/10-05-00-000000  # every finished job
    mnist-lab-ensemble SWEEP --top 3            # the 3 best by validation precision
    mnist-lab-ensemble SWEEP --greedy           # added one at a time while validation improves
    mnist-lab-ensemble SWEEP_A SWEEP_B RUN --output outputs/my-ensemble

The report is a run's: the same table, and a ``metrics.json`` (with ``members`` and how they
were chosen) and ``predictions.npz`` in the output folder, ``<SWEEP_DIR>/ensemble/`` by default;
never in a run's folder (a run folder alone needs ``--output``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mnist_lab.commands import run_command
from mnist_lab.core.console import console
from mnist_lab.core.errors import UserError
from mnist_lab.listing import ensemble
from mnist_lab.show.report import print_report

DEFAULT_FOLDER = "ensemble"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mnist-lab-ensemble",
        description="Combine the finished runs of sweeps (or run folders) by averaging their "
        "predicted probabilities; members are chosen on the validation split only.",
    )
    parser.add_argument(
        "paths", type=Path, nargs="+", metavar="SWEEP_DIR", help="a sweep folder or a run folder"
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--top", type=int, metavar="K", help="the K best runs by validation precision"
    )
    choice.add_argument(
        "--greedy",
        action="store_true",
        help="add runs one at a time while the validation precision improves",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="where to write metrics.json and predictions.npz (default: "
        f"<SWEEP_DIR>/{DEFAULT_FOLDER}/; needed with several folders or a run folder)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    def body() -> None:
        started = time.perf_counter()
        if args.output is None and len(args.paths) > 1:
            raise UserError("--output is needed to combine several folders: name where to write")
        output = args.output or args.paths[0] / DEFAULT_FOLDER
        ensemble.check_output(output, named=args.output is not None)
        method = ensemble.TOP if args.top is not None else ensemble.ALL
        method = ensemble.GREEDY if args.greedy else method
        result, skipped = ensemble.build(args.paths, method, args.top)
        for s in skipped:
            console.print(f"skipped ({s.status}): {s.dir}", markup=False, soft_wrap=True)
        for member in result.members:
            precision = member.validation_precision
            shown = "-" if precision is None else f"{precision:.4f}"
            console.print(f"member: validation {shown}  {member.dir}", markup=False, soft_wrap=True)
        if "train" not in result.results:
            console.print("train: not reported (the members trained on different examples)")
        seconds = time.perf_counter() - started
        path = ensemble.write(result, output, skipped, seconds)
        data_name = result.members[0].data.get("name", "?")
        print_report(result.results, title=f"ensemble of {len(result.members)} on {data_name}")
        console.print(f"members: {result.chosen_by}", markup=False, soft_wrap=True)
        console.print(f"metrics: {path}", markup=False, soft_wrap=True)

    run_command(body)


if __name__ == "__main__":
    main()
