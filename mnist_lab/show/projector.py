"""TensorBoard's embedding projector: where the model puts each validation image.

At the end of a run (``trainer.embeddings``), the first ``trainer.embeddings_size`` validation
images are written into ``tensorboard/validation/``, where TensorBoard's projector plugin finds
them with no extra step (``tensorboard --logdir`` of the run or of its sweep):

``embeddings-<step>.index``, ``.data-*`` and ``checkpoint``
    A checkpoint of two tensors, one row an image: the activations of the layer before the
    logits (``dense`` for the CNN, the last hidden layer for the MLP; absent for softmax,
    whose logits read the pixels) and ``pixels``, the image as the model sees it, in [0, 1].
``projector_config.pbtxt``
    Which tensors, and for each its metadata and sprite (``tensorboard.plugins.projector``).
``metadata.tsv``
    A header, then each image's true class, predicted class and whether they agree.
``sprite.png``
    The images in one square grid, 28x28 each, so each point shows its picture.

The checkpoint sits in a sub-run's folder, not in ``tensorboard/`` itself: the plugin looks
for a checkpoint in each run's folder and in its parent, so one in ``tensorboard/`` would be
listed again under ``train`` and ``validation``. Writing again (a rerun that completes the
run's end) replaces the same files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tensorboard.plugins import projector

from mnist_lab.core.backend import keras, tf
from mnist_lab.core.errors import UserError
from mnist_lab.show.summaries import op_error_text

FOLDER = "validation"  # the TensorBoard run the projector is listed under
CHECKPOINT = "embeddings"
METADATA = "metadata.tsv"
SPRITE = "sprite.png"
PIXELS = "pixels"
METADATA_HEADER = ("label", "predicted", "correct", "index")


def embedding_model(model: keras.Model) -> keras.Model | None:
    """A sub-model from the images to the layer whose output the logits read; None when that
    is the pixels themselves (softmax regression).

    Dropout, an identity at inference, is skipped: the layer it wraps names the tensor.
    """
    layers = model.layers
    index = [layer.name for layer in layers].index("logits") - 1
    while index > 0 and isinstance(layers[index], keras.layers.Dropout):
        index -= 1
    source = layers[index]
    sub = keras.Model(model.input, source.output, name=source.name)
    return sub if sub.trainable_weights else None


def activations(sub: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """``sub``'s output for ``images``, a float32 row each, one batch at a time."""
    # Traced once for every batch size: half the time of eager calls, tracing included.
    spec = tf.TensorSpec((None, *images.shape[1:]), sub.inputs[0].dtype)
    forward = tf.function(lambda batch: sub(batch, training=False), input_signature=[spec])
    rows = [
        forward(images[start : start + batch_size]).numpy()
        for start in range(0, len(images), batch_size)
    ]
    flat = np.concatenate(rows).reshape(len(images), -1)
    return flat.astype(np.float32)  # bfloat16 or float16 under mixed precision


def sprite(images: np.ndarray) -> np.ndarray:
    """The images in a square grid, row by row, dark ink on white like the other images."""
    n, height, width = images.shape
    side = max(math.ceil(math.sqrt(n)), 1)
    grid = np.full((side * height, side * width), 255, np.uint8)
    for i, image in enumerate(images):
        top, left = (i // side) * height, (i % side) * width
        grid[top : top + height, left : left + width] = 255 - image
    return grid


def metadata(labels: np.ndarray, predicted: np.ndarray, class_names: tuple[str, ...]) -> str:
    """The TSV the projector labels and colours points by, a header first."""
    lines = ["\t".join(METADATA_HEADER)]
    for i, (label, guess) in enumerate(zip(labels, predicted, strict=True)):
        correct = "yes" if label == guess else "no"
        lines.append(f"{class_names[label]}\t{class_names[guess]}\t{correct}\t{i}")
    return "\n".join(lines) + "\n"


def write_projector(
    log_dir: Path,
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: tuple[str, ...],
    step: int,
    batch_size: int,
) -> Path:
    """Write the projector's files for ``images`` into ``log_dir/FOLDER``; that folder.
    A full disk or a vanished folder is one UserError."""
    folder = Path(log_dir) / FOLDER
    try:
        _write(folder, model, (images, labels, predicted), class_names, step, batch_size)
    except (OSError, tf.errors.OpError) as ex:
        raise UserError(
            f"cannot write the embedding projector in {folder}: {op_error_text(ex)}; "
            "or turn it off with trainer.embeddings=false"
        ) from ex
    return folder


def _write(
    folder: Path,
    model: keras.Model,
    examples: tuple[np.ndarray, np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    step: int,
    batch_size: int,
) -> None:
    """The body of ``write_projector``; ``examples`` is (images, labels, predicted)."""
    images, labels, predicted = examples
    folder.mkdir(parents=True, exist_ok=True)
    _, height, width = images.shape
    tensors = {PIXELS: images.reshape(len(images), -1).astype(np.float32) / 255}
    sub = embedding_model(model)
    if sub is not None:
        tensors = {sub.name: activations(sub, images, batch_size), **tensors}

    (folder / METADATA).write_text(metadata(labels, predicted, class_names))
    # Fast compression: a tenth of a second less for a sprite a tenth larger.
    png = tf.io.encode_png(sprite(images)[..., np.newaxis], compression=1).numpy()
    (folder / SPRITE).write_bytes(png)
    variables = {name: tf.Variable(value, trainable=False) for name, value in tensors.items()}
    checkpoint = tf.train.Checkpoint(**variables)
    # One checkpoint, named by the step whose weights it shows; an older one is deleted.
    manager = tf.train.CheckpointManager(
        checkpoint, folder, max_to_keep=1, checkpoint_name=CHECKPOINT
    )
    manager.save(checkpoint_number=step)

    config = projector.ProjectorConfig()
    for name in tensors:
        embedding = config.embeddings.add()
        embedding.tensor_name = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
        embedding.metadata_path = METADATA  # relative: resolved beside the config file
        embedding.sprite.image_path = SPRITE
        embedding.sprite.single_image_dim.extend([width, height])
    projector.visualize_embeddings(str(folder), config)
