"""Checkpoints in-process: contents, retention, damaged ones, write failures, stop requests."""

from __future__ import annotations

import errno
import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from mnist_lab.core.backend import configure_tensorflow, keras, tf
from mnist_lab.core.errors import UserError
from mnist_lab.data import load_dataset
from mnist_lab.data.pipeline import train_batches
from mnist_lab.rundir import resume
from mnist_lab.rundir.checkpoints import Checkpoints, latest_checkpoint
from mnist_lab.rundir.interrupts import StopRequests
from mnist_lab.rundir.results import EvalRecord, SplitResult
from mnist_lab.training.loop import train_and_evaluate
from mnist_lab.training.models import build_compiled_model, export_model
from mnist_lab.training.stopping import StoppingRules
from tests.conftest import compose_config

# A small MLP with dropout, so the seed generators' state matters.
SMALL = [
    "data=fake",
    "model=mlp",
    "model.hidden_units=[16]",
    "model.dropout=0.5",
    "trainer.batch_size=32",
    "trainer.steps=40",
    "trainer.checkpoint_every=10",
    "trainer.eval_every=20",
]


def setup(tmp_path: Path, overrides: list[str] | None = None) -> tuple:
    overrides = overrides or []
    base = SMALL
    if any(o.startswith("model=") for o in overrides):  # another model: drop the MLP's keys
        base = [o for o in SMALL if not o.startswith("model")]
    cfg = compose_config([*base, *overrides])
    configure_tensorflow(cfg)
    model = build_compiled_model(cfg)
    keep = cfg.trainer.keep_checkpoints
    return cfg, model, Checkpoints(tmp_path / "checkpoints", model, cfg.seed, keep)


def fit(cfg, model, checkpoints: Checkpoints) -> None:
    data = load_dataset(cfg.data)
    model.fit(
        train_batches(data.train, cfg.trainer.batch_size, seed=cfg.seed),
        steps_per_epoch=cfg.trainer.steps,
        epochs=1,
        verbose=0,
        shuffle=False,
    )
    checkpoints.save(cfg.trainer.steps)


def saved_steps(directory: Path) -> list[int]:
    return sorted(
        int(p.name[len("ckpt-") : -len(".index")]) for p in directory.glob("ckpt-*.index")
    )


def record(step: int, num_correct: int) -> EvalRecord:
    return EvalRecord(step, 1.0, 0.5, SplitResult(100, num_correct, 1.0), 0.001)


def values(variables: list) -> list[np.ndarray]:
    return [np.array(v) for v in variables]


def test_a_checkpoint_holds_weights_optimizer_rng_step_and_seed(tmp_path: Path) -> None:
    cfg, model, checkpoints = setup(tmp_path)
    fit(cfg, model, checkpoints)
    trained_model, trained_optimizer = values(model.variables), values(model.optimizer.variables)

    names = [name for name, _ in tf.train.list_variables(str(tmp_path / "checkpoints/ckpt-40"))]
    for key in ("step/", "seed/", "rng/0/", "optimizer/_iterations/"):
        assert any(name.startswith(key) for name in names), key

    _, fresh, restored = setup(tmp_path)
    assert restored.restore_latest() == 40
    # Everything, including both dropout seed generators and Adam's slots and iterations.
    for before, after in zip(trained_model, values(fresh.variables), strict=True):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(trained_optimizer, values(fresh.optimizer.variables), strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(fresh.optimizer.iterations) == 40
    # ... which is not trivially true: a model that was not restored differs.
    _, untouched, _ = setup(tmp_path / "other")
    assert int(untouched.optimizer.iterations) == 0


def keep_if_best(rules: StoppingRules, checkpoints: Checkpoints, evaluation: EvalRecord) -> None:
    """What the loop does at each evaluation: the rules choose, the checkpoints keep."""
    if rules.observe(evaluation, 0.0, 0.0, final=False).improved:
        assert rules.best_value is not None
        checkpoints.keep_best(evaluation.step, rules.best_value)


def test_keeps_the_last_n_and_the_best_by_validation_precision(tmp_path: Path) -> None:
    cfg, model, checkpoints = setup(tmp_path, ["trainer.keep_checkpoints=2"])
    rules = StoppingRules(cfg.trainer)
    for step, correct in [(10, 50), (20, 70), (30, 60), (40, 70)]:
        keep_if_best(rules, checkpoints, record(step, correct))
        checkpoints.save(step)
    assert saved_steps(tmp_path / "checkpoints") == [30, 40]
    best = tmp_path / "checkpoints/best"
    assert saved_steps(best) == [20]  # 40 only tied it
    assert tf.train.load_variable(str(best / "ckpt-20"), "precision/.ATTRIBUTES/VARIABLE_VALUE")

    # The best precision survives a restart: a worse evaluation does not replace it.
    cfg, _, resumed = setup(tmp_path, ["trainer.keep_checkpoints=2"])
    assert resumed.restore_latest() == 40
    rules = StoppingRules(cfg.trainer)
    rules.best_value = resumed.recorded_best()
    assert rules.best_value == 0.7
    keep_if_best(rules, resumed, record(50, 65))
    assert saved_steps(best) == [20]
    keep_if_best(rules, resumed, record(60, 71))
    assert saved_steps(best) == [60]


def test_stopping_state_is_in_each_checkpoint_and_comes_back(tmp_path: Path) -> None:
    """Patience counter, best value and step, the stop decision: a resumed run stops where an
    uninterrupted one does only if these come back with the weights."""
    stopping = ["trainer.early_stopping.patience=2", "trainer.early_stopping.min_delta=0.05"]
    cfg, model, _ = setup(tmp_path, stopping)
    rules = StoppingRules(cfg.trainer)
    checkpoints = Checkpoints(tmp_path / "checkpoints", model, cfg.seed, 3, state=rules)
    keep_if_best(rules, checkpoints, record(10, 50))
    keep_if_best(rules, checkpoints, record(20, 54))  # +0.04: not more than min_delta
    checkpoints.save(20)
    decision = rules.observe(record(30, 52), 1.5, 2.5, final=False)
    assert decision.stop == "early_stopping"
    checkpoints.save(30)

    cfg, model, _ = setup(tmp_path, stopping)
    restored = StoppingRules(cfg.trainer)
    again = Checkpoints(tmp_path / "checkpoints", model, cfg.seed, 3, state=restored)
    assert again.restore_latest() == 30
    assert restored.as_vector()[:6] == rules.as_vector()[:6]
    assert (restored.stopped, restored.stop_step, restored.best_step) == ("early_stopping", 30, 10)
    assert restored.best_value == 0.5 and restored.without_improvement == 2
    assert restored.record(30, 32)["best_step"] == 10


def damage(prefix: Path, how: str) -> None:
    data = prefix.with_name(prefix.name + ".data-00000-of-00001")
    if how == "truncated":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "bit flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # caught by the crc32c of every tensor
        data.write_bytes(bytes(raw))
    elif how == "index garbage":
        prefix.with_name(prefix.name + ".index").write_bytes(b"\0garbage" * 10)
    else:
        data.unlink()


@pytest.mark.parametrize("how", ["truncated", "bit flip", "index garbage", "missing"])
def test_a_damaged_latest_checkpoint_is_skipped_with_a_warning(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, checkpoints = setup(tmp_path)
    checkpoints.save(10)
    checkpoints.save(20)
    damage(tmp_path / "checkpoints/ckpt-20", how)

    _, _, resumed = setup(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mnist_lab.rundir.checkpoints"):
        assert resumed.restore_latest() == 10
    assert "ckpt-20 is unreadable" in caplog.text


def test_no_readable_checkpoint_is_an_error(tmp_path: Path) -> None:
    _, _, checkpoints = setup(tmp_path)
    checkpoints.save(10)
    damage(tmp_path / "checkpoints/ckpt-10", "truncated")
    _, _, resumed = setup(tmp_path)
    with pytest.raises(UserError, match="no readable checkpoint"):
        resumed.restore_latest()


def fail_when(monkeypatch: pytest.MonkeyPatch, where: str, step: int) -> None:
    """Simulate a full disk while checkpoint ``step`` is written: its data, or its commit."""
    from tensorflow.python.checkpoint import checkpoint_management, functional_saver

    full = OSError(errno.ENOSPC, "No space left on device")
    if where == "data":
        original = functional_saver.MultiDeviceSaver.save

        def save(self, file_prefix, options=None):  # type: ignore[no-untyped-def]
            if f"ckpt-{step}" in str(np.array(file_prefix)):
                raise full
            return original(self, file_prefix, options)

        monkeypatch.setattr(functional_saver.MultiDeviceSaver, "save", save)
    else:
        file_io = checkpoint_management.file_io
        original_write = file_io.atomic_write_string_to_file

        def write(filename, contents, overwrite=True):  # type: ignore[no-untyped-def]
            if f'"ckpt-{step}"' in contents:
                raise full
            return original_write(filename, contents, overwrite)

        monkeypatch.setattr(file_io, "atomic_write_string_to_file", write)


@pytest.mark.parametrize("where", ["data", "state file"])
def test_a_full_disk_mid_run_is_one_clear_error_and_keeps_the_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    cfg = compose_config([*SMALL, "trainer.steps=30", "trainer.eval_every=30"])
    fail_when(monkeypatch, where, step=20)
    with pytest.raises(UserError) as raised:
        train_and_evaluate(cfg, tmp_path)
    message = str(raised.value)
    assert "No space left on device" in message and "previous checkpoints are intact" in message
    assert "\n" not in message
    assert not (tmp_path / "metrics.json").exists()

    monkeypatch.undo()
    _, _, after = setup(tmp_path, ["trainer.steps=30"])
    assert after.restore_latest() == 10


def test_an_unwritable_checkpoint_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(UserError, match="cannot create the checkpoint folder"):
        setup(tmp_path)


def test_the_export_is_the_model_alone(tmp_path: Path) -> None:
    cfg, model, _ = setup(tmp_path, ["optimizer.schedule.warmup_steps=5"])  # our own schedule
    export_model(model, tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert getattr(loaded, "optimizer", None) is None
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_a_signal_asks_to_stop_and_the_handler_is_removed_after() -> None:
    stops = StopRequests()
    before = signal.getsignal(signal.SIGTERM)
    with stops.on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.requested and stops.signum == signal.SIGTERM  # no exit yet
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stops = StopRequests()
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    stops._on_signal(signal.SIGINT, None)
    assert exits == [] and stops.requested
    stops._on_signal(signal.SIGINT, None)
    assert exits == [130]


@pytest.mark.parametrize("state", ["", "garbage {{{\n", 'model_checkpoint_path: "ckpt-99"\n'])
def test_a_damaged_state_file_is_rebuilt_from_the_checkpoint_files(
    tmp_path: Path, state: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, checkpoints = setup(tmp_path)
    checkpoints.save(10)
    checkpoints.save(20)
    (tmp_path / "checkpoints" / "checkpoint").write_text(state)
    assert latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-20")
    with caplog.at_level(logging.WARNING):
        _, _, again = setup(tmp_path)
        assert again.restore_latest() == 20
    assert "rebuilt" in caplog.text or state.startswith("model_checkpoint_path")


def test_leftovers_of_a_killed_save_are_removed(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "ckpt-30_temp").mkdir(parents=True)
    (tmp_path / "checkpoints" / "ckpt-30_temp" / "part-0").write_bytes(b"x" * 100)
    (tmp_path / "checkpoints" / "best" / "ckpt-5_temp").mkdir(parents=True)
    setup(tmp_path)
    assert not list((tmp_path / "checkpoints").glob("**/*_temp"))


def test_the_resume_command_names_the_run_dir(tmp_path: Path) -> None:
    command = resume.resume_command(tmp_path, ["data=fake"])
    assert command == f"mnist-lab data=fake hydra.run.dir={tmp_path.absolute()}"
