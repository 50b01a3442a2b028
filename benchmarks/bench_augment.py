"""What data augmentation costs, and which way of doing it is fastest on this CPU.

Trains the earlier cnn_fast model (CNN 32/64 3x3, dense 256, Adam, batch 128, cnn_fast's
precision) on real MNIST four ways:

- ``none``: no augmentation, mnist-lab's own pipeline;
- ``tf.data ops``: mnist-lab's ``data.augment`` (one fused affine transform an image, in the
  tf.data pipeline, drawn from (seed, step));
- ``Keras layers in tf.data``: RandomTranslation, RandomRotation and RandomZoom mapped over the
  same pipeline's batches;
- ``Keras layers in the model``: the same three layers as the model's first layers (active in
  training only), the usual Keras tutorial's way.

Every way moves, turns and zooms by the same ranges (mnist-lab's defaults: 2 pixels, 10
degrees, 10%) and hands the model uint8 images, rounded the same way.

Each way's model is built and traced once; then the four train in short bursts, one after
another, round after round, so that a busy moment on a shared machine hits all of them, and
the medians over the rounds are reported: training examples per second (each burst's first
compiled call left out) and the CPU time a step costs (every thread of this process: training
and tf.data). Two figures without a model complete the picture: what one batch's transform
costs alone, and how fast each pipeline delivers batches.

    .venv/bin/python benchmarks/bench_augment.py                # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/bench_augment.py --rounds 5 --burst 100 --float32
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module

from mnist_lab.config import register_configs
from mnist_lab.core.backend import configure_tensorflow, keras, precision_policy, tf
from mnist_lab.data import Dataset, load_dataset
from mnist_lab.data.augment import augment_batch
from mnist_lab.data.pipeline import train_batches
from mnist_lab.training.models import build_compiled_model, build_model
from mnist_lab.training.optimizers import build_optimizer

ROOT = Path(__file__).resolve().parent.parent
NONE, OURS, KERAS_DATA, KERAS_MODEL = (
    "none",
    "tf.data ops (mnist-lab)",
    "Keras layers in tf.data",
    "Keras layers in the model",
)
WAYS = (NONE, OURS, KERAS_DATA, KERAS_MODEL)
CNN_FAST = [
    "experiment=cnn_fast",
    "data=mnist",
    "model=cnn",
    "model.filters=[32,64]",
    "model.kernel_size=3",
    "model.dense_units=256",
    "data.augment.enabled=true",
    "trainer.tensorboard=false",
]
SIZE = 28

Sample = tuple[float, float]  # (examples per second, CPU milliseconds per batch)


def config(float32: bool) -> Any:
    register_configs()
    overrides = CNN_FAST + (["trainer.mixed_precision=false"] if float32 else [])
    with initialize_config_module(config_module="mnist_lab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def keras_augmentation(a: Any) -> keras.Sequential:
    """Keras's three layers with mnist-lab's ranges; float32 whatever the precision policy
    (under mixed_bfloat16 they would transform in bfloat16)."""
    return keras.Sequential(
        [
            keras.layers.RandomTranslation(
                a.translate / SIZE, a.translate / SIZE, fill_mode="constant", dtype="float32"
            ),
            keras.layers.RandomRotation(a.rotate / 360, fill_mode="constant", dtype="float32"),
            keras.layers.RandomZoom(a.zoom, a.zoom, fill_mode="constant", dtype="float32"),
        ],
        name="augmentation",
    )


def to_uint8(x: Any) -> Any:
    # As mnist-lab's augmentation ends: round, clip, back to uint8 [n, 28, 28].
    return keras.ops.cast(keras.ops.clip(keras.ops.round(x[..., 0]), 0, 255), "uint8")


def pipeline(way: str, cfg: Any, data: Dataset) -> tf.data.Dataset:
    batch, seed = cfg.trainer.batch_size, cfg.seed
    if way == OURS:
        return train_batches(data.train, batch, seed, augment=cfg.data.augment)
    plain = train_batches(data.train, batch, seed)
    if way != KERAS_DATA:
        return plain
    layers = keras_augmentation(cfg.data.augment)

    def moved(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.cast(images, tf.float32)[..., tf.newaxis]
        return to_uint8(layers(x, training=True)), labels

    # The same two threads and small buffer as mnist-lab's own pipeline, no autotuning.
    options = tf.data.Options()
    options.autotune.enabled = False
    return plain.map(moved, num_parallel_calls=2).prefetch(2).with_options(options)


def model_for(way: str, cfg: Any, steps: int) -> keras.Model:
    if way != KERAS_MODEL:
        return build_compiled_model(cfg)
    base = build_model(cfg.model)
    images = keras.Input((SIZE, SIZE), dtype="uint8", name="images")
    x = keras.layers.Reshape((SIZE, SIZE, 1), dtype="float32")(keras.ops.cast(images, "float32"))
    x = keras_augmentation(cfg.data.augment)(x)  # Keras turns it on in fit, off in predict
    model = keras.Model(images, base(to_uint8(x)), name="cnn_augmented")
    t = cfg.trainer
    model.compile(  # as build_compiled_model compiles
        optimizer=build_optimizer(cfg.optimizer, total_steps=steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="precision")],
        steps_per_execution=t.steps_per_execution,
        jit_compile=t.jit_compile,
    )
    return model


class Clock:
    """Wall time, and this process's CPU time (every thread: tf.data's and the model's)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def since(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class Timer(keras.callbacks.Callback):
    """From the end of a fit's first compiled call (iterator start-up) to its end."""

    def __init__(self) -> None:
        super().__init__()
        self.clock: Clock | None = None
        self.first_step = 0
        self.seconds = (0.0, 0.0)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.clock is None:
            self.clock, self.first_step = Clock(), batch + 1

    def on_train_end(self, logs: Any = None) -> None:
        assert self.clock is not None
        self.seconds = self.clock.since()


class Trainer:
    """One way's model and pipeline, built and traced once, then trained burst by burst."""

    def __init__(self, way: str, cfg: Any, data: Dataset, total_steps: int) -> None:
        self.model = model_for(way, cfg, total_steps)
        self.batches = pipeline(way, cfg, data)
        self.batch_size = cfg.trainer.batch_size
        self.train(cfg.trainer.steps_per_execution * 2)  # tracing, thread pools, first touch

    def train(self, steps: int) -> Sample:
        timer = Timer()
        self.model.fit(
            self.batches,
            steps_per_epoch=steps,
            epochs=1,
            verbose=0,
            shuffle=False,  # the pipeline shuffles
            callbacks=[timer],
        )
        wall, cpu = timer.seconds
        timed = steps - timer.first_step
        return timed * self.batch_size / wall, 1000 * cpu / timed


def input_rate(batches: tf.data.Dataset, count: int, batch_size: int) -> Sample:
    """The pipeline alone: examples delivered per second, and CPU milliseconds per batch."""
    iterator = iter(batches)
    next(iterator)  # the first batch pays for thread start
    clock = Clock()
    for _ in range(count):
        next(iterator)
    wall, cpu = clock.since()
    return count * batch_size / wall, 1000 * cpu / count


def transforms(cfg: Any, data: Dataset) -> dict[str, Callable[[], Any]]:
    """Each way's transform of one fixed batch, compiled: its cost with nothing around it."""
    images = tf.constant(data.train.images[: cfg.trainer.batch_size])
    layers = keras_augmentation(cfg.data.augment)
    step = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def ours() -> tf.Tensor:
        step.assign_add(1)  # a new draw each call, as each training step has
        return augment_batch(images, step, cfg.seed, cfg.data.augment)

    @tf.function
    def keras_layers() -> tf.Tensor:
        return to_uint8(layers(tf.cast(images, tf.float32)[..., tf.newaxis], training=True))

    return {OURS: ours, KERAS_DATA: keras_layers, KERAS_MODEL: keras_layers}


def transform_cost(fn: Callable[[], Any], count: int) -> float:
    """CPU milliseconds a call."""
    fn()
    clock = Clock()
    for _ in range(count):
        fn()
    return 1000 * clock.since()[1] / count


def median(samples: list[Sample], i: int) -> float:
    return statistics.median(sample[i] for sample in samples)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved repeats")
    parser.add_argument("--burst", type=int, default=60, help="training steps a repeat")
    parser.add_argument("--float32", action="store_true", help="no mixed precision")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "augment_results.json")
    args = parser.parse_args()
    started = time.perf_counter()
    cfg = config(args.float32)
    configure_tensorflow(cfg)  # the seed, threads, the precision policy
    data = load_dataset(cfg.data)
    batch = cfg.trainer.batch_size
    total_steps = args.rounds * args.burst + 2 * cfg.trainer.steps_per_execution
    trainers = {way: Trainer(way, cfg, data, total_steps) for way in WAYS}
    fns = transforms(cfg, data)

    training: dict[str, list[Sample]] = {way: [] for way in WAYS}
    inputs: dict[str, list[Sample]] = {way: [] for way in WAYS if way != KERAS_MODEL}
    alone: dict[str, list[float]] = {way: [] for way in fns}
    for _ in range(args.rounds):
        for way in WAYS:
            training[way].append(trainers[way].train(args.burst))
        for way in inputs:
            inputs[way].append(input_rate(trainers[way].batches, 100, batch))
        for way in (OURS, KERAS_DATA):
            alone[way].append(transform_cost(fns[way], 20))
    alone[KERAS_MODEL] = alone[KERAS_DATA]  # the same layers, the same ops

    base = median(training[NONE], 0), median(training[NONE], 1)
    results: dict[str, dict[str, Any]] = {}
    for way in WAYS:
        results[way] = {
            "train_examples_per_second": median(training[way], 0),
            "vs_none": median(training[way], 0) / base[0],
            "train_cpu_ms_per_step": median(training[way], 1),
            "transform_cpu_ms_per_batch": statistics.median(alone[way]) if way in alone else None,
            "input_examples_per_second": median(inputs[way], 0) if way in inputs else None,
            "samples": {"train": training[way], "input": inputs.get(way)},
        }
    precision = precision_policy(cfg.trainer.mixed_precision)
    print(
        f"\n{cpu_name()}, {precision}, batch {batch}, {args.rounds} rounds of {args.burst} "
        "steps, medians"
    )
    header = ("augmentation", "train ex/s", "vs none", "CPU ms/step", "transform ms", "input ex/s")
    print(f"{header[0]:<28}" + "".join(f"{h:>14}" for h in header[1:]))
    for way, r in results.items():
        cells = [
            f"{r['train_examples_per_second']:,.0f}",
            f"{r['vs_none']:.2f}",
            f"{r['train_cpu_ms_per_step']:.1f}",
            _maybe(r["transform_cpu_ms_per_batch"], ".2f"),
            _maybe(r["input_examples_per_second"], ",.0f"),
        ]
        print(f"{way:<28}" + "".join(f"{c:>14}" for c in cells))
    report = {
        "cpu": cpu_name(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "precision": precision,
        "batch_size": batch,
        "rounds": args.rounds,
        "burst_steps": args.burst,
        "augment": {k: cfg.data.augment[k] for k in ("translate", "rotate", "zoom")},
        "results": results,
        "seconds": time.perf_counter() - started,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {args.output} ({report['seconds']:.0f} s)")


def _maybe(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


if __name__ == "__main__":
    main()
