"""``mnist-lab-data``: fetch and verify a dataset ahead of time (e.g. before going offline)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mnist_lab.commands import run_command
from mnist_lab.core.console import console
from mnist_lab.core.errors import UserError
from mnist_lab.data import sources
from mnist_lab.data.fetch import Unavailable, file_sha256, install


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_command(lambda: fetch(args))


def fetch(args: argparse.Namespace) -> None:
    """Acquire and verify the data set, copy it into ``--dir`` when asked, say where it is."""
    got = sources.acquire(
        args.dataset, store=args.dir, download=not args.no_download, console=console
    )
    files = _place(got, args.dir)
    data = got.data
    print(f"{args.dataset}: verified, from {got.origin} {got.location}")
    if files != got.files:
        print(f"  copied into {args.dir}:")
    for path in files:
        print(f"  {path}")
    print(f"  {len(data.train_labels)} training and {len(data.test_labels)} test examples")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-lab-data",
        description="Fetch and verify MNIST or Fashion-MNIST so that later runs need no network.",
    )
    parser.add_argument("--dataset", choices=sources.DATASETS, default="mnist")
    parser.add_argument(
        "--dir",
        type=Path,
        help=f"put the files here (then pass data.dir=DIR) instead of the cache "
        f"(${sources.CACHE_ENV}/<dataset>, default ~/.cache/mnist-lab/<dataset>)",
    )
    parser.add_argument(
        "--no-download", action="store_true", help="only look for local copies; no network"
    )
    return parser


def _place(got: sources.Acquired, target: Path | None) -> tuple[Path, ...]:
    """The files' final paths: copied into ``target`` when they were found elsewhere."""
    if target is None or all(p.parent.resolve() == target.resolve() for p in got.files):
        return got.files
    copies = []
    for path in got.files:
        dest = target / path.name
        try:
            with open(path, "rb") as f:
                install(f, dest, file_sha256(path))
        except (Unavailable, OSError) as e:
            raise UserError(f"{dest}: expected a copy of {path}, found an error: {e}") from e
        copies.append(dest)
    return tuple(copies)
