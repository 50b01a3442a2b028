"""Every run records where it ran: metrics.json's ``machine``, TensorBoard's text and HParams,
and mnist-lab-runs filters, lists and diffs by it."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_lab.core.backend import cpu_has_bfloat16
from tests.conftest import TINY, read_json, run_cli, run_tool

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny CNN in float32 and with mixed precision asked for."""
    root = tmp_path_factory.mktemp("machine")
    for name, extra in (("f32", []), ("mixed", ["trainer.mixed_precision=true"])):
        result = run_cli(
            [*TINY, "trainer.intra_op_threads=1", *extra, f"hydra.run.dir={root / name}"],
            cwd=root,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    return root


def test_metrics_json_says_where_and_in_what_precision_it_ran(two_runs: Path) -> None:
    machine = read_json(two_runs / "f32" / "metrics.json")["machine"]
    assert machine["precision"] == "float32"
    assert machine["intra_op_threads"] == 1  # the setting in effect, not the default
    assert machine["cores"] == len(os.sched_getaffinity(0))
    assert machine["bfloat16"] is cpu_has_bfloat16() and machine["gpus"] == []
    assert machine["python"] == platform.python_version()
    assert machine["tensorflow"] and machine["keras"] and machine["cpu"]
    mixed = read_json(two_runs / "mixed" / "metrics.json")["machine"]
    # After the fallback: bfloat16 only where the CPU has the instructions.
    assert mixed["precision"] == ("bfloat16" if cpu_has_bfloat16() else "float32")


def test_the_commit_of_the_checkout_is_recorded(two_runs: Path) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not running from a git checkout")
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    recorded = read_json(two_runs / "f32" / "metrics.json")["machine"]["git"]
    assert recorded.removesuffix("+dirty") == head


def test_tensorboard_shows_the_machine_beside_the_config(two_runs: Path) -> None:
    accumulator = event_accumulator.EventAccumulator(str(two_runs / "f32" / "tensorboard"))
    accumulator.Reload()
    assert "machine" in accumulator.Tags()["tensors"]
    text = accumulator.Tensors("machine")[0].tensor_proto.string_val[0].decode()
    assert "precision: float32" in text and "tensorflow:" in text
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["machine.precision"].string_value == "float32"
    assert start.hparams["machine.intra_op_threads"].number_value == 1


def test_runs_filter_and_diff_by_machine(two_runs: Path, tmp_path: Path) -> None:
    listed = run_tool("mnist-lab-runs", [str(two_runs), "machine.precision=float32"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    expected = 1 if cpu_has_bfloat16() else 2
    assert len(rows) == expected and any(r.split()[-1].endswith("f32") for r in rows)
    diff = run_tool("mnist-lab-runs", ["diff", str(two_runs / "f32"), str(two_runs / "mixed")],
                    cwd=tmp_path)  # fmt: skip
    assert diff.returncode == 0, diff.stderr
    line = next(x for x in diff.stdout.splitlines() if x.startswith("machine.precision"))
    assert "float32" in line
