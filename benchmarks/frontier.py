"""Time to a validation target: the frontier table of benchmarks/README.md (issue 23).

    .venv/bin/python benchmarks/frontier.py                        # every target, seeds 0-2
    .venv/bin/python benchmarks/frontier.py --targets 0.99 0.992   # some targets
    .venv/bin/python benchmarks/bench.py --only frontier           # the same, as a bench part

For each validation target, every candidate recipe (a preset and its overrides) runs once a
seed with ``trainer.target_precision`` set, each seed a command of its own, as a user types it.
A recipe's figures are medians over the seeds that reached the target; the row of the frontier
is the candidate with the lowest median training seconds among those that reached it on every
seed. *Training seconds* are ``stop.target.training_seconds`` (training steps up to the
evaluation that reached the target, the first compiled call included, evaluations excluded);
*to the target* is ``stop.target.wall_seconds`` plus the command's start-up (its whole time less
the job's own ``wall_seconds``); *whole command* includes the final evaluation after the stop.
The precision is the one the run computed in (``machine.precision``), so a CPU without bfloat16
instructions gives the float32 rows. Validation chooses; the test figure is reported only.

One target is also reached by the plain-Keras script a capable user writes (the Deep MNIST
CNN, Adam 1e-3, tf.data), evaluated as often, against mnist-lab's default run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BIN, mnist_lab  # noqa: E402

SEEDS = (0, 1, 2)
# Candidates per target, cheapest first. Evaluations every 100 steps for the short recipes and
# every 500 for cnn_best (its presets evaluate every 800 and 2,000 steps): a stop can only fall
# on an evaluation.
FAST = ["experiment=cnn_fast", "trainer.eval_every=100"]
BEST = ["experiment=cnn_best", "trainer.eval_every=500"]
CANDIDATES: dict[float, dict[str, list[str]]] = {
    0.990: {"cnn_fast": FAST},
    0.992: {"cnn_fast": FAST, "cnn_fast, 3,200 steps": [*FAST, "trainer.steps=3200"]},
    0.994: {"cnn_best": BEST},
    0.995: {"cnn_best": BEST},
    0.996: {"cnn_best": BEST},
}
# The plain-Keras comparison: mnist-lab's default run (the Deep MNIST CNN) against the script.
COMPARED_TARGET = 0.99
DEFAULT_RUN = ["trainer.eval_every=100"]

PLAIN_TO_TARGET = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, tensorflow as tf
from keras import layers
from mnist_lab.data import load_dataset
from omegaconf import OmegaConf

target, seed, every, limit = float(sys.argv[1]), int(sys.argv[2]), 100, 20000
data = load_dataset(OmegaConf.create({"name": "mnist", "dir": None, "validation_size": 5000,
                                      "train_limit": None, "download": True}))
keras.utils.set_random_seed(seed)
x = data.train.images.astype("float32") / 255.0
model = keras.Sequential([keras.Input((28, 28)), layers.Reshape((28, 28, 1))])
for f in (32, 64):
    model.add(layers.Conv2D(f, 5, padding="same", activation="relu"))
    model.add(layers.MaxPooling2D())
model.add(layers.Flatten())
model.add(layers.Dense(1024, activation="relu"))
model.add(layers.Dropout(0.5))
model.add(layers.Dense(10))
model.compile(keras.optimizers.Adam(1e-3),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
train = (tf.data.Dataset.from_tensor_slices((x, data.train.labels)).shuffle(len(x), seed=seed)
         .batch(128, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE))
validation = (data.validation.images.astype("float32") / 255.0, data.validation.labels)
test = (data.test.images.astype("float32") / 255.0, data.test.labels)


class Target(keras.callbacks.Callback):
    # Training seconds as mnist-lab counts them: from the start, evaluations left out.
    reached, evaluating = None, 0.0

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.test_started = time.perf_counter()

    def on_test_end(self, logs=None):
        self.evaluating += time.perf_counter() - self.test_started

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_accuracy"] >= target:
            self.reached = (epoch + 1) * every
            self.seconds = time.perf_counter() - self.started - self.evaluating
            self.model.stop_training = True


stop = Target()
model.fit(train, steps_per_epoch=every, epochs=limit // every, validation_data=validation,
          validation_batch_size=1000, verbose=0, callbacks=[stop])
reached, seconds = stop.reached, getattr(stop, "seconds", None)
print(json.dumps({"step": reached, "training_seconds": seconds,
                  "test_precision": model.evaluate(*test, batch_size=1000, verbose=0)[1]}))
"""


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def recipe(overrides: list[str], target: float, workdir: Path, name: str) -> dict:
    """One recipe to one target over the seeds: each run's figures, and their medians."""
    runs = []
    for seed in SEEDS:
        m = mnist_lab(
            [*overrides, f"seed={seed}", f"trainer.target_precision={target}"],
            workdir,
            f"frontier-{name}-{target}-{seed}".replace(" ", "_").replace(",", ""),
        )
        reached = m["stop"]["target"]
        startup = m["process_seconds"] - m["wall_seconds"]
        runs.append(
            {
                "seed": seed,
                "reached": reached["reached"],
                "step": reached["step"],
                "training_seconds": reached["training_seconds"],
                "seconds_to_target": (
                    reached["wall_seconds"] + startup if reached["reached"] else None
                ),
                "process_seconds": m["process_seconds"],
                "test_precision": m["test"]["precision"],
                "validation_precision": m["validation"]["precision"],
                "precision": m["machine"]["precision"],
                "cpu": m["machine"]["cpu"],
            }
        )
    done = [r for r in runs if r["reached"]]
    return {
        "overrides": overrides,
        "reached": f"{len(done)}/{len(runs)}",
        "precision": runs[0]["precision"],
        "median_step": median([r["step"] for r in done]),
        "median_training_seconds": median([r["training_seconds"] for r in done]),
        "median_seconds_to_target": median([r["seconds_to_target"] for r in done]),
        "median_process_seconds": median([r["process_seconds"] for r in done]),
        "median_test_precision": median([r["test_precision"] for r in done]),
        "runs": runs,
    }


def plain_keras(target: float, workdir: Path) -> dict:
    runs = []
    for seed in SEEDS:
        started = time.perf_counter()
        result = subprocess.run(
            [str(BIN / "python"), "-c", PLAIN_TO_TARGET, str(target), str(seed)],
            cwd=workdir,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"plain Keras failed:\n{result.stderr[-2000:]}")
        run = json.loads(result.stdout.strip().splitlines()[-1])
        runs.append({**run, "seed": seed, "process_seconds": time.perf_counter() - started})
    done = [r for r in runs if r["step"] is not None]
    return {
        "reached": f"{len(done)}/{len(runs)}",
        "median_step": median([r["step"] for r in done]),
        "median_training_seconds": median([r["training_seconds"] for r in done]),
        "median_process_seconds": median([r["process_seconds"] for r in done]),
        "median_test_precision": median([r["test_precision"] for r in done]),
        "runs": runs,
    }


def frontier(workdir: Path, targets: tuple[float, ...] = tuple(CANDIDATES)) -> dict:
    """Every candidate to every target, the fastest per target, and the plain-Keras row."""
    out: dict = {"targets": {}}
    for target in targets:
        tried = {
            name: recipe(overrides, target, workdir, name)
            for name, overrides in CANDIDATES[target].items()
        }
        every_seed = {
            n: r for n, r in tried.items() if r["reached"] == f"{len(SEEDS)}/{len(SEEDS)}"
        }
        fastest = min(
            every_seed, key=lambda n: every_seed[n]["median_training_seconds"], default=None
        )
        out["targets"][str(target)] = {"fastest": fastest, "candidates": tried}
    if COMPARED_TARGET in targets:
        out["plain_keras"] = {
            "target": COMPARED_TARGET,
            "mnist_lab_default": recipe(DEFAULT_RUN, COMPARED_TARGET, workdir, "default"),
            "plain_keras": plain_keras(COMPARED_TARGET, workdir),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=list(CANDIDATES))
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "frontier.json")
    args = parser.parse_args()
    unknown = [t for t in args.targets if t not in CANDIDATES]
    if unknown:
        parser.error(f"no candidates for {unknown}: choose among {list(CANDIDATES)}")
    with tempfile.TemporaryDirectory(prefix="mnist-lab-frontier-") as tmp:
        results = frontier(Path(tmp), tuple(args.targets))
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    for target, row in results["targets"].items():
        best = row["candidates"].get(row["fastest"]) if row["fastest"] else None
        shown = (
            f"{row['fastest']}: {best['median_training_seconds']:.1f} s training, "
            f"{best['median_seconds_to_target']:.1f} s to the target, test "
            f"{best['median_test_precision']:.4f} ({best['precision']})"
            if best
            else "no candidate reached it on every seed"
        )
        print(f"{float(target):.1%}: {shown}")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
