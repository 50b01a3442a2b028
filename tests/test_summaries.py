"""TensorBoard summaries of tiny in-process runs, read back with TensorBoard's own loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.util import tensor_util

from mnist_lab.core.backend import tf
from mnist_lab.show.summaries import write_histogram
from mnist_lab.training.loop import train_and_evaluate
from tests.conftest import TINY, compose_config

EVAL_STEPS = [30, 60]  # TINY: 60 steps, evaluated every 30
SMALL_CNN = ["model=cnn", "model.filters=[4,8]", "model.dense_units=16"]


def load(log_dir: Path) -> event_accumulator.EventAccumulator:
    """Every event of one TensorBoard run (one folder), nothing sampled away."""
    sizes = {kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance=sizes)
    acc.Reload()
    return acc


def plugin_tags(acc: event_accumulator.EventAccumulator, plugin: str) -> set[str]:
    return set(acc.PluginTagToContent(plugin))


def values(acc: event_accumulator.EventAccumulator, tag: str) -> list[tuple[int, np.ndarray]]:
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]


def scalars(acc: event_accumulator.EventAccumulator, tag: str) -> dict[int, float]:
    return {step: float(value) for step, value in values(acc, tag)}


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The run's folder and its metrics."""
    run_dir = tmp_path_factory.mktemp("softmax")
    metrics = train_and_evaluate(compose_config([*TINY, "model=softmax"]), run_dir)
    return run_dir, metrics


@pytest.fixture(scope="module")
def logs(softmax_run: tuple) -> dict[str, event_accumulator.EventAccumulator]:
    root = softmax_run[0] / "tensorboard"
    return {name: load(root / name) for name in ("", "train", "validation")}


def test_train_and_validation_curves_overlay(logs: dict) -> None:
    train_tags = plugin_tags(logs["train"], "scalars")
    validation_tags = plugin_tags(logs["validation"], "scalars")
    assert {"loss", "precision"} <= train_tags & validation_tags
    assert {"learning_rate", "examples_per_second"} <= train_tags
    for run, tag in [("train", "loss"), ("train", "precision"), ("validation", "precision")]:
        assert sorted(scalars(logs[run], tag)) == EVAL_STEPS, (run, tag)
    assert all(rate > 0 for rate in scalars(logs["train"], "examples_per_second").values())
    assert all(0 <= p <= 1 for p in scalars(logs["validation"], "precision").values())


def test_final_precisions_equal_metrics_json(softmax_run: tuple, logs: dict) -> None:
    run_dir = softmax_run[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("train", "validation", "test"):
        final = scalars(logs[""], f"final/{split}_precision")
        assert final == {60: pytest.approx(metrics[split]["precision"])}
    # The last evaluation saw the final model: its validation point is the final one.
    last = scalars(logs["validation"], "precision")[60]
    assert last == pytest.approx(metrics["validation"]["precision"])


def test_the_input_images_are_the_first_batch(softmax_run: tuple, logs: dict) -> None:
    # 32 images (the batch), not the first 40 of the training file.
    ((_, image),) = values(logs["train"], "inputs")
    width, height = int(image[0]), int(image[1])
    assert width > 0 and height > 0
    description = logs["train"].SummaryMetadata("inputs").summary_description
    assert "first 32 images of the first training batch" in description


def test_weight_histograms_at_each_evaluation(logs: dict) -> None:
    assert {"logits/kernel", "logits/bias"} <= plugin_tags(logs[""], "histograms")
    kernel = values(logs[""], "logits/kernel")
    assert [step for step, _ in kernel] == [0, *EVAL_STEPS]  # the initial weights too
    buckets = kernel[-1][1]
    assert buckets.shape == (30, 3)
    assert buckets[:, 2].sum() == 784 * 10


def test_images(logs: dict) -> None:
    assert plugin_tags(logs["train"], "images") == {"inputs"}
    assert plugin_tags(logs[""], "images") == {"templates/logits"}
    assert plugin_tags(logs["validation"], "images") == {"misclassified", "confusion_matrix"}
    width, height, png = values(logs["validation"], "confusion_matrix")[0][1]
    assert int(width) > 100 and int(height) > 100 and png.startswith(b"\x89PNG")


def test_model_summary_text_and_graph(logs: dict) -> None:
    assert {"model/summary", "config"} <= plugin_tags(logs[""], "text")
    summary = values(logs[""], "model/summary")[0][1].item().decode()
    assert summary.startswith("```") and "logits (Dense)" in summary
    graph = logs[""].Graph()
    assert any("logits" in node.name for node in graph.node)


def test_hparams_session_with_config_values(logs: dict) -> None:
    content = logs[""].PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    cfg = compose_config([*TINY, "model=softmax"])
    assert hparams["model"].string_value == "softmax"
    assert hparams["optimizer"].string_value == cfg.optimizer.name
    assert hparams["optimizer.lr"].number_value == pytest.approx(cfg.optimizer.lr)
    assert hparams["optimizer.schedule"].string_value == cfg.optimizer.schedule.name
    assert hparams["trainer.batch_size"].number_value == 32
    assert hparams["trainer.steps"].number_value == 60
    # Every leaf of the groups, so that a sweep over any of them shows in the dashboard.
    assert hparams["data.validation_size"].number_value == cfg.data.validation_size
    assert hparams["optimizer.schedule.warmup_steps"].number_value == 5
    assert hparams["seed"].number_value == 0
    assert hparams["data"].string_value == "fake"
    assert hparams["model.params"].number_value == 7850
    assert hparams["model.kernel_initializer"].string_value == "zeros"
    end = logs[""].PluginTagToContent("hparams")["_hparams_/session_end_info"]
    status = plugin_data_pb2.HParamsPluginData.FromString(end).session_end_info.status
    assert status == api_pb2.STATUS_SUCCESS


@pytest.mark.parametrize(
    "model, template, hparam",
    [
        (["model=mlp"], "templates/hidden1", "model.hidden_units"),
        (SMALL_CNN, "templates/conv1", "model.filters"),
    ],
)
def test_mlp_and_cnn_templates_and_histograms(
    tmp_path: Path, model: list[str], template: str, hparam: str
) -> None:
    cfg = compose_config([*TINY, *model, "trainer.steps=20", "trainer.eval_every=10"])
    train_and_evaluate(cfg, tmp_path)
    root = load(tmp_path / "tensorboard")
    assert plugin_tags(root, "images") == {template}
    assert len(plugin_tags(root, "histograms")) >= 6  # a kernel and a bias per layer
    content = root.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    expected = ",".join(str(v) for v in cfg.model[hparam.split(".")[1]])
    assert hparams[hparam].string_value == expected


def test_tensorboard_off_writes_nothing(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model=softmax", "trainer.steps=4", "trainer.tensorboard=false"])
    train_and_evaluate(cfg, tmp_path)
    assert (tmp_path / "metrics.json").exists()
    assert not (tmp_path / "tensorboard").exists()


def test_histogram_buckets_match_tensorboards_own(tmp_path: Path) -> None:
    data = tf.constant(np.random.default_rng(0).normal(size=(50, 20)), tf.float32)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(step=0):
        write_histogram("ours", data)
        tf.summary.histogram("theirs", data, buckets=30)
    writer.close()
    acc = load(tmp_path)
    ours, theirs = values(acc, "ours")[0][1], values(acc, "theirs")[0][1]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
