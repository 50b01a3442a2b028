"""The built wheel, not the source tree: installed into a fresh venv, run from elsewhere."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("mnist_lab-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    # The dependencies (TensorFlow is 600 MB) come from the test's own environment; the
    # package itself, and its config tree, only from the wheel.
    (purelib,) = Path(env_dir / "lib").glob("python3*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import mnist_lab; print(mnist_lab.__file__)"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(env_dir) in where

    result = subprocess.run(
        [
            str(env_dir / "bin" / "mnist-lab"),
            "data=fake",
            "model=softmax",
            "trainer.steps=20",
            "trainer.eval_every=10",
            "trainer.batch_size=16",
            "hydra.run.dir=run",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((workdir / "run" / "metrics.json").read_text())["step"] == 20

    help_text = subprocess.run(
        [str(env_dir / "bin" / "mnist-lab"), "--help"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "softmax_tutorial" in help_text  # the presets shipped inside the wheel
    assert "model: cnn, mlp, softmax" in help_text  # and the group options' YAML files

    # The wheel composes exactly the config the editable install does, for every option.
    for choice in ("", "model=mlp", "optimizer=sgd", "data=fake", "experiment=cnn_fast"):
        args = ["--cfg", "job", *([choice] if choice else [])]
        from_wheel = subprocess.run(
            [str(env_dir / "bin" / "mnist-lab"), *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        editable = subprocess.run(
            [str(Path(sys.executable).parent / "mnist-lab"), *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert from_wheel == editable, choice
    # One copy of the tree: the wheel's comes from the repository's top-level conf/.
    assert not (ROOT / "mnist_lab" / "conf").exists()
