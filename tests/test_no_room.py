"""No room for a command's output: a full device (``/dev/full``, a device that is always full)
as stdout, or a file-size limit (``ulimit -f``) on the file it writes, for ``mnist-lab-eval``
and ``mnist-lab-predict`` on a real trained run, and ``mnist-lab`` itself (``mnist-lab-runs`` and
``mnist-lab-ensemble``: their own test files). One line, exit 1 (the machine failed, not the
input), no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
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


# ------------------------------------------------ mnist-lab: the run folder is the result

TINY = ["data=fake", "model=softmax", "trainer.steps=10", "trainer.eval_every=10"]
TINY += ["trainer.checkpoint_every=10", "trainer.tensorboard=false"]


def test_a_run_on_a_full_stdout_finishes_its_folder_then_says_so(tmp_path: Path) -> None:
    """Its console is commentary: lost output never costs the run, and never passes for a
    full disk in the run folder (it once said 'cannot write TensorBoard summaries')."""
    run_dir = tmp_path / "run"
    args = [*TINY, "trainer.tensorboard=true", f"hydra.run.dir={run_dir}"]
    result = run_without_room("mnist-lab", args, tmp_path, Path("/dev/full"))
    assert (result.returncode, result.stderr) == (1, FULL)
    assert (run_dir / "metrics.json").is_file()  # finished: a rerun reuses it
    again = run_without_room("mnist-lab", args, tmp_path, tmp_path / "out.txt")
    assert again.returncode == 0, again.stderr
    assert "this run already finished" in (tmp_path / "out.txt").read_text()


def test_a_sweep_on_a_full_stdout_writes_its_summary_and_exits_1(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "seed=1,2", f"hydra.sweep.dir={sweep}"]
    result = run_without_room("mnist-lab", args, tmp_path, Path("/dev/full"))
    assert (result.returncode, result.stderr) == (1, FULL)  # not 0 with a warning
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"]["finished"] == 2


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]])
def test_inspection_on_a_full_stdout(tmp_path: Path, args: list[str]) -> None:
    result = run_without_room("mnist-lab", args, tmp_path, Path("/dev/full"))
    assert (result.returncode, result.stderr) == (1, FULL)  # it once said "error: : No space"


def test_a_bad_value_on_a_full_stdout_is_still_a_user_error(tmp_path: Path) -> None:
    result = run_without_room("mnist-lab", ["optimizer.lr=-1"], tmp_path, Path("/dev/full"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: optimizer.lr=-1.0 is not valid")
