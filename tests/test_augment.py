"""Data augmentation: what one transform does (checked by the centre of mass of a blob),
determinism from (seed, step), and through the real CLI: resume parity, training batches only,
TensorBoard's input images, refused values."""

from __future__ import annotations

import io
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from mnist_lab.config import AugmentConfig
from mnist_lab.core.backend import keras, tf
from mnist_lab.data import Split, load_dataset
from mnist_lab.data.augment import augment_batch
from mnist_lab.data.pipeline import train_batches
from mnist_lab.show.render import GRID_IMAGES, render_grid
from tests.conftest import (
    SPLITS,
    assert_one_error_line,
    compose_config,
    latest_step,
    read_json,
    run_cli,
    start_cli,
    wait_for_checkpoint,
)

SIZE = 28
CENTRE = (SIZE - 1) / 2  # the middle of the pixel grid, which rotation and zoom keep in place
N = 256  # images a batch: enough draws to reach close to each end of a range


def augment(translate: float = 0.0, rotate: float = 0.0, zoom: float = 0.0) -> DictConfig:
    node = AugmentConfig(enabled=True, translate=translate, rotate=rotate, zoom=zoom)
    return OmegaConf.structured(node)


def blob(x: float, y: float, sigma: float = 1.5) -> np.ndarray:
    """N copies of a bright Gaussian spot centred at (x, y): its centre of mass is (x, y)."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    spot = 255 * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
    return np.repeat(spot.round().astype(np.uint8)[np.newaxis], N, axis=0)


def centre_of_mass(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    mass = images.astype(np.float64).sum(axis=(1, 2))
    x = (images * cols).sum(axis=(1, 2)) / mass
    y = (images * rows).sum(axis=(1, 2)) / mass
    return x, y


def transformed(images: np.ndarray, cfg: DictConfig, step: int = 7, seed: int = 0) -> np.ndarray:
    return augment_batch(tf.constant(images), tf.constant(step, tf.int64), seed, cfg).numpy()


# ------------------------------------------------------------------------- one transform


def test_shape_and_dtype_are_kept() -> None:
    images = np.random.default_rng(0).integers(0, 256, (N, SIZE, SIZE), dtype=np.uint8)
    out = transformed(images, augment(translate=14, rotate=180, zoom=0.9))  # the largest ranges
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert not np.array_equal(out, images)


def test_translation_moves_the_content_by_at_most_the_range() -> None:
    images = blob(CENTRE, CENTRE)
    x0, y0 = centre_of_mass(images)
    moved = transformed(images, augment(translate=3))
    x, y = centre_of_mass(moved)
    # Nothing lost or darkened: bilinear weights sum to 1, and values round to the nearest.
    mass = moved.sum(axis=(1, 2), dtype=np.int64) / images[0].sum(dtype=np.int64)
    assert np.abs(mass - 1).max() < 0.005  # (truncating instead of rounding loses 1.6%)
    dx, dy = x - x0, y - y0
    # Bilinear sampling moves the centre of mass exactly; rounding to uint8 adds a trace.
    assert np.abs(dx).max() <= 3 + 0.02 and np.abs(dy).max() <= 3 + 0.02
    # Each image its own shift, both ways on both axes, over the whole range.
    for d in (dx, dy):
        assert d.min() < -2.7 and d.max() > 2.7
    assert len(np.unique(dx.round(3))) > N // 2


def test_rotation_turns_about_the_centre_within_the_range() -> None:
    images = blob(CENTRE + 6.5, CENTRE)  # right of the centre
    x, y = centre_of_mass(transformed(images, augment(rotate=30)))
    radius = np.hypot(x - CENTRE, y - CENTRE)
    assert np.abs(radius - 6.5).max() < 0.05  # turned about the centre: same distance
    angle = np.degrees(np.arctan2(y - CENTRE, x - CENTRE))
    assert np.abs(angle).max() <= 30 + 0.3
    assert angle.min() < -27 and angle.max() > 27


def test_zoom_scales_about_the_centre_within_the_range() -> None:
    images = blob(CENTRE + 6.5, CENTRE)
    x, y = centre_of_mass(transformed(images, augment(zoom=0.2)))
    ratio = (x - CENTRE) / 6.5
    assert np.abs(y - CENTRE).max() < 0.02  # on the line through the centre
    assert ratio.min() >= 0.8 - 0.01 and ratio.max() <= 1.2 + 0.01
    assert ratio.min() < 0.83 and ratio.max() > 1.17


def test_zero_ranges_change_nothing() -> None:
    images = np.random.default_rng(1).integers(0, 256, (N, SIZE, SIZE), dtype=np.uint8)
    np.testing.assert_array_equal(transformed(images, augment()), images)


def test_the_same_seed_and_step_give_the_same_images() -> None:
    images = blob(CENTRE, CENTRE)
    cfg = augment(translate=2, rotate=10, zoom=0.1)
    first = transformed(images, cfg, step=3, seed=5)
    np.testing.assert_array_equal(first, transformed(images, cfg, step=3, seed=5))
    assert not np.array_equal(first, transformed(images, cfg, step=4, seed=5))
    assert not np.array_equal(first, transformed(images, cfg, step=3, seed=6))


# ------------------------------------------------------------------------- in the pipeline


@pytest.fixture(scope="module")
def split() -> Split:
    return load_dataset(compose_config(["data=fake"]).data).train


def take(dataset: tf.data.Dataset, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(n)]


def test_training_batches_move_the_same_examples(split: Split) -> None:
    cfg = augment(translate=2, rotate=10, zoom=0.1)
    plain = take(train_batches(split, 32, seed=4), 3)
    moved = take(train_batches(split, 32, seed=4, augment=cfg), 3)
    for (x, y), (ax, ay) in zip(plain, moved, strict=True):
        assert ax.dtype == np.uint8 and ax.shape == x.shape == (32, SIZE, SIZE)
        np.testing.assert_array_equal(ay, y)  # same order, same labels
        assert not np.array_equal(ax, x)


def test_augmentation_with_zero_ranges_is_the_plain_batch(split: Split) -> None:
    plain = take(train_batches(split, 32, seed=4), 3)
    same = take(train_batches(split, 32, seed=4, augment=augment()), 3)
    for (x, y), (ax, ay) in zip(plain, same, strict=True):
        np.testing.assert_array_equal(ax, x)
        np.testing.assert_array_equal(ay, y)


def test_a_pipeline_started_at_step_k_transforms_batch_k_as_before(split: Split) -> None:
    cfg = augment(translate=2, rotate=10, zoom=0.1)
    full = take(train_batches(split, 32, seed=2, augment=cfg), 8)
    for k in (1, 5):
        resumed = take(train_batches(split, 32, seed=2, start_step=k, augment=cfg), 3)
        for (x, y), (rx, ry) in zip(full[k : k + 3], resumed, strict=True):
            np.testing.assert_array_equal(rx, x)
            np.testing.assert_array_equal(ry, y)
    disabled = OmegaConf.merge(cfg, {"enabled": False})
    np.testing.assert_array_equal(
        take(train_batches(split, 32, seed=2, augment=disabled), 1)[0][0],
        take(train_batches(split, 32, seed=2), 1)[0][0],
    )


# ---------------------------------------------------------------------- the real command

# The small CNN of test_resume.py, deterministic, checkpointed every 10 of 60 steps.
RUN = [
    "data=fake",
    "model=cnn",
    "model.filters=[4,8]",
    "model.dense_units=16",
    "trainer.batch_size=32",
    "trainer.steps=60",
    "trainer.eval_every=30",
    "trainer.checkpoint_every=10",
    "trainer.deterministic=true",
]
AUGMENTED = [
    *RUN,
    "data.augment.enabled=true",
    "data.augment.translate=3",
    "data.augment.rotate=15",
    "data.augment.zoom=0.15",
]


def finished_run(folder: Path, args: list[str]) -> Path:
    run_dir = folder / "run"
    result = run_cli([*args, f"hydra.run.dir={run_dir}"], cwd=folder)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def augmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("augmented"), AUGMENTED)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("plain"), RUN)


def test_augmentation_changes_training(augmented: Path, plain: Path) -> None:
    with_it, without = read_json(augmented / "metrics.json"), read_json(plain / "metrics.json")
    assert with_it["train"]["loss"] != without["train"]["loss"]
    assert with_it["config"]["data"]["augment"]["enabled"] is True


def test_ctrl_c_then_resume_ends_exactly_as_an_uninterrupted_run(
    tmp_path: Path, augmented: Path
) -> None:
    run_dir = tmp_path / "run"
    process = start_cli([*AUGMENTED, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    wait_for_checkpoint(process, run_dir, at_least=10)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 130, output
    found = re.search(r"stopped at step (\d+)", output)
    assert found, output
    stopped_at = int(found.group(1))
    assert stopped_at < 60 and latest_step(run_dir) == stopped_at

    result = run_cli([*AUGMENTED, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    resumed, expected = read_json(run_dir / "metrics.json"), read_json(augmented / "metrics.json")
    assert resumed["resumed_from_step"] == stopped_at
    for split_name in SPLITS:
        assert resumed[split_name] == expected[split_name], split_name  # exact


def test_evaluation_sees_the_images_unchanged(augmented: Path) -> None:
    """The saved model on the plain splits gives exactly the run's saved predictions."""
    data = load_dataset(compose_config(AUGMENTED).data)
    model = keras.saving.load_model(augmented / "model.keras")
    saved, metrics = np.load(augmented / "predictions.npz"), read_json(augmented / "metrics.json")
    for split_name in ("validation", "test"):
        split_ = getattr(data, split_name)
        probabilities = tf.nn.softmax(model.predict(split_.images, verbose=0)).numpy()
        np.testing.assert_allclose(probabilities, saved[f"{split_name}_probabilities"], atol=1e-5)
        correct = int((probabilities.argmax(axis=1) == split_.labels).sum())
        assert correct == metrics[split_name]["num_correct"]


def inputs_image(run_dir: Path) -> np.ndarray:
    """The pixels of TensorBoard's train/inputs image."""
    acc = event_accumulator.EventAccumulator(
        str(run_dir / "tensorboard" / "train"), size_guidance={"tensors": 0}
    )
    acc.Reload()
    (event,) = acc.Tensors("inputs")
    png = tensor_util.make_ndarray(event.tensor_proto)[2]
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_tensorboard_shows_the_augmented_batch(augmented: Path, plain: Path) -> None:
    cfg = compose_config(AUGMENTED)
    data = load_dataset(cfg.data)
    first = next(iter(train_batches(data.train, 32, seed=cfg.seed, augment=cfg.data.augment)))
    images, labels = first[0].numpy()[:GRID_IMAGES], first[1].numpy()[:GRID_IMAGES]
    expected = render_grid(images, [data.class_names[y] for y in labels])[0]
    shown = inputs_image(augmented)
    np.testing.assert_array_equal(shown, expected)
    assert not np.array_equal(shown, inputs_image(plain))


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.augment.rotate=500", "data.augment.rotate"),
        ("data.augment.zoom=-1", "data.augment.zoom"),
        ("data.augment.translate=15", "data.augment.translate"),
        ("data.augment.zoom=0.95", "data.augment.zoom"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(tmp_path: Path, override: str, key: str) -> None:
    result = run_cli(
        [*RUN, "data.augment.enabled=true", override, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )
    assert_one_error_line(result, key)
    assert not (tmp_path / "run" / "metrics.json").exists()
