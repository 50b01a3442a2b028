"""A real TensorBoard serving a real run and a real sweep, queried through its HTTP data API."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, free_port, run_cli

pytestmark = pytest.mark.slow

COMMON = ["data=fake", "trainer.steps=20", "trainer.eval_every=10", "trainer.batch_size=16"]
STARTUP_SECONDS = 180  # TensorBoard imports TensorFlow: slow on 2 busy cores (tests in parallel)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run (model=softmax) and one sweep (model=softmax,mlp), from the real CLI."""
    cwd = tmp_path_factory.mktemp("cli")
    for args in (["model=softmax"], ["-m", "model=softmax,mlp"]):
        result = run_cli([*args, *COMMON], cwd=cwd)
        assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "outputs"


@pytest.fixture(scope="module")
def run_dir(outputs: Path) -> Path:
    (metrics,) = (p for p in outputs.glob("*/*/metrics.json") if p.parts[-3] != "multirun")
    return metrics.parent


@pytest.fixture(scope="module")
def sweep_dir(outputs: Path) -> Path:
    (sweep,) = outputs.glob("multirun/*/*")
    return sweep


def get(base: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}{path}{query}", timeout=60) as response:
        return json.load(response)


def post(base: str, path: str, body: dict) -> Any:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


@contextlib.contextmanager
def tensorboard(logdir: Path, expected_runs: set[str], log: Path) -> Iterator[str]:
    """Serve ``logdir`` on 127.0.0.1; yield the base URL once every expected run is loaded."""
    port = free_port()
    command = [str(BIN / "tensorboard"), "--logdir", str(logdir), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--load_fast=false"]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(OSError):
                if expected_runs <= set(get(base, "/data/runs")):
                    break
            assert time.monotonic() < deadline, f"not served in time:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_one_run_every_dashboard(run_dir: Path, tmp_path: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    runs = {".", "train", "validation"}
    with tensorboard(run_dir / "tensorboard", runs, tmp_path / "tb.log") as base:
        scalar_tags = get(base, "/data/plugin/scalars/tags")
        for run in ("train", "validation"):
            assert {"loss", "precision"} <= set(scalar_tags[run])
            points = get(base, "/data/plugin/scalars/scalars", run=run, tag="precision")
            assert [step for _, step, _ in points] == [10, 20]
        assert {"learning_rate", "examples_per_second"} <= set(scalar_tags["train"])
        (final,) = get(base, "/data/plugin/scalars/scalars", run=".", tag="final/test_precision")
        assert final[1:] == [20, pytest.approx(metrics["test"]["precision"])]

        images = get(base, "/data/plugin/images/tags")
        assert set(images["train"]) == {"inputs"}
        assert set(images["."]) == {"templates/logits"}
        assert set(images["validation"]) == {"misclassified", "confusion_matrix"}
        assert {"logits/kernel", "logits/bias"} <= set(
            get(base, "/data/plugin/histograms/tags")["."]
        )
        assert {"model/summary", "config"} <= set(get(base, "/data/plugin/text/tags")["."])
        assert get(base, "/data/plugin/graphs/info")["."]["run_graph"]


def test_sweep_jobs_compare_in_hparams(sweep_dir: Path, tmp_path: Path) -> None:
    runs = {f"{job}/tensorboard{sub}" for job in "01" for sub in ("", "/train", "/validation")}
    with tensorboard(sweep_dir, runs, tmp_path / "tb.log") as base:
        experiment = post(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
        hparams = {info["name"] for info in experiment["hparamInfos"]}
        assert {
            "model",
            "optimizer",
            "optimizer.lr",
            "trainer.batch_size",
            "trainer.steps",
        } <= hparams
        assert {
            "seed",
            "optimizer.schedule",
            "data",
            "model.params",
            "model.hidden_units",
        } <= hparams
        metrics = {
            (m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]
        }
        assert {("", "final/validation_precision"), ("", "final/test_precision")} <= metrics
        assert ("validation", "precision") in metrics

        body = {
            "experimentName": "",
            "allowedStatuses": [
                "STATUS_UNKNOWN",
                "STATUS_SUCCESS",
                "STATUS_FAILURE",
                "STATUS_RUNNING",
            ],
            "startIndex": 0,
            "sliceSize": 100,
        }
        groups = post(base, "/data/plugin/hparams/session_groups", body)["sessionGroups"]
    assert len(groups) == 2
    for group in groups:
        (session,) = group["sessions"]
        job = session["name"].split("/")[0]
        assert group["hparams"]["model"] == ["softmax", "mlp"][int(job)]
        assert group["hparams"]["trainer.batch_size"] == 16
        assert session["status"] == "STATUS_SUCCESS"
        expected = json.loads((sweep_dir / job / "metrics.json").read_text())
        values = {
            m["name"]["tag"]: m["value"]
            for m in group["metricValues"]
            if not m["name"].get("group")
        }
        assert values["final/test_precision"] == pytest.approx(expected["test"]["precision"])
        assert values["final/validation_precision"] == pytest.approx(
            expected["validation"]["precision"]
        )
