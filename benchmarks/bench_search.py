"""What pruning saves: one Optuna search on real MNIST, without a pruner and with the median one.

Runs ``mnist-lab hparams_search=optuna`` twice through the real CLI, one search after the other
and never at the same time, with the same seed, trials and steps; only
``hydra.sweeper.pruner`` differs (``none``, then ``median``, the preset's default). For each it
reports the machine time (the wall clock of the command, and the CPU time of its process and
children), the training steps the trials ran in all, how many trials finished or were
pruned, and the best validation precision found (with its trial). A table, and JSON in
``benchmarks/search_results.json``.

    .venv/bin/python benchmarks/bench_search.py                       # about 8 minutes on 2 cores
    .venv/bin/python benchmarks/bench_search.py --trials 6 --steps 200
    .venv/bin/python benchmarks/bench_search.py --data fake           # a smoke test, no MNIST

The two searches see the same first trials (TPE draws its first ``n_startup_trials`` at random,
from the seed); once the pruner stops one, the sampler learns from that and the two diverge.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
MNIST_LAB = str(Path(sys.executable).parent / "mnist-lab")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_search(pruner: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sweep_dir = workdir / f"pruner-{pruner}"
    command = [
        MNIST_LAB,
        "hparams_search=optuna",
        f"data={args.data}",
        f"seed={args.seed}",
        f"trainer.steps={args.steps}",
        f"trainer.eval_every={args.eval_every}",
        f"trainer.checkpoint_every={args.steps}",
        # One evaluation of the warm-up is noise: a short schedule warms up for 10% of it.
        f"optimizer.schedule.warmup_steps={args.steps // 10}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.sampler.n_startup_trials={args.startup}",
        f"hydra.sweeper.pruner={pruner}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    cpu, wall = children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, children_cpu_seconds() - cpu
    # 1: a trial failed (a learning rate that diverges, say): part of a search, reported below.
    if result.returncode not in (0, 1):
        sys.exit(f"the {pruner} search failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads((sweep_dir / "summary.json").read_text())
    best = json.loads((sweep_dir / "best.json").read_text())
    jobs = summary["jobs"]
    return {
        "pruner": pruner,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "trials": len(jobs),
        "finished": summary["counts"]["finished"],
        "pruned": summary["counts"]["pruned"],
        "failed": summary["counts"]["failed"],
        "training_steps": sum(job["steps"] or 0 for job in jobs),
        "best_validation_precision": best.get("value"),
        "best_trial": best.get("trial"),
        "best_overrides": [o for o in best.get("overrides", []) if o.split("=")[0] in PARAMS],
        "sweep_dir": str(sweep_dir),
        "command": " ".join(command[1:]),
    }


PARAMS = ("optimizer.lr", "trainer.batch_size", "model.hidden_units")


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    table = Table(
        title=f"hparams_search=optuna on {args.data}: {args.trials} trials of {args.steps} steps, "
        f"seed {args.seed}"
    )
    columns = ("pruner", "wall", "CPU", "steps run", "finished", "pruned", "failed", "best val.")
    for column in columns:
        table.add_column(column, justify="left" if column == "pruner" else "right")
    for row in rows:
        table.add_row(
            row["pruner"],
            f"{row['wall_seconds']:.0f} s",
            f"{row['cpu_seconds']:.0f} s",
            f"{row['training_steps']:,}",
            str(row["finished"]),
            str(row["pruned"]),
            str(row["failed"]),
            "-" if row["best_validation_precision"] is None
            else f"{row['best_validation_precision']:.4f} (trial {row['best_trial']})",
        )  # fmt: skip
    # In a pipe rich would squeeze the table into 80 columns.
    console = Console()
    (console if console.is_terminal else Console(width=120)).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--startup", type=int, default=6, help="TPE's random trials first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="mnist", help="mnist, or fake for a smoke test")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "search_results.json")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep the sweeps")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for pruner in ("none", "median"):
            print(f"search with pruner={pruner} ...", file=sys.stderr, flush=True)
            rows.append(run_search(pruner, args, workdir))
    print_table(rows, args)
    base, pruned = rows
    saved = {
        "wall_seconds": round(1 - pruned["wall_seconds"] / base["wall_seconds"], 3),
        "cpu_seconds": round(1 - pruned["cpu_seconds"] / base["cpu_seconds"], 3),
        "training_steps": round(1 - pruned["training_steps"] / base["training_steps"], 3),
    }
    print(
        f"median pruning saved {saved['wall_seconds']:.0%} of the wall time, "
        f"{saved['cpu_seconds']:.0%} of the CPU time and {saved['training_steps']:.0%} of the "
        "training steps; best validation precision "
        f"{base['best_validation_precision']} without, {pruned['best_validation_precision']} with"
    )
    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "keep")},
        "searches": rows,
        "saved_by_pruning": saved,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
