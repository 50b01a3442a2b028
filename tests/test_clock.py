"""The step clock's account: which steps get the periodic work, and what the throughput counts.

Driven by hand with a fake clock, so every second is known: a test of the arithmetic that
the loop's figures (metrics.json, TensorBoard) rely on.
"""

from __future__ import annotations

import pytest

from mnist_lab.training import clock as clock_module
from mnist_lab.training.clock import CHECKPOINTS, EVALUATION, SUMMARIES, StepClock


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(clock_module.time, "perf_counter", fake)
    return fake


def drive(clock: StepClock, fake: FakeTime, calls: int, steps_per_call: int, seconds: float,
          first_call: float = 5.0) -> None:  # fmt: skip
    """``calls`` compiled calls of ``steps_per_call`` steps, each ``seconds`` long."""
    clock.on_train_begin()
    for call in range(calls):
        fake.now += first_call if call == 0 else seconds
        clock.on_train_batch_end((call + 1) * steps_per_call - 1, {"loss": 1.0})
    clock.on_train_end()


def test_periodic_work_falls_on_its_steps(fake_time: FakeTime) -> None:
    clock = StepClock(start_step=0, total_steps=25, batch_size=10)
    seen: dict[str, list[int]] = {"every": [], "each": []}
    clock.every(10, lambda step, logs: seen["every"].append(step))
    clock.each_call(lambda step, logs: seen["each"].append(step))
    drive(clock, fake_time, calls=25, steps_per_call=1, seconds=0.1)
    assert seen["every"] == [10, 20, 25]  # each multiple, and the last step
    assert seen["each"] == list(range(1, 26))


def test_with_several_steps_a_call_the_cadence_is_kept(fake_time: FakeTime) -> None:
    clock = StepClock(start_step=40, total_steps=100, batch_size=10)
    seen: list[int] = []
    clock.every(20, lambda step, logs: seen.append(step))
    drive(clock, fake_time, calls=6, steps_per_call=10, seconds=1.0)
    assert seen == [60, 80, 100]
    assert clock.step == 100 and clock.previous_step == 90


def test_throughput_leaves_out_the_first_call_and_the_timed_work(fake_time: FakeTime) -> None:
    clock = StepClock(start_step=0, total_steps=10, batch_size=100)

    def evaluate(step: int, logs: dict) -> None:
        with clock.timed(EVALUATION):
            fake_time.now += 3.0
        with clock.timed(SUMMARIES):
            fake_time.now += 1.0
        with clock.timed(CHECKPOINTS):
            fake_time.now += 0.5

    clock.every(5, evaluate)
    # 10 calls of 1 step: the first 5 s (tracing), then 9 calls of 0.2 s.
    drive(clock, fake_time, calls=10, steps_per_call=1, seconds=0.2)
    figures = clock.throughput(steps_per_call=1)
    # After the first call: 9 steps of training in 1.8 s, plus 2 evaluations' work.
    assert figures["train_examples_per_second"] == pytest.approx(900 / 1.8)
    assert figures["loop_examples_per_second"] == pytest.approx(900 / (1.8 + 2 * 1.5))
    assert clock.timings.total(EVALUATION) == pytest.approx(6.0)


def test_the_rate_between_evaluations_excludes_their_work(fake_time: FakeTime) -> None:
    clock = StepClock(start_step=0, total_steps=20, batch_size=10)
    rates: list[float | None] = []

    def evaluate(step: int, logs: dict) -> None:
        with clock.timed(EVALUATION):
            fake_time.now += 7.0
        rates.append(clock.examples_per_second_since_last_asked())

    clock.every(10, evaluate)
    drive(clock, fake_time, calls=20, steps_per_call=1, seconds=0.5)
    # Window 1: steps 2-10 after the first call (9 steps, 4.5 s); window 2: 10 steps, 5 s.
    assert rates == [pytest.approx(90 / 4.5), pytest.approx(100 / 5.0)]


def test_a_single_call_counts_its_own_time(fake_time: FakeTime) -> None:
    clock = StepClock(start_step=0, total_steps=10, batch_size=10)
    drive(clock, fake_time, calls=1, steps_per_call=10, seconds=0, first_call=2.0)
    assert clock.throughput(steps_per_call=10)["train_examples_per_second"] == pytest.approx(50)


def test_nothing_trained_has_no_throughput(fake_time: FakeTime) -> None:
    clock = StepClock(start_step=10, total_steps=10, batch_size=10)
    assert clock.throughput(steps_per_call=1) == {
        "train_examples_per_second": None,
        "loop_examples_per_second": None,
    }
