"""Screenshots of TensorBoard's tabs for a finished run, as README.md shows them.

    python docs/screenshots.py RUN_OR_SWEEP_DIR [--out FOLDER] [--tabs images projector ...]

Starts a real TensorBoard on the folder (the ``tensorboard`` beside this Python), opens each
tab in headless Chromium and saves ``FOLDER/tensorboard-<tab>.png`` (default: this docs/
folder), each reduced to 256 colours so that it stays a few hundred KB. Needs Chromium
(Debian: ``apt-get install -y chromium``). The projector draws in WebGL, which headless
Chromium renders in software: give it the virtual time of ``--wait`` seconds to load the
tensors and lay the points out.

The README's projector screenshot is of ``mnist-lab experiment=cnn_fast``'s run folder.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

DOCS = Path(__file__).resolve().parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def tensorboard(logdir: Path, log: Path, timeout: float = 120) -> Iterator[str]:
    """Serve ``logdir`` on 127.0.0.1; yield the base URL once it answers."""
    port = free_port()
    binary = Path(sys.executable).parent / "tensorboard"
    command = [str(binary), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise SystemExit(f"tensorboard exited:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{base}/data/runs", timeout=5).close()
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"tensorboard did not answer in {timeout:.0f}s")
            time.sleep(1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def screenshot(url: str, path: Path, wait_seconds: float) -> None:
    """``url`` in a new headless Chromium profile, saved as ``path``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        flags += [f"--virtual-time-budget={int(wait_seconds * 1000)}", f"--screenshot={path}"]
        subprocess.run([chromium, *flags, url], capture_output=True, timeout=300, check=True)
    if not path.is_file():
        raise SystemExit(f"chromium wrote no screenshot of {url}")


def shrink(path: Path) -> None:
    """256 colours: the tabs are flat colours and text, so it looks the same at a third."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", type=Path, help="a run folder, its tensorboard/, or a sweep")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go")
    parser.add_argument("--tabs", nargs="+", default=["images", "projector"])
    parser.add_argument("--wait", type=float, default=15, help="virtual seconds a tab may load")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        with tensorboard(args.logdir, Path(scratch) / "tensorboard.log") as base:
            time.sleep(3)  # the first scan of the event files
            for tab in args.tabs:
                path = args.out / f"tensorboard-{tab}.png"
                screenshot(f"{base}/#{tab}", path, args.wait)
                shrink(path)
                print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
