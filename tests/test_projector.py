"""What a model learned, as a run shows it: the embedding projector (read back through a real
TensorBoard's projector routes), the per-class PR curves, the per-class figures of metrics.json,
mnist-lab-eval and mnist-lab-runs diff, and the checks of the two config keys."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from mnist_lab.training.loop import train_and_evaluate
from tests.conftest import (
    RESUMABLE,
    assert_one_error_line,
    compose_config,
    read_json,
    run_cli,
    run_tool,
)
from tests.test_tensorboard_server import tensorboard

RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
SIZE = 300  # of the 500 validation images of data=fake: the first 300
RUN = [*RESUMABLE, f"trainer.embeddings_size={SIZE}"]  # a CNN whose dense layer has 16 units
DENSE = "dense/.ATTRIBUTES/VARIABLE_VALUE"
PIXELS = "pixels/.ATTRIBUTES/VARIABLE_VALUE"
PROJECTOR_FILES = {"checkpoint", "metadata.tsv", "projector_config.pbtxt", "sprite.png"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the real CLI, uninterrupted (read-only)."""
    folder = tmp_path_factory.mktemp("projector") / "run"
    result = run_cli([*RUN, f"hydra.run.dir={folder}"], cwd=folder.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"projector: {SIZE} validation images" in result.stdout
    return folder


@pytest.fixture(scope="module")
def resumed_dir(run_dir: Path) -> Path:
    """The same run killed just before metrics.json (the projector already written), then
    completed by the same command."""
    folder = run_dir.parent / "resumed"
    killed = subprocess.run(
        [sys.executable, str(RUNNER), "before metrics.json", *RUN, f"hydra.run.dir={folder}"],
        cwd=folder.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (folder / "tensorboard" / "validation" / "sprite.png").is_file()
    assert not (folder / "metrics.json").exists()
    result = run_cli([*RUN, f"hydra.run.dir={folder}"], cwd=folder.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def projector_files(run: Path) -> dict[str, bytes]:
    """The projector's files of a run, without TensorBoard's events and the checkpoint
    state file (it holds the time it was written)."""
    folder = run / "tensorboard" / "validation"
    return {
        p.name: p.read_bytes()
        for p in folder.iterdir()
        if "tfevents" not in p.name and p.name != "checkpoint"
    }


def get_bytes(base: str, route: str, **params: str) -> bytes:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{base}/data/plugin/projector/{route}?{query}", timeout=30) as r:
        return r.read()


def get_json(base: str, route: str, **params: str) -> Any:
    return json.loads(get_bytes(base, route, **params))


# ---------------------------------------------------------------- the projector, served


@pytest.mark.slow
def test_tensorboard_serves_the_projector_of_each_run(
    run_dir: Path, resumed_dir: Path, tmp_path: Path
) -> None:
    # Two run folders side by side, as the jobs of a sweep are: `tensorboard --logdir` of
    # their parent lists each run's projector, and nothing else (not train/ nor the job).
    runs = {f"{name}/tensorboard/validation" for name in ("run", "resumed")}
    with tensorboard(run_dir.parent, runs, tmp_path / "tb.log") as base:
        assert set(get_json(base, "runs")) == runs
        served = {}
        for run in sorted(runs):
            info = get_json(base, "info", run=run)
            shapes = {e["tensorName"]: e["tensorShape"] for e in info["embeddings"]}
            assert shapes == {DENSE: [SIZE, 16], PIXELS: [SIZE, 784]}
            for embedding in info["embeddings"]:
                assert embedding["metadataPath"] == "metadata.tsv"
                assert embedding["sprite"]["singleImageDim"] == [28, 28]
            tensor = np.frombuffer(get_bytes(base, "tensor", run=run, name=DENSE), np.float32)
            assert tensor.size == SIZE * 16 and np.isfinite(tensor).all()
            pixels = np.frombuffer(get_bytes(base, "tensor", run=run, name=PIXELS), np.float32)
            assert pixels.size == SIZE * 784 and 0 <= pixels.min() and pixels.max() <= 1
            tsv = get_bytes(base, "metadata", run=run, name=DENSE).decode().splitlines()
            assert tsv[0] == "label\tpredicted\tcorrect\tindex" and len(tsv) == SIZE + 1
            sprite = get_bytes(base, "sprite_image", run=run, name=DENSE)
            assert sprite.startswith(b"\x89PNG")
            side = math.ceil(math.sqrt(SIZE)) * 28
            assert Image.open(io.BytesIO(sprite)).size == (side, side)
            served[run] = (tensor, pixels, tsv, sprite)
    # The resumed run's projector is the uninterrupted one's.
    first, second = (served[f"{name}/tensorboard/validation"] for name in ("run", "resumed"))
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


@pytest.mark.slow
def test_a_rerun_writes_the_projector_once_with_the_same_content(
    run_dir: Path, resumed_dir: Path
) -> None:
    expected = projector_files(run_dir)
    assert set(expected) == PROJECTOR_FILES - {"checkpoint"} | {
        "embeddings-60.index",
        "embeddings-60.data-00000-of-00001",
    }
    assert projector_files(resumed_dir) == expected
    state = (resumed_dir / "tensorboard" / "validation" / "checkpoint").read_text()
    assert 'model_checkpoint_path: "embeddings-60"' in state  # relative: the run may move


# ---------------------------------------------------------------- what the files hold


def test_the_projector_files_describe_the_first_validation_images(run_dir: Path) -> None:
    from mnist_lab.data import load_dataset
    from mnist_lab.rundir.checkpoints import restore_model
    from mnist_lab.training.models import build_compiled_model

    folder = run_dir / "tensorboard" / "validation"
    cfg = compose_config(RUN)
    data = load_dataset(cfg.data)
    predictions = np.load(run_dir / "predictions.npz")
    predicted = predictions["validation_probabilities"].argmax(axis=1)[:SIZE]
    labels = data.validation.labels[:SIZE]
    rows = (folder / "metadata.tsv").read_text().splitlines()[1:]
    expected = [
        f"{y}\t{p}\t{'yes' if y == p else 'no'}\t{i}"
        for i, (y, p) in enumerate(zip(labels, predicted, strict=True))
    ]
    assert rows == expected

    sprite = np.asarray(Image.open(folder / "sprite.png"))
    side = math.ceil(math.sqrt(SIZE))
    for i in (0, 1, side, SIZE - 1):  # dark ink on white, row by row
        top, left = (i // side) * 28, (i % side) * 28
        tile = sprite[top : top + 28, left : left + 28]
        assert np.array_equal(tile, 255 - data.validation.images[i]), i

    # The tensor is the dense layer's output for those images, from the final weights.
    from mnist_lab.core.backend import keras, tf

    reader = tf.train.load_checkpoint(str(folder))
    model = build_compiled_model(cfg)
    restore_model(model, str(run_dir / "checkpoints" / "ckpt-60"))
    dense = keras.Model(model.input, model.get_layer("dense").output)
    expected_dense = keras.ops.convert_to_numpy(dense(data.validation.images[:SIZE]))
    np.testing.assert_allclose(reader.get_tensor(DENSE), expected_dense, rtol=1e-5, atol=1e-6)
    pixels = data.validation.images[:SIZE].reshape(SIZE, -1) / 255
    np.testing.assert_allclose(reader.get_tensor(PIXELS), pixels, rtol=1e-6)


def test_softmax_shows_the_pixels_of_the_whole_split_and_off_writes_nothing(
    tmp_path: Path,
) -> None:
    short = ["data=fake", "model=softmax", "trainer.steps=20", "trainer.eval_every=10"]
    train_and_evaluate(compose_config(short), tmp_path / "softmax")
    folder = tmp_path / "softmax" / "tensorboard" / "validation"
    config = (folder / "projector_config.pbtxt").read_text()
    assert config.count("tensor_name") == 1 and PIXELS in config  # the logits read the pixels
    # The default size (5000) is more than the split: all 500 of it.
    assert len((folder / "metadata.tsv").read_text().splitlines()) == 500 + 1

    # Turned off: no projector file, and nothing of it imported.
    code = (
        "import sys, mnist_lab\nmnist_lab.run(sys.argv[1:])\n"
        "print(sorted(m for m in sys.modules if m.endswith('projector')))\n"
    )
    off = tmp_path / "off"
    result = subprocess.run(
        [sys.executable, "-c", code, *short, "trainer.embeddings=false", f"hydra.run.dir={off}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert not any((off / "tensorboard").rglob("projector_config.pbtxt"))
    assert not any((off / "tensorboard").rglob("embeddings-*"))


def test_a_full_disk_at_the_projector_is_one_error_and_the_rerun_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorboard.plugins import projector

    from mnist_lab.core.errors import UserError

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    short = ["data=fake", "model=mlp", "trainer.steps=20", "trainer.eval_every=10"]
    monkeypatch.setattr(projector, "visualize_embeddings", full_disk)
    with pytest.raises(UserError) as raised:
        train_and_evaluate(compose_config(short), tmp_path / "run")
    assert "No space left on device" in str(raised.value)
    assert "trainer.embeddings=false" in str(raised.value)
    assert not (tmp_path / "run" / "metrics.json").exists()
    monkeypatch.undo()
    train_and_evaluate(compose_config(short), tmp_path / "run")
    folder = tmp_path / "run" / "tensorboard" / "validation"
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert [p.name for p in folder.glob("embeddings-*.index")] == ["embeddings-20.index"]


# ---------------------------------------------------------------- per class


def per_class_from(predictions: np.lib.npyio.NpzFile, split: str) -> dict[str, list]:
    """Precision, recall and support recomputed from predictions.npz, independently."""
    labels = predictions[f"{split}_labels"]
    predicted = predictions[f"{split}_probabilities"].argmax(axis=1)
    figures: dict[str, list] = {"precision": [], "recall": [], "support": []}
    for c in range(10):
        hits = int(np.sum((labels == c) & (predicted == c)))
        chosen, support = int(np.sum(predicted == c)), int(np.sum(labels == c))
        figures["precision"].append(hits / chosen if chosen else None)
        figures["recall"].append(hits / support if support else None)
        figures["support"].append(support)
    return figures


def test_per_class_figures_match_the_saved_predictions(run_dir: Path) -> None:
    metrics = read_json(run_dir / "metrics.json")
    predictions = np.load(run_dir / "predictions.npz")
    assert set(metrics["per_class"]) == {"validation", "test"}
    for split in ("validation", "test"):
        assert metrics["per_class"][split] == per_class_from(predictions, split), split
        assert sum(metrics["per_class"][split]["support"]) == metrics[split]["num_examples"]
    for key in ("train", "validation", "test", "stop", "machine", "config", "data"):
        assert key in metrics, key  # every field of before is still there


def test_pr_curves_one_per_class_from_the_final_probabilities(run_dir: Path) -> None:
    acc = event_accumulator.EventAccumulator(
        str(run_dir / "tensorboard" / "validation"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    tags = {f"class/{c}/pr_curves" for c in range(10)}
    assert set(acc.PluginTagToContent("pr_curves")) == tags
    predictions = np.load(run_dir / "predictions.npz")
    labels = predictions["validation_labels"]
    probabilities = predictions["validation_probabilities"]
    for c in range(10):
        (event,) = acc.Tensors(f"class/{c}/pr_curves")  # once, at the end
        assert event.step == 60
        curve = tensor_util.make_ndarray(event.tensor_proto)  # TP, FP, TN, FN, P, R x 201
        assert curve.shape == (6, 201)
        buckets = np.floor(probabilities[:, c] * 200).astype(int)
        tp = [np.sum((labels == c) & (buckets >= k)) for k in range(201)]
        fp = [np.sum((labels != c) & (buckets >= k)) for k in range(201)]
        np.testing.assert_array_equal(curve[0], tp)
        np.testing.assert_array_equal(curve[1], fp)
        assert curve[0][0] == np.sum(labels == c)  # at threshold 0 every example is positive


def test_eval_prints_and_writes_the_per_class_figures(run_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "eval.json"
    result = run_tool("mnist-lab-eval", [str(run_dir), "--output", str(output)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "per class" in result.stdout and "recall" in result.stdout
    evaluated, metrics = read_json(output), read_json(run_dir / "metrics.json")
    for split in ("validation", "test"):
        assert evaluated["per_class"][split] == metrics["per_class"][split], split
        assert evaluated[split] == metrics[split], split
    assert set(evaluated["per_class"]) == {"train", "validation", "test"}


def test_diff_shows_per_class_differences_when_both_runs_have_them(
    run_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns(".lock"))
    metrics = read_json(other / "metrics.json")
    metrics["per_class"]["test"]["recall"][3] = 0.25
    (other / "metrics.json").write_text(json.dumps(metrics))
    out = run_tool("mnist-lab-runs", ["diff", str(run_dir), str(other)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.strip()}
    x = read_json(run_dir / "metrics.json")["per_class"]["test"]["recall"][3]
    assert rows["per_class.test.3.recall"] == [f"{x:.4f}", "0.2500", f"{0.25 - x:+.4f}"]
    assert len([k for k in rows if k.startswith("per_class.")]) == 2 * 10 * 2

    # A run made before per_class: no per-class rows, and its results still show when reused.
    del metrics["per_class"]
    (other / "metrics.json").write_text(json.dumps(metrics))
    out = run_tool("mnist-lab-runs", ["diff", str(run_dir), str(other)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "per_class." not in out.stdout and "validation.precision" in out.stdout
    again = run_cli([*RUN, f"hydra.run.dir={other}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stdout and "validation" in again.stdout


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "override",
    [
        "trainer.embeddings_size=0",
        "trainer.embeddings_size=-3",
        "trainer.embeddings_size=60000",
        "trainer.embeddings_size=abc",
        "trainer.embeddings_size=2.5",
        "trainer.embeddings=maybe",
    ],
)
def test_a_bad_value_is_one_error_line_naming_the_key(override: str, tmp_path: Path) -> None:
    result = run_cli(["data=fake", override, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert_one_error_line(result, override.split("=")[0])
    assert not (tmp_path / "run").exists()
