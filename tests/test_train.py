"""The loop on the synthetic set: every model and optimizer, determinism, divergence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mnist_lab.backend import configure_tensorflow, cpu_has_bfloat16, keras, precision_policy
from mnist_lab.config import GROUP_OPTIONS
from mnist_lab.data import load_dataset
from mnist_lab.data.pipeline import train_batches
from mnist_lab.errors import DivergedError
from mnist_lab.evaluation import SPLITS, Evaluator
from mnist_lab.train import build_compiled_model, train
from tests.conftest import TINY, compose_config, run_cli

SMALL_CNN = ["model=cnn", "model.filters=[8,16]", "model.dense_units=32"]


def _check_metrics(metrics: dict, steps: int) -> None:
    assert metrics["step"] == steps
    for split, n in (("train", 2500), ("validation", 500), ("test", 1000)):
        part = metrics[split]
        assert part["num_examples"] == n
        assert 0 <= part["num_correct"] <= n
        assert part["precision"] == pytest.approx(part["num_correct"] / n)
    assert metrics["train_examples_per_second"] > 0
    assert metrics["wall_seconds"] > 0


@pytest.mark.parametrize("model", [["model=softmax"], ["model=mlp"], SMALL_CNN])
def test_each_model_learns_the_fake_set(tmp_path: Path, model: list[str]) -> None:
    metrics = train(compose_config([*TINY, *model]), tmp_path)
    _check_metrics(metrics, steps=60)
    assert metrics["test"]["precision"] > 0.9
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test"] == metrics["test"]


@pytest.mark.parametrize("optimizer", sorted(GROUP_OPTIONS["optimizer"]))
def test_each_optimizer_trains(tmp_path: Path, optimizer: str) -> None:
    lr = {"sgd": 0.1, "momentum": 0.05, "adagrad": 0.1}.get(optimizer, 0.003)
    cfg = compose_config([*TINY, "model=mlp", f"optimizer={optimizer}", f"optimizer.lr={lr}"])
    metrics = train(cfg, tmp_path)
    _check_metrics(metrics, steps=60)
    assert metrics["validation"]["precision"] > 0.5


@pytest.mark.parametrize(
    "schedule",
    [
        ["optimizer.schedule.name=constant", "optimizer.schedule.warmup_steps=10"],
        ["optimizer.schedule.name=exponential", "optimizer.schedule.decay_steps=20"],
        ["optimizer.schedule.name=cosine", "optimizer.schedule.warmup_steps=0"],
    ],
)
def test_schedules(tmp_path: Path, schedule: list[str]) -> None:
    metrics = train(compose_config([*TINY, "model=softmax", *schedule]), tmp_path)
    assert metrics["test"]["precision"] > 0.8


def test_steps_not_a_multiple_of_eval_every(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model=softmax", "trainer.steps=25", "trainer.eval_every=10"])
    assert train(cfg, tmp_path)["step"] == 25


def test_train_limit_and_no_validation(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model=softmax", "data.train_limit=100", "data.validation_size=0"])
    metrics = train(cfg, tmp_path)
    assert metrics["train"]["num_examples"] == 100
    assert metrics["validation"] == {
        "num_examples": 0,
        "num_correct": 0,
        "precision": None,
        "loss": None,
    }


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path) -> None:
    overrides = [*TINY, *SMALL_CNN, "trainer.deterministic=true"]
    first = train(compose_config([*overrides, "seed=0"]), tmp_path / "a")
    second = train(compose_config([*overrides, "seed=0"]), tmp_path / "b")
    other = train(compose_config([*overrides, "seed=1"]), tmp_path / "c")
    for split in ("train", "validation", "test"):
        assert first[split] == second[split]
    assert any(first[s]["loss"] != other[s]["loss"] for s in ("train", "validation", "test"))


def test_divergence_stops_with_a_clear_error(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model=mlp", "optimizer=sgd", "optimizer.lr=1e6"])
    with pytest.raises(DivergedError, match=r"diverged at step \d+") as info:
        train(cfg, tmp_path)
    assert "optimizer.lr" in str(info.value)
    assert not (tmp_path / "metrics.json").exists()


def test_cli_run_writes_the_contract_layout(tmp_path: Path) -> None:
    result = run_cli([*TINY, "model=softmax"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    for name in ("metrics.json", ".hydra", "mnist-lab.log"):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("step", "train", "validation", "test", "train_examples_per_second"):
        assert key in metrics
    assert math.isfinite(metrics["wall_seconds"])
    assert "precision@1" in result.stdout  # the report table
    assert "Traceback" not in result.stderr


def test_cli_divergence_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    result = run_cli([*TINY, "model=mlp", "optimizer=sgd", "optimizer.lr=1e6"], cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "diverged at step" in errors[0]
    assert "Traceback" not in result.stderr


def test_mixed_precision_uses_what_the_hardware_has(tmp_path: Path) -> None:
    """bfloat16 on a CPU with the instructions, float32 and a warning on one without."""
    run_dir = tmp_path / "run"
    args = [*TINY, *SMALL_CNN, "trainer.mixed_precision=true", f"hydra.run.dir={run_dir}"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    log = (run_dir / "mnist-lab.log").read_text()
    if cpu_has_bfloat16():
        assert "mixed precision: bfloat16 compute on the CPU" in log
    else:
        assert "computing in float32" in result.stderr + result.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["precision"] > 0.9


def test_each_job_sets_its_own_precision() -> None:
    # Jobs of a sweep share a process: a float32 job after a mixed one must compute in float32.
    configure_tensorflow(compose_config([*TINY, "trainer.mixed_precision=true"]))
    assert keras.mixed_precision.global_policy().name == precision_policy(True)
    configure_tensorflow(compose_config(TINY))
    assert keras.mixed_precision.global_policy().name == "float32"


def test_evaluation_step_is_traced_once() -> None:
    """Any batch size, inside ``fit`` (a callback) or after it: one trace of the step."""
    cfg = compose_config([*TINY, *SMALL_CNN])
    configure_tensorflow(cfg)
    data = load_dataset(cfg.data)
    model = build_compiled_model(cfg)
    evaluator = Evaluator(model, batch_size=300)  # 500 validation examples: 300 + 200

    class EvaluateDuringFit(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            evaluator.evaluate(data.validation)

    model.fit(
        train_batches(data.train, 32, seed=0),
        steps_per_epoch=3,
        shuffle=False,
        verbose=0,
        callbacks=[EvaluateDuringFit()],
    )
    results = [evaluator.evaluate(getattr(data, split)) for split in SPLITS]
    assert [r.num_examples for r in results] == [2500, 500, 1000]
    assert evaluator.traces == 1
