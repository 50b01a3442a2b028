"""TensorBoard summaries of a run, written with ``tf.summary`` into ``<run>/tensorboard``.

One TensorBoard run per folder, so that ``tensorboard --logdir <sweep>`` lists every job:

``.`` (the job itself)
    The HParams session (hyperparameters at the start, status at the end) and the metrics it
    compares, ``final/{train,validation,test}_precision``; weight histograms
    ``<layer>/<kernel|bias>`` at the start and at each evaluation; weight templates
    ``templates/<layer>`` at the end; the forward-pass graph; the texts ``model/summary`` and
    ``config``.
``train/`` and ``validation/``
    ``loss`` and ``precision`` at each evaluation, under the same tags so the curves overlay.
    train/ also has ``learning_rate``, ``examples_per_second`` and the ``inputs`` image (the
    first training batch, augmented when augmentation is on);
    validation/ the ``misclassified`` and ``confusion_matrix`` images and a PR curve for
    each class, ``class/<i>/pr_curves``, at the end; and the embedding projector's files
    (``projector.py``).

Nothing is written inside the compiled training step: scalars and histograms are written at
evaluation points only, a few milliseconds each, timed by the loop's step clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

from mnist_lab.core.backend import keras, tf
from mnist_lab.core.errors import UserError
from mnist_lab.rundir.results import EvalRecord, SplitResult
from mnist_lab.show.hparams import hparams_of, machine_hparams
from mnist_lab.show.render import GRID_IMAGES, render_confusion, render_grid

TEMPLATE_UNITS = 32


class RunSummaries:
    """Writes the run's summaries; every method is a no-op when ``trainer.tensorboard`` is off.

    The loop calls ``start``, then ``write_evaluation`` at each evaluation (timed by the step
    clock as the loop's own cost), then ``end``.
    """

    def __init__(
        self, log_dir: Path, model: keras.Model, cfg: Any, data: Any, machine: dict[str, Any]
    ) -> None:
        self.log_dir = Path(log_dir)
        self.model = model
        self.cfg = cfg
        self.data = data
        self.machine = machine  # where it runs: beside the config, in the text and HParams
        self.enabled = bool(cfg.trainer.tensorboard)
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A full disk or a vanished folder while writing is one line, not a traceback."""
        try:
            yield
        except (OSError, tf.errors.OpError) as ex:
            raise UserError(
                f"cannot write TensorBoard summaries in {self.log_dir}: {op_error_text(ex)}; "
                "or turn them off with trainer.tensorboard=false"
            ) from ex

    def start(self, step: int, inputs: tuple[np.ndarray, np.ndarray]) -> None:
        with self._writing():
            self._start(step, inputs)

    def write_evaluation(self, record: EvalRecord, examples_per_second: float | None) -> None:
        with self._writing():
            self._write_evaluation(record, examples_per_second)

    def _start(self, step: int, inputs: tuple[np.ndarray, np.ndarray]) -> None:
        """What is known before training: hyperparameters, graph, texts, the first inputs.

        On resume this is written again at the resumed step: harmless, and it keeps a run
        whose first part had TensorBoard off complete. ``inputs`` is the first training batch
        as the model sees it (augmented, when augmentation is on).
        """
        if not self.enabled:
            return
        with self._writer("").as_default(step=step):
            # The run's own folder as the trial id: sessions of different runs never merge,
            # even when their logged hyperparameters are equal.
            hparams = {**hparams_of(self.cfg, self.model), **machine_hparams(self.machine)}
            hp.hparams(hparams, trial_id=str(self.log_dir.parent))
            tf.summary.graph(forward_graph(self.model))
            tf.summary.text("model/summary", code_block(model_summary(self.model)))
            tf.summary.text("config", code_block(OmegaConf.to_yaml(self.cfg, resolve=True)))
            tf.summary.text("machine", code_block(OmegaConf.to_yaml(self.machine)))
            # The initial weights; this also pays TensorFlow's first-use costs before training.
            self._write_histograms()
        images, labels = inputs[0][:GRID_IMAGES], inputs[1][:GRID_IMAGES]
        augmented = bool(self.cfg.data.augment.enabled)
        with self._writer("train").as_default(step=step):
            tf.summary.image(
                "inputs",
                render_grid(images, [self.data.class_names[label] for label in labels]),
                description=f"The first {len(images)} images of the first training batch "
                f"with their class{', augmented' if augmented else ''}.",
            )
        self._flush()

    def _write_evaluation(self, record: EvalRecord, examples_per_second: float | None) -> None:
        """Scalars and histograms at an evaluation, flushed so a live TensorBoard shows them."""
        if not self.enabled:
            return
        step = record.step
        with self._writer("train").as_default(step=step):
            tf.summary.scalar("loss", record.train_loss)
            tf.summary.scalar("precision", record.train_precision)
            tf.summary.scalar("learning_rate", record.learning_rate)
            if examples_per_second is not None:
                tf.summary.scalar(
                    "examples_per_second",
                    examples_per_second,
                    description="Training throughput since the previous evaluation, "
                    "evaluation, summaries and checkpoints excluded.",
                )
        if record.validation.num_examples:
            with self._writer("validation").as_default(step=step):
                tf.summary.scalar("loss", record.validation.loss)
                tf.summary.scalar("precision", record.validation.precision)
        with self._writer("").as_default(step=step):
            self._write_histograms()
        self._flush()

    def _write_histograms(self) -> None:
        for weight in self.model.trainable_weights:
            write_histogram(weight.path, weight.value)

    def end(
        self,
        results: dict[str, SplitResult],
        validation_predicted: np.ndarray,
        stop: dict[str, Any],
        validation_probabilities: np.ndarray,
    ) -> None:
        """The final figures; images and PR curves of the validation split's predictions."""
        if not self.enabled:
            return
        with self._writing():
            step = int(stop["step"])  # where training ended: the curves end there too
            with self._writer("").as_default(step=step):
                for split, result in results.items():
                    if result.precision is not None:
                        tf.summary.scalar(f"final/{split}_precision", result.precision)
                write_stop(stop)
                for name, images, titles in weight_templates(self.model, self.data.class_names):
                    # One row for the ten classes' templates, rows of eight for hidden units.
                    columns = 10 if len(images) <= 10 else 8
                    grid = render_grid(images, titles, columns=columns, diverging=True)
                    tf.summary.image(
                        f"templates/{name}",
                        grid,
                        description="Each unit's input weights as an image: red weighs a pixel "
                        "for the unit, blue against it, white ignores it.",
                    )
                # Marks the HParams session finished; a crashed run's stays "unknown".
                end = hparams_summary.session_end_pb(api_pb2.STATUS_SUCCESS)
                tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=step)
            if len(self.data.validation):
                with self._writer("validation").as_default(step=step):
                    self._write_validation_images(validation_predicted)
                    write_pr_curves(
                        self.data.validation.labels, validation_probabilities, self.data.class_names
                    )
            self.close()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _write_validation_images(self, predicted: np.ndarray) -> None:
        validation, names = self.data.validation, self.data.class_names
        wrong = np.flatnonzero(predicted != validation.labels)[:GRID_IMAGES]
        titles = [
            misclassified_title(names[predicted[i]], names[validation.labels[i]]) for i in wrong
        ]
        tf.summary.image(
            "misclassified",
            render_grid(validation.images[wrong], titles),
            description=f"The first {GRID_IMAGES} misclassified validation images, "
            "each titled predicted/true class.",
        )
        tf.summary.image(
            "confusion_matrix",
            render_confusion(validation.labels, predicted, names),
            description="Validation counts: rows are the true classes, columns the predicted.",
        )

    def _writer(self, run: str) -> tf.summary.SummaryWriter:
        """The writer of sub-run ``run`` ("" is the job's own folder), created on first use."""
        if run not in self._writers:
            try:
                self._writers[run] = tf.summary.create_file_writer(str(self.log_dir / run))
            except (OSError, tf.errors.OpError) as ex:
                raise UserError(
                    f"cannot write TensorBoard summaries in {self.log_dir / run}: "
                    f"{op_error_text(ex)}; or turn them off with trainer.tensorboard=false"
                ) from ex
        return self._writers[run]

    def _flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()


def op_error_text(ex: BaseException) -> str:
    """TensorFlow's message without its op and function decorations: "Not a directory"."""
    text = getattr(ex, "message", None) or str(ex)
    text = re.sub(r"\{\{.*?\}\}|\[Op:[^\]]*\].*", "", text.splitlines()[0] if text else "")
    return text.strip() or type(ex).__name__


# ---------------------------------------------------------------- what is written


def misclassified_title(predicted: str, true: str) -> str:
    """``7/1``; names longer than digits on two lines, ``Shirt/`` over ``T-shirt/top``."""
    return f"{predicted}/{true}" if len(predicted) + len(true) <= 4 else f"{predicted}/\n{true}"


def write_pr_curves(labels: np.ndarray, probabilities: np.ndarray, names: tuple[str, ...]) -> None:
    """One precision-recall curve a class, ``class/<i>/pr_curves``: each threshold on its
    predicted probability, as one class against the others."""
    step = tf.summary.experimental.get_step()
    for index, name in enumerate(names):
        summary = pr_curve_summary.pb(
            f"class/{index}",  # one section of the PR Curves tab, a card a class
            labels == index,
            probabilities[:, index],
            display_name=f"{index}: {name}" if name != str(index) else name,
            description=f"Validation precision against recall of class {name}, one point per "
            "threshold on its predicted probability.",
        )
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)


def write_histogram(tag: str, values: tf.Tensor, buckets: int = 30) -> None:
    """What ``tf.summary.histogram`` writes (``buckets`` rows of left edge, right edge, count).

    TensorBoard's own op counts with an (n, buckets) float64 one-hot, which for the CNN's
    3136x1024 dense kernel is hundreds of MB at each evaluation. One native op counts in place
    here, and the edges are computed on the host, whatever the size of the weight.
    """
    values = tf.reshape(values, [-1])
    low, high = float(tf.reduce_min(values)), float(tf.reduce_max(values))
    high = high if high > low else low + 1.0  # a constant tensor still gets a finite range
    counts = tf.histogram_fixed_width(values, [low, high], nbins=buckets).numpy()
    edges = np.linspace(low, high, buckets + 1)
    table = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
    metadata = histogram_metadata.create_summary_metadata(display_name=tag, description="")
    tf.summary.write(tag, table, metadata=metadata.SerializeToString())


def forward_graph(model: keras.Model) -> tf.Graph:
    """The graph of one inference pass on a batch of raw images, for the Graphs dashboard."""
    spec = tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype, name="images")
    forward = tf.function(lambda images: model(images, training=False))
    return forward.get_concrete_function(spec).graph


def model_summary(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    return "\n".join(lines)


def code_block(text: str) -> str:
    # TensorBoard renders text as Markdown: a fenced block keeps the columns aligned.
    return f"```\n{text.rstrip()}\n```"


def weight_templates(
    model: keras.Model, class_names: tuple[str, ...]
) -> list[tuple[str, np.ndarray, list[str]]]:
    """(layer, images, titles) for each layer that looks at the pixels directly.

    A dense layer on the flattened image has one 28x28 template per unit (per class for the
    softmax's logits: the tutorials' "cheat sheet"); a convolution on the image has one small
    filter per output channel. Only the first ``TEMPLATE_UNITS`` units are shown.
    """
    pixels = int(np.prod(model.input_shape[1:]))
    height, width = model.input_shape[1:3]
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and layer.kernel.shape[0] == pixels:
            images = keras.ops.convert_to_numpy(layer.kernel).T.reshape(-1, height, width)
        elif isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[2] == 1:
            images = np.moveaxis(keras.ops.convert_to_numpy(layer.kernel)[:, :, 0, :], -1, 0)
        else:
            continue
        images = images[:TEMPLATE_UNITS]
        if len(images) == len(class_names):
            titles = list(class_names)
        else:
            unit = "filter" if isinstance(layer, keras.layers.Conv2D) else "unit"
            titles = [f"{unit} {i}" for i in range(len(images))]
        found.append((layer.name, images, titles))
    return found


def write_stop(stop: dict[str, Any]) -> None:
    """Where and why training ended, as scalars the HParams table shows beside each run."""
    tf.summary.scalar("stop/step", stop["step"], description="The last step trained.")
    tf.summary.scalar("stop/best_step", stop["best_step"], description="Whose weights are shown.")
    tf.summary.scalar(
        "stop/early",
        float(stop["reason"] != "steps"),
        description=f"1 when a stopping rule ended the run early (here: {stop['reason']}).",
    )
    target = stop.get("target")
    if target and target["reached"]:
        tf.summary.scalar(
            "stop/target_training_seconds",
            target["training_seconds"],
            description=f"Training seconds to validation precision {target['precision']}.",
        )
