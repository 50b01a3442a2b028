"""The summary of a sweep: every job, read back from its directory, ranked by validation precision.

Jobs are read from disk (``mnist_lab.rundir.records``: the same statuses as resume and
``mnist-lab-runs``), not from the launcher's return values, so the summary is the same whichever
launcher ran the jobs (in this process, in joblib workers, on Ray or on SLURM) and can be
rebuilt later for any sweep directory:

    python -m mnist_lab.sweeps.summary outputs/multirun/2026-11-22/10-05-00-000000

A finished job's overrides and results come from its ``metrics.json``, which holds the config
that produced them. The test split is shown but never used to rank: choosing a model on it
would make the test result an optimistic estimate.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mnist_lab.core.console import console, error_line
from mnist_lab.core.errors import EXIT_USER_ERROR, UserError
from mnist_lab.core.files import replacing
from mnist_lab.rundir import layout, records, resume
from mnist_lab.rundir.records import FAILED, FINISHED, INTERRUPTED, PRUNED, RUNNING
from mnist_lab.show.report import stop_text

MISSING = "missing"  # a job of the grid that has no folder: it never started
# In the order the summary ranks them, and counts them.
STATUS_ORDER = (FINISHED, PRUNED, FAILED, RUNNING, INTERRUPTED, MISSING)
RANKED_BY = "validation.precision"
PIPE_WIDTH = 200
CSV_COLUMNS = (
    "rank",
    "job",
    "status",
    "validation_precision",
    "test_precision",
    "steps",
    "stop_reason",
    "best_step",
    "wall_seconds",
    "overrides",
    "error",
    "dir",
)


@dataclass
class JobResult:
    """One job of a sweep as its folder tells it."""

    job: str  # the job's folder, relative to the sweep folder (its number, by default)
    dir: str
    overrides: list[str]
    status: str  # finished | pruned | failed | running | interrupted | missing
    error: str | None = None
    validation_precision: float | None = None
    test_precision: float | None = None
    steps: int | None = None  # the last step trained
    stop_reason: str | None = None  # steps | early_stopping | target (metrics.json's stop)
    best_step: int | None = None  # whose weights the figures are of
    wall_seconds: float | None = None
    rank: int | None = None  # 1 = best; set by ``rank``


def read_job(sweep_dir: Path, job_dir: Path) -> JobResult:
    """A job's status and results from its files (``mnist_lab.rundir.records``)."""
    info = records.read_run(job_dir)
    result = JobResult(
        job=str(job_dir.relative_to(sweep_dir)),
        dir=str(job_dir),
        overrides=info.overrides,
        status=info.status,
        error=info.error or info.damaged,  # a damaged metrics.json says what is wrong with it
    )
    if info.metrics is not None:  # judged sound by records.read_run (rundir/judge.py)
        result.validation_precision = info.metrics["validation"]["precision"]
        result.test_precision = info.metrics["test"]["precision"]
        result.steps = info.metrics.get("step")
        result.stop_reason = records.metric(info.metrics, "stop.reason")
        result.best_step = records.metric(info.metrics, "stop.best_step")
        result.wall_seconds = info.metrics.get("wall_seconds")
    elif info.status == PRUNED and info.pruned is not None:
        result.steps = info.pruned.get("step")
    return result


def collect(sweep_dir: Path, expected: Iterable[Sequence[str]] = ()) -> list[JobResult]:
    """Every job directory under ``sweep_dir``, plus the ``expected`` jobs that have none.

    ``expected`` is the override list of every job the sweep meant to run (known up front for a
    grid, in job order); job N with no folder ``N`` (nor one with its overrides) never started
    and is reported as missing. Matched by number first: a rerun may spell the same config
    with other overrides.
    """
    jobs = [read_job(sweep_dir, job_dir) for job_dir in layout.job_dirs(sweep_dir)]
    names = {job.job for job in jobs}
    seen = {tuple(job.overrides) for job in jobs}
    unstarted = [
        list(o) for n, o in enumerate(expected) if str(n) not in names and tuple(o) not in seen
    ]
    jobs += [JobResult(job="-", dir="", overrides=o, status=MISSING) for o in unstarted]
    return jobs


def rank(jobs: list[JobResult]) -> list[JobResult]:
    """Finished jobs by validation precision, best first, then the others by status.

    The sort is stable: jobs that tie keep their job order, so the earlier job wins a tie.
    """

    def key(job: JobResult) -> tuple[int, float]:
        if job.status == FINISHED and job.validation_precision is not None:
            return (0, -job.validation_precision)
        return (1 + STATUS_ORDER.index(job.status), 0.0)

    ranked = sorted(jobs, key=key)
    for i, job in enumerate(ranked, start=1):
        job.rank = i if key(job)[0] == 0 else None
    return ranked


def best(ranked: list[JobResult]) -> JobResult | None:
    return ranked[0] if ranked and ranked[0].rank == 1 else None


def counts(jobs: list[JobResult]) -> dict[str, int]:
    return {status: sum(j.status == status for j in jobs) for status in STATUS_ORDER}


def _common_overrides(jobs: list[JobResult]) -> list[str]:
    """The overrides every job shares, in the order of the first job (none for a single job,
    whose row then shows them all)."""
    if len(jobs) < 2:
        return []
    shared = set.intersection(*(set(j.overrides) for j in jobs))
    return [o for o in jobs[0].overrides if o in shared]


def write(sweep_dir: Path, ranked: list[JobResult]) -> None:
    """``summary.csv`` (one row a job) and ``summary.json`` (the same, with the best job)."""
    csv_path, json_path = sweep_dir / layout.SUMMARY_CSV, sweep_dir / layout.SUMMARY_JSON
    with replacing(csv_path) as tmp, tmp.open("w", newline="") as f:  # never half a table
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
    records.write_json(json_path, summary)


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


STATUS_STYLES = {FINISHED: "green", PRUNED: "cyan", FAILED: "red", RUNNING: "blue"}


def _status(job: JobResult) -> Text:
    text = f"{job.status}: {job.error}" if job.error else job.status
    return Text(text, style=STATUS_STYLES.get(job.status, "yellow"))


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
    table.add_column("stop")
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
            stop_text(job.stop_reason, job.steps, job.best_step),
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
    if top is None and any(j.status == FINISHED for j in ranked):
        # Finished, but none ranked: the best is chosen on validation, and there is none.
        lines.append("best: none (no validation split: the best is chosen by validation precision)")
    elif top is None:
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
        ", ".join(f"{n} {status}" for status, n in counts(ranked).items() if n),
        f"summary: {sweep_dir / layout.SUMMARY_CSV} {sweep_dir / layout.SUMMARY_JSON}",
        resume.tensorboard_command(sweep_dir),
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
    """Every job ended as planned: finished, or pruned by the search."""
    return bool(ranked) and all(job.status in (FINISHED, PRUNED) for job in ranked)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lab.sweeps.summary",
        description="Summarise a sweep directory: rank its jobs by validation precision.",
    )
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"not a directory: {args.sweep_dir}")
    try:
        ranked = summarize(args.sweep_dir)
    except UserError as ex:
        error_line(str(ex))
        raise SystemExit(EXIT_USER_ERROR) from None
    raise SystemExit(0 if all_done(ranked) else 1)


if __name__ == "__main__":
    main()
