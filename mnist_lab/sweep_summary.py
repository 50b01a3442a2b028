"""The summary of a sweep: every job, read back from its directory, ranked by validation precision.

Jobs are read from disk (``metrics.json``, ``error.json``, ``.hydra/overrides.yaml``), not from
the launcher's return values, so the summary is the same whichever launcher ran the jobs (in this
process, in joblib workers, on Ray or on SLURM) and can be rebuilt later for any sweep directory:

    python -m mnist_lab.sweep_summary outputs/multirun/2026-11-22/10-05-00-000000

The test split is shown but never used to rank: choosing a model on it would make the test
result an optimistic estimate.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mnist_lab.console import console

DONE, FAILED, MISSING = "done", "failed", "missing"
RANKED_BY = "validation.precision"
PIPE_WIDTH = 200
CSV_COLUMNS = (
    "rank",
    "job",
    "status",
    "validation_precision",
    "test_precision",
    "steps",
    "wall_seconds",
    "overrides",
    "error",
    "dir",
)


@dataclass
class JobResult:
    """One job of a sweep as its directory tells it."""

    job: str  # the job's directory, relative to the sweep directory (its number, by default)
    dir: str
    overrides: list[str]
    status: str  # done | failed | missing
    error: str | None = None
    validation_precision: float | None = None
    test_precision: float | None = None
    steps: int | None = None
    wall_seconds: float | None = None
    rank: int | None = None  # 1 = best; set by ``rank``


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short by a kill: the job did not finish


def read_job(sweep_dir: Path, job_dir: Path) -> JobResult:
    """A job's status from its files; ``metrics.json`` wins over a stale ``error.json``."""
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    result = JobResult(
        job=str(job_dir.relative_to(sweep_dir)),
        dir=str(job_dir),
        overrides=[str(o) for o in overrides],
        status=MISSING,
    )
    metrics = _read_json(job_dir / "metrics.json")
    error = _read_json(job_dir / "error.json")
    if metrics is not None:
        result.status = DONE
        result.validation_precision = metrics["validation"]["precision"]
        result.test_precision = metrics["test"]["precision"]
        result.steps = metrics.get("step")
        result.wall_seconds = metrics.get("wall_seconds")
    elif error is not None:
        result.status = FAILED
        result.error = f"{error.get('type', 'Error')}: {error.get('error', '')}"
    return result


def _job_order(job: JobResult) -> tuple[int, str]:
    # Numbered jobs in numeric order (2 before 10); other names after them.
    return (int(job.job), "") if job.job.isdigit() else (1 << 62, job.job)


def collect(sweep_dir: Path, expected: Iterable[Sequence[str]] = ()) -> list[JobResult]:
    """Every job directory under ``sweep_dir``, plus the ``expected`` jobs that have none.

    ``expected`` is the override list of every job the sweep meant to run (known up front for a
    grid); one with no directory never started and is reported as missing.
    """
    jobs = [
        read_job(sweep_dir, marker.parent.parent)
        for marker in sweep_dir.glob("**/.hydra/overrides.yaml")
    ]
    seen = {tuple(job.overrides) for job in jobs}
    unstarted = [list(o) for o in expected if tuple(o) not in seen]
    jobs.sort(key=_job_order)
    jobs += [JobResult(job="-", dir="", overrides=o, status=MISSING) for o in unstarted]
    return jobs


def rank(jobs: list[JobResult]) -> list[JobResult]:
    """Finished jobs by validation precision, best first, then failed, then missing jobs.

    The sort is stable: jobs that tie keep their job order, so the earlier job wins a tie.
    """

    def key(job: JobResult) -> tuple[int, float]:
        if job.status == DONE and job.validation_precision is not None:
            return (0, -job.validation_precision)
        return ({DONE: 1, FAILED: 2}.get(job.status, 3), 0.0)

    ranked = sorted(jobs, key=key)
    for i, job in enumerate(ranked, start=1):
        job.rank = i if key(job)[0] == 0 else None
    return ranked


def best(ranked: list[JobResult]) -> JobResult | None:
    return ranked[0] if ranked and ranked[0].rank == 1 else None


def counts(jobs: list[JobResult]) -> dict[str, int]:
    return {status: sum(j.status == status for j in jobs) for status in (DONE, FAILED, MISSING)}


def _common_overrides(jobs: list[JobResult]) -> list[str]:
    """The overrides every job shares, in the order of the first job (none for a single job,
    whose row then shows them all)."""
    if len(jobs) < 2:
        return []
    shared = set.intersection(*(set(j.overrides) for j in jobs))
    return [o for o in jobs[0].overrides if o in shared]


def write(sweep_dir: Path, ranked: list[JobResult]) -> None:
    """``summary.csv`` (one row a job) and ``summary.json`` (the same, with the best job)."""
    csv_path, json_path = sweep_dir / "summary.csv", sweep_dir / "summary.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for job in ranked:
            row = {k: v for k, v in asdict(job).items() if k in CSV_COLUMNS}
            writer.writerow({**row, "overrides": " ".join(job.overrides)})
    top = best(ranked)
    summary = {
        "sweep_dir": str(sweep_dir),
        "ranked_by": RANKED_BY,
        "best": asdict(top) if top else None,
        "counts": counts(ranked),
        "jobs": [asdict(j) for j in ranked],
    }
    json_path.write_text(json.dumps(summary, indent=2) + "\n")


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _status(job: JobResult) -> Text:
    if job.status == DONE:
        return Text(DONE, style="green")
    if job.status == FAILED:
        return Text(f"{FAILED}: {job.error}", style="red")
    return Text(MISSING, style="yellow")


def _output() -> Console:
    # In a pipe or a file rich would squeeze the table into 80 columns: give it room instead.
    return console if console.is_terminal else Console(width=PIPE_WIDTH, highlight=False)


def print_table(ranked: list[JobResult], common: list[str]) -> None:
    table = Table(title=f"sweep summary: {len(ranked)} jobs, ranked by {RANKED_BY}")
    table.add_column("rank", justify="right")
    table.add_column("job", justify="right")
    table.add_column("overrides", overflow="fold")
    table.add_column("validation", justify="right")
    table.add_column("test", justify="right")
    table.add_column("steps", justify="right")
    table.add_column("time", justify="right")
    table.add_column("status", overflow="fold")
    for job in ranked:
        table.add_row(
            _number(job.rank, "d"),
            job.job,
            Text(" ".join(o for o in job.overrides if o not in common)),
            _number(job.validation_precision, ".4f"),
            _number(job.test_precision, ".4f"),
            _number(job.steps, "d"),
            "-" if job.wall_seconds is None else f"{job.wall_seconds:.1f}s",
            _status(job),
        )
    _output().print(table)


def _closing_lines(sweep_dir: Path, ranked: list[JobResult], common: list[str]) -> list[str]:
    """What follows the table: shared overrides, the best job, the counts, where to look next."""
    lines = [f"sweep: {sweep_dir}"]
    if common:
        lines.append(f"every job: {' '.join(common)}")
    top = best(ranked)
    if top is None:
        lines.append("best: none (no job finished)")
    else:
        own = " ".join(o for o in top.overrides if o not in common) or "(no overrides)"
        lines += [
            f"best (by validation precision): job {top.job}, validation "
            f"{_number(top.validation_precision, '.4f')}, test "
            f"{_number(top.test_precision, '.4f')}: {own}",
            f"best job: {top.dir}",
        ]
    lines += [
        ", ".join(f"{n} {status}" for status, n in counts(ranked).items()),
        f"summary: {sweep_dir / 'summary.csv'} {sweep_dir / 'summary.json'}",
        f"tensorboard --logdir {sweep_dir}",
    ]
    return lines


def summarize(sweep_dir: Path, expected: Iterable[Sequence[str]] = ()) -> list[JobResult]:
    """Collect, rank, write and print the summary of ``sweep_dir``; return the ranked jobs."""
    sweep_dir = sweep_dir.resolve()
    ranked = rank(collect(sweep_dir, expected))
    write(sweep_dir, ranked)
    common = _common_overrides(ranked)
    print_table(ranked, common)
    for line in _closing_lines(sweep_dir, ranked, common):
        console.print(line, markup=False, soft_wrap=True)
    return ranked


def all_done(ranked: list[JobResult]) -> bool:
    return bool(ranked) and all(job.status == DONE for job in ranked)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lab.sweep_summary",
        description="Summarise a sweep directory: rank its jobs by validation precision.",
    )
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"not a directory: {args.sweep_dir}")
    ranked = summarize(args.sweep_dir)
    raise SystemExit(0 if all_done(ranked) else 1)


if __name__ == "__main__":
    main()
