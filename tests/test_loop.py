"""The loop on the synthetic set: every model and optimizer, schedules, cadence, determinism,
steps per call, divergence."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from mnist_lab.config import SCHEMAS
from mnist_lab.core.backend import configure_tensorflow, cpu_has_bfloat16, keras, precision_policy
from mnist_lab.core.errors import DivergedError
from mnist_lab.data import load_dataset
from mnist_lab.data.pipeline import train_batches
from mnist_lab.training.evaluation import Evaluator
from mnist_lab.training.loop import train_and_evaluate
from mnist_lab.training.models import build_compiled_model
from mnist_lab.training.optimizers import build_schedule
from tests.conftest import SPLITS, TINY, compose_config, read_json, run_cli

SMALL_CNN = [
    "model=cnn",
    "model.filters=[8,16]",
    "model.kernel_size=3",
    "model.dense_units=32",
    "model.dropout=0",
    "optimizer.lr=0.01",
]


def assert_learned(metrics: dict, precision: float = 0.9) -> None:
    """What a working model, optimizer and schedule reach on the synthetic set in TINY's steps.

    The set is hard enough that this can fail: see test_a_broken_optimizer_fails_the_check.
    """
    assert metrics["test"]["precision"] >= precision, metrics["test"]
    assert metrics["train"]["loss"] < 1.0, metrics["train"]


def check_contract(metrics: dict, steps: int) -> None:
    assert metrics["step"] == steps
    for split, n in (("train", 2500), ("validation", 500), ("test", 1000)):
        part = metrics[split]
        assert part["num_examples"] == n
        assert part["precision"] == pytest.approx(part["num_correct"] / n)
    assert metrics["train_examples_per_second"] > 0
    assert metrics["loop_examples_per_second"] > 0
    assert metrics["wall_seconds"] > 0


@pytest.mark.parametrize(
    "model", [["model=softmax", "optimizer.lr=0.01"], ["model=mlp"], SMALL_CNN]
)
def test_each_model_learns_the_fake_set(tmp_path: Path, model: list[str]) -> None:
    metrics = train_and_evaluate(compose_config([*TINY, *model]), tmp_path)
    check_contract(metrics, steps=60)
    assert_learned(metrics)
    assert read_json(tmp_path / "metrics.json")["test"] == metrics["test"]


def test_a_broken_optimizer_fails_the_check(tmp_path: Path) -> None:
    # One giant step of SGD is a class-means classifier: on a set that easy it would pass.
    cfg = compose_config([*TINY, "model=softmax", "optimizer=sgd", "optimizer.lr=1e6"])
    metrics = train_and_evaluate(cfg, tmp_path)
    with pytest.raises(AssertionError):
        assert_learned(metrics)


LEARNING_RATES = {"sgd": 0.2, "momentum": 0.05, "adagrad": 0.1, "rmsprop": 0.003}


@pytest.mark.parametrize("optimizer", sorted(SCHEMAS["optimizer"]))
def test_each_optimizer_trains(tmp_path: Path, optimizer: str) -> None:
    lr = LEARNING_RATES.get(optimizer, 0.003)
    cfg = compose_config([*TINY, "model=mlp", f"optimizer={optimizer}", f"optimizer.lr={lr}"])
    metrics = train_and_evaluate(cfg, tmp_path)
    check_contract(metrics, steps=60)
    assert_learned(metrics, precision=0.85)


# ---------------------------------------------------------------- schedules, value by value


def schedule_values(overrides: list[str], steps: list[int], total: int = 100) -> list[float]:
    cfg = compose_config(overrides)
    schedule = build_schedule(cfg.optimizer, total_steps=total)
    if isinstance(schedule, float):
        return [schedule for _ in steps]
    return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]


def test_constant_with_warmup_ramps_linearly_then_holds() -> None:
    values = schedule_values(
        ["optimizer=sgd", "optimizer.lr=0.1", "optimizer.schedule.warmup_steps=10"],
        [0, 4, 9, 10, 50, 99],
    )
    # Step s of the warmup trains at lr * (s + 1) / warmup: the first step already moves.
    assert values == pytest.approx([0.01, 0.05, 0.1, 0.1, 0.1, 0.1])


def test_cosine_warms_up_then_decays_to_alpha() -> None:
    overrides = [
        "optimizer=adam",
        "optimizer.lr=0.01",
        "optimizer.schedule.warmup_steps=20",
        "optimizer.schedule.alpha=0.1",
    ]
    values = schedule_values(overrides, [0, 10, 20, 60, 100])
    # Keras's CosineDecay: warmup to lr over 20 steps, then half a cosine over the 80 left.
    assert values[0] == pytest.approx(0.0, abs=1e-9)
    assert values[1] == pytest.approx(0.005)
    assert values[2] == pytest.approx(0.01)
    assert values[3] == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))  # the middle of the decay
    assert values[4] == pytest.approx(0.001)  # alpha * lr at the end


def test_exponential_decays_from_the_end_of_warmup() -> None:
    overrides = [
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "optimizer.schedule.name=exponential",
        "optimizer.schedule.decay_rate=0.5",
        "optimizer.schedule.decay_steps=10",
        "optimizer.schedule.warmup_steps=5",
    ]
    values = schedule_values(overrides, [0, 4, 5, 15, 25])
    assert values == pytest.approx([0.02, 0.1, 0.1, 0.05, 0.025])


@pytest.mark.parametrize(
    "schedule",
    [
        ["optimizer.schedule.name=constant", "optimizer.schedule.warmup_steps=10"],
        ["optimizer.schedule.name=exponential", "optimizer.schedule.decay_steps=20"],
        ["optimizer.schedule.name=cosine", "optimizer.schedule.warmup_steps=0"],
    ],
)
def test_each_schedule_trains(tmp_path: Path, schedule: list[str]) -> None:
    metrics = train_and_evaluate(compose_config([*TINY, "model=mlp", *schedule]), tmp_path)
    assert_learned(metrics)


# ---------------------------------------------------------------- cadence and data


def evaluation_steps(run_dir: Path) -> list[int]:
    log = (run_dir / "mnist-lab.log").read_text()
    return [int(s) for s in re.findall(r"step (\d+)/\d+: loss", log)]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name[5:-6]) for p in (run_dir / "checkpoints").glob("ckpt-*.index"))


def test_steps_not_a_multiple_of_the_cadence(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY, "model=softmax", "trainer.steps=25", "trainer.eval_every=10"]
    args += ["trainer.checkpoint_every=20", "trainer.keep_checkpoints=5"]
    result = run_cli([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert evaluation_steps(run_dir) == [10, 20, 25]  # every 10 and at the last step
    assert checkpoint_steps(run_dir) == [20, 25]
    assert read_json(run_dir / "metrics.json")["step"] == 25


def test_train_limit_and_no_validation(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model=softmax", "data.train_limit=100", "data.validation_size=0"])
    metrics = train_and_evaluate(cfg, tmp_path)
    assert metrics["train"]["num_examples"] == 100
    assert metrics["validation"] == {
        "num_examples": 0,
        "num_correct": 0,
        "precision": None,
        "loss": None,
    }


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path) -> None:
    overrides = [*TINY, *SMALL_CNN, "model.dropout=0.3", "trainer.deterministic=true"]
    first = train_and_evaluate(compose_config([*overrides, "seed=0"]), tmp_path / "a")
    second = train_and_evaluate(compose_config([*overrides, "seed=0"]), tmp_path / "b")
    other = train_and_evaluate(compose_config([*overrides, "seed=1"]), tmp_path / "c")
    for split in SPLITS:
        assert first[split] == second[split]
    assert any(first[s]["loss"] != other[s]["loss"] for s in SPLITS)


# ---------------------------------------------------------------- steps per compiled call


def test_steps_per_execution_is_chosen_and_shown(tmp_path: Path) -> None:
    cfg = compose_config(["model=mlp", "trainer.steps=2000", "trainer.eval_every=500"])
    assert cfg.trainer.steps_per_execution == 100  # divides 2000, 500 and 1000, within 100
    cnn = compose_config(["model=cnn"])
    assert cnn.trainer.steps_per_execution == 20  # gcd(1200, 200, 400) = 200, the CNN's bound
    odd = compose_config(["model=mlp", "trainer.steps=97", "trainer.eval_every=10"])
    assert odd.trainer.steps_per_execution == 1
    mine = compose_config(["model=mlp", "trainer.steps_per_execution=4"])
    assert mine.trainer.steps_per_execution == 4
    shown = run_cli(["--cfg", "job", "model=mlp", "trainer.steps=2000"], cwd=tmp_path)
    assert "steps_per_execution: 100" in shown.stdout


def test_steps_per_execution_does_not_change_the_results(tmp_path: Path) -> None:
    base = [*TINY, "model=mlp", "model.dropout=0.3", "trainer.deterministic=true"]
    one = train_and_evaluate(
        compose_config([*base, "trainer.steps_per_execution=1"]), tmp_path / "one"
    )
    auto = compose_config(base)
    assert auto.trainer.steps_per_execution == 30
    many = train_and_evaluate(auto, tmp_path / "many")
    for split in SPLITS:
        assert one[split] == many[split], split
    # Evaluations and checkpoints fall at the same steps.
    assert checkpoint_steps(tmp_path / "one") == checkpoint_steps(tmp_path / "many")


# ---------------------------------------------------------------- divergence


def test_divergence_stops_with_a_clear_error(tmp_path: Path) -> None:
    cfg = compose_config(
        [*TINY, "model=mlp", "optimizer=sgd", "optimizer.lr=1e6", "trainer.steps_per_execution=1"]
    )
    with pytest.raises(DivergedError, match=r"diverged at step \d+") as info:
        train_and_evaluate(cfg, tmp_path)
    assert "optimizer.lr" in str(info.value)
    assert not (tmp_path / "metrics.json").exists()


def test_divergence_with_many_steps_a_call_names_the_range(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model=mlp", "optimizer=sgd", "optimizer.lr=1e6"])
    assert cfg.trainer.steps_per_execution == 30
    with pytest.raises(DivergedError, match=r"diverged between steps 1 and 30"):
        train_and_evaluate(cfg, tmp_path)


def test_cli_divergence_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli([*TINY, "model=mlp", "optimizer=sgd", "optimizer.lr=1e6"], cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "diverged between steps" in errors[0]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- the CLI's run folder


def test_cli_run_writes_the_contract_layout(tmp_path: Path) -> None:
    result = run_cli([*TINY, "model=softmax"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    for name in ("metrics.json", ".hydra", "mnist-lab.log", "model.keras", "predictions.npz"):
        assert (run_dir / name).exists(), name
    for name in ("config.yaml", "run.json", "checkpoint", "best"):
        assert (run_dir / "checkpoints" / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("step", "train", "validation", "test", "train_examples_per_second"):
        assert key in metrics
    assert metrics["config"]["model"]["name"] == "softmax"
    assert metrics["overrides"] == [*TINY, "model=softmax"]
    assert metrics["data"]["fingerprint"].startswith("sha256:")
    assert math.isfinite(metrics["wall_seconds"])
    assert "precision@1" in result.stdout  # the report table
    assert "Traceback" not in result.stderr
    predictions = np.load(run_dir / "predictions.npz")
    test = predictions["test_probabilities"]
    assert test.shape == (1000, 10)
    correct = int((test.argmax(1) == predictions["test_labels"]).sum())
    assert correct == metrics["test"]["num_correct"]


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
    assert read_json(run_dir / "metrics.json")["test"]["precision"] > 0.85


def test_each_job_sets_its_own_precision() -> None:
    # Jobs of a sweep share a process: a float32 job after a mixed one must compute in float32.
    configure_tensorflow(compose_config([*TINY, "trainer.mixed_precision=true"]))
    assert keras.mixed_precision.global_policy().name == precision_policy(True)
    configure_tensorflow(compose_config(TINY))
    assert keras.mixed_precision.global_policy().name == "float32"


def test_evaluation_step_is_traced_once() -> None:
    """Any batch size, inside ``fit`` (a callback) or after it: one trace of the step."""
    cfg = compose_config([*TINY, *SMALL_CNN, "trainer.steps_per_execution=1"])
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
