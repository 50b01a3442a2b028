"""mnist-lab-eval and mnist-lab-predict on a run trained once, and the exported model.keras."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_lab.commands import eval as eval_command
from mnist_lab.core.backend import tf
from mnist_lab.data import fake, images
from tests.conftest import SPLITS, assert_one_error_line, run_cli, run_tool


@pytest.fixture(scope="module")
def run_dir(trained_run: Path) -> Path:
    return trained_run


def test_eval_reproduces_metrics_json_exactly(run_dir: Path, tmp_path: Path) -> None:
    run_dir = shutil.copytree(run_dir, tmp_path / "run")  # eval writes eval.json into it
    result = run_tool("mnist-lab-eval", [str(run_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "precision@1" in result.stdout and "ckpt-60" in result.stdout
    evaluated = json.loads((run_dir / "eval.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert evaluated["step"] == metrics["step"] == 60
    for split in SPLITS:
        assert evaluated[split] == metrics[split], split


def test_eval_best_one_split_to_a_file(run_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "best.json"
    eval_command.main([str(run_dir), "--best", "--split", "validation", "--output", str(output)])
    report = json.loads(output.read_text())
    assert set(report) == {"checkpoint", "step", "validation", "per_class"}
    assert set(report["per_class"]) == {"validation"}
    assert "/best/" in report["checkpoint"]
    # The precision recorded with the best checkpoint, reproduced; no worse than the final one.
    recorded = tf.train.load_variable(report["checkpoint"], "precision/.ATTRIBUTES/VARIABLE_VALUE")
    assert report["validation"]["precision"] == pytest.approx(recorded, abs=1e-12)
    final = json.loads((run_dir / "metrics.json").read_text())["validation"]["precision"]
    assert recorded >= final


def test_eval_takes_one_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "ckpt.json"
    eval_command.main([str(run_dir / "checkpoints" / "ckpt-40.index"), "--output", str(output)])
    assert json.loads(output.read_text())["step"] == 40


@pytest.mark.parametrize(
    "args, needle",
    [
        (["/no/such/run"], "no checkpoint at /no/such/run"),
        (["{run}/checkpoints/ckpt-40", "--best"], "--best is not valid"),
    ],
)
def test_eval_user_errors_are_one_line(
    run_dir: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    result = run_tool("mnist-lab-eval", [a.format(run=run_dir) for a in args], cwd=tmp_path)
    assert_one_error_line(result, needle)


@pytest.mark.parametrize("state", ["", "garbled {{ state"])
def test_eval_reads_around_a_damaged_state_file(run_dir: Path, tmp_path: Path, state: str) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "checkpoint").write_text(state)
    result = run_tool("mnist-lab-eval", [str(copy)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((copy / "eval.json").read_text())["step"] == 60
    assert (copy / "checkpoints" / "checkpoint").read_text() == state  # eval writes no state


def test_eval_uses_the_config_of_the_results(run_dir: Path, tmp_path: Path) -> None:
    # Hydra's copy may be rewritten by a later command; the results' own config is not.
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / ".hydra" / "config.yaml").write_text("model: {name: softmax}\n")
    result = run_tool("mnist-lab-eval", [str(copy), "--split", "test"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((copy / "metrics.json").read_text())
    assert json.loads((copy / "eval.json").read_text())["test"] == metrics["test"]


PLAIN_KERAS = """
import sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
predicted = model.predict(np.load(sys.argv[2]), verbose=0).argmax(-1)
assert not any(m.startswith("mnist_lab") for m in sys.modules), "mnist_lab was imported"
np.save(sys.argv[3], predicted)
"""


def test_model_keras_loads_and_predicts_with_plain_keras(run_dir: Path, tmp_path: Path) -> None:
    raw = fake.generate(3000, 1000)
    np.save(tmp_path / "x.npy", raw.test_images)
    out = tmp_path / "predicted.npy"
    # -I: isolated, so neither the repository nor PYTHONPATH is on the path.
    model_file, x = str(run_dir / "model.keras"), str(tmp_path / "x.npy")
    subprocess.run(
        [sys.executable, "-I", "-c", PLAIN_KERAS, model_file, x, str(out)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    correct = int((np.load(out) == raw.test_labels).sum())
    assert correct == json.loads((run_dir / "metrics.json").read_text())["test"]["num_correct"]


def render(image: np.ndarray, path: Path, size: int = 100) -> None:
    """A user's picture of a digit: black on white, upscaled, in colour."""
    picture = Image.fromarray(255 - image).resize((size, size), Image.Resampling.BILINEAR)
    picture.convert("RGB").save(path)


@pytest.mark.parametrize("source", ["model.keras", "latest checkpoint"])
def test_predict_classifies_rendered_test_digits(
    run_dir: Path, tmp_path: Path, source: str
) -> None:
    # The run's own predictions of the test images, where it is sure of them: a user's
    # picture of the same image must get the same answer, and the right one.
    saved = np.load(run_dir / "predictions.npz")
    probabilities, labels = saved["test_probabilities"], saved["test_labels"]
    sure = np.flatnonzero((probabilities.max(1) > 0.9) & (probabilities.argmax(1) == labels))[:10]
    assert len(sure) == 10
    if source == "latest checkpoint":  # a run stopped before the end has no model.keras
        shutil.copytree(run_dir / "checkpoints", tmp_path / "run" / "checkpoints")
        (tmp_path / "run" / "checkpoints" / "checkpoint").write_text("garbled {")  # read around
        run_dir = tmp_path / "run"
    raw = fake.generate(3000, 1000)
    paths = []
    for n, i in enumerate(sure):
        path = tmp_path / f"digit{i}.{'jpg' if n % 3 == 0 else 'png'}"
        render(raw.test_images[i], path, size=100 + 7 * n)
        paths.append(str(path))
    result = run_tool("mnist-lab-predict", [str(run_dir), *paths], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    predicted = [
        int(re.search(rf"^{re.escape(p)}: (\d) \(", result.stdout, re.M)[1]) for p in paths
    ]
    assert predicted == labels[sure].tolist()
    # One line per class under each image, the winner marked.
    assert len(re.findall(r"^  [* ] +\d +[\d.]+%", result.stdout, re.M)) == 10 * len(paths)


def test_predict_user_errors_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "not-an-image.png").write_text("hello")
    (tmp_path / "junk.keras").write_text("not a model")
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes((run_dir / "model.keras").read_bytes()[:3000])  # a cut-off archive
    render(np.zeros((28, 28), np.uint8), tmp_path / "blank.png")
    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)  # 400 megapixels, a few KB on disk
    for args, needle in [
        ([str(run_dir), str(tmp_path / "not-an-image.png")], "cannot read image"),
        ([str(tmp_path / "junk.keras"), str(tmp_path / "blank.png")], "not a Keras archive"),
        ([str(damaged), str(tmp_path / "blank.png")], "not a Keras archive"),
        ([str(run_dir), str(huge)], "megapixels"),
    ]:
        result = run_tool("mnist-lab-predict", args, cwd=tmp_path)
        line = assert_one_error_line(result, needle)
        assert "File not found" not in line


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_predict_refuses_a_fifo_or_a_device_at_once(
    run_dir: Path, tmp_path: Path, special: str
) -> None:
    """Never read until it ends: /dev/zero never does, a FIFO nobody writes blocks forever."""
    path = Path(special) if special.startswith("/") else tmp_path / special
    if special == "fifo":
        os.mkfifo(path)
    result = run_tool("mnist-lab-predict", [str(run_dir), str(path)], cwd=tmp_path, timeout=60)
    assert_one_error_line(result, f"{path}: not a regular file")


def test_predict_warns_that_an_image_with_nothing_on_it_means_nothing(
    run_dir: Path, tmp_path: Path
) -> None:
    blank = {
        "white.png": Image.new("L", (28, 28), 255),
        "transparent.png": Image.new("RGBA", (64, 40), (0, 0, 0, 0)),
        "pixel.png": Image.new("L", (1, 1), 0),
    }
    for name, image in blank.items():
        image.save(tmp_path / name)
    digit = tmp_path / "digit.png"
    render(fake.generate(3000, 1000).test_images[0], digit)
    paths = [str(tmp_path / name) for name in blank] + [str(digit)]
    result = run_tool("mnist-lab-predict", [str(run_dir), *paths], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warned = re.findall(r"^(.*): the image is one colour all over", result.stderr, re.M)
    assert warned == paths[:-1]  # each blank one, and not the digit
    assert "prediction means nothing" in result.stderr


def test_predict_without_a_model_is_one_line(tmp_path: Path) -> None:
    render(np.zeros((28, 28), np.uint8), tmp_path / "blank.png")
    result = run_tool("mnist-lab-predict", [str(tmp_path), str(tmp_path / "blank.png")], tmp_path)
    assert result.returncode == 2 and "no model at" in result.stderr


# ---------------------------------------------------------------- preprocessing, no model


def test_digit_fit_boxes_the_ink_in_20x20_centred_by_mass() -> None:
    picture = np.full((120, 90), 255, np.uint8)  # white paper
    picture[10:70, 50:80] = 0  # a tall black stroke, off centre
    digit = images.preprocess(Image.fromarray(picture), "digit")
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    rows, cols = np.nonzero(digit > 64)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 == 20  # the long side fills 20 pixels
    mass = digit.astype(float)
    cy = (mass.sum(1) @ np.arange(28)) / mass.sum()
    cx = (mass.sum(0) @ np.arange(28)) / mass.sum()
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1
    assert digit[0].max() == 0  # the background became black


def test_full_fit_keeps_the_aspect_and_dark_pictures_are_not_inverted() -> None:
    picture = np.zeros((40, 80), np.uint8)  # already light on dark
    picture[:, :] = 0
    picture[10:30, 10:70] = 200
    image = images.preprocess(Image.fromarray(picture), "full")
    assert image.shape == (28, 28)
    assert image[:6].max() < 30 and image[-6:].max() < 30  # padded top and bottom
    assert image[14, 14] > 150


def test_transparent_background_counts_as_white() -> None:
    rgba = np.zeros((50, 50, 4), np.uint8)  # fully transparent
    rgba[10:40, 20:30] = (0, 0, 0, 255)  # an opaque black stroke
    gray = images.light_on_dark(images.to_gray(Image.fromarray(rgba, "RGBA")))
    assert gray[25, 25] == 255 and gray[0, 0] == 0


def test_without_a_validation_split_best_says_why(tmp_path: Path) -> None:
    """No validation split, so no best: the sweep's summary and `mnist-lab-eval --best` say that
    this is why, not that no job finished or that the run saved no checkpoint yet."""
    sweep = tmp_path / "sweep"
    args = ["-m", "data=fake", "data.validation_size=0", "model=softmax", "trainer.steps=20"]
    args += ["trainer.eval_every=10", "trainer.checkpoint_every=10", "trainer.batch_size=32"]
    result = run_cli([*args, "trainer.tensorboard=false", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "best: none (no validation split" in result.stdout + result.stderr
    assert (sweep / "0" / "metrics.json").is_file()
    for target in (sweep / "0", sweep / "0" / "checkpoints"):
        best = run_tool("mnist-lab-eval", [str(target), "--best"], cwd=tmp_path)
        assert_one_error_line(best, "the run has no validation split (data.validation_size=0)")
    assert run_tool("mnist-lab-eval", [str(sweep / "0")], cwd=tmp_path).returncode == 0
