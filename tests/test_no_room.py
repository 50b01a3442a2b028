"""No room for a command's output: a full device (``/dev/full``, a device that is always full)
as stdout, or a file-size limit (``ulimit -f``) on the file it writes, for ``mnist-lab-eval``
and ``mnist-lab-predict`` on a real trained run (``mnist-lab-runs`` and ``mnist-lab-ensemble``:
their own test files). One line, exit 1 (the machine failed, not the input), no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import run_without_room

FULL = "error: cannot write the standard output: No space left on device\n"


def test_eval_on_a_full_stdout(trained_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "eval.json"
    args = [str(trained_run), "--output", str(output)]
    result = run_without_room("mnist-lab-eval", args, tmp_path, Path("/dev/full"))
    assert (result.returncode, result.stderr) == (1, FULL)
    assert not output.exists()  # the report is printed first: it failed before the file


def test_eval_past_a_file_size_limit(trained_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "eval.json"
    args = [str(trained_run), "--output", str(output)]
    result = run_without_room("mnist-lab-eval", args, tmp_path, file_size=200)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"error: cannot write {output}: File too large\n"
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary file


def test_predict_on_a_full_stdout(trained_run: Path, tmp_path: Path) -> None:
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255  # a one
    Image.fromarray(image).save(tmp_path / "one.png")
    args = [str(trained_run), str(tmp_path / "one.png")]
    result = run_without_room("mnist-lab-predict", args, tmp_path, Path("/dev/full"))
    assert (result.returncode, result.stderr) == (1, FULL)
