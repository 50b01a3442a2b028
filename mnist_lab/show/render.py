"""Figures as images, drawn with matplotlib: grids of small images with their titles, the
confusion matrix. Each is one (1, h, w, 4) uint8 RGBA array, what ``tf.summary.image`` takes;
writing them is ``summaries.py``'s. matplotlib is imported on first use: it costs start-up time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Images per grid: enough to see a pattern, small enough to stay a few hundred KB.
GRID_IMAGES = 40
DPI = 80  # an inch of figure is 80 pixels: a 28x28 image shows at about 2.5x


def render_grid(
    images: np.ndarray, titles: list[str], columns: int = 10, diverging: bool = False
) -> np.ndarray:
    """A grid of small images, each with its title, as one (1, h, w, 4) uint8 RGBA image.

    The images are tiled into one array shown by one ``imshow``: a figure of 40 subplots
    takes seconds to lay out, one image a tenth of that.
    """
    from matplotlib.figure import Figure  # lazily: matplotlib costs start-up time

    n = len(images)
    columns = max(min(columns, n), 1)
    rows = max(-(-n // columns), 1)
    height, width = images.shape[1:3] if n else (28, 28)
    band, gap = -(-height // 4), -(-width // 10)  # a title band above each image, a gap beside
    cell_h, cell_w = height + band, width + gap
    tiles = np.full((rows * cell_h, columns * cell_w), np.nan)  # NaN: transparent, white
    if diverging and n:
        # Each template scaled to [-1, 1]: zero sits at the colormap's white middle.
        limits = np.abs(images).reshape(n, -1).max(axis=1, initial=0)
        images = images / np.where(limits > 0, limits, 1)[:, None, None]
    for i, image in enumerate(images):
        top, left = (i // columns) * cell_h + band, (i % columns) * cell_w
        tiles[top : top + height, left : left + width] = image
    fig = Figure(figsize=(columns, rows * cell_h / cell_w), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    cmap, limits = ("RdBu_r", (-1, 1)) if diverging else ("gray_r", (0, 255))
    ax.imshow(tiles, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
    for i, title in enumerate(titles[:n]):
        x = (i % columns) * cell_w + width / 2
        y = (i // columns) * cell_h + band / 2
        ax.text(x, y, title, ha="center", va="center", fontsize=8)
    if not n:
        # An empty grid still says why it is empty (a perfect score, say).
        ax.text(width / 2, cell_h / 2, "none", ha="center", va="center")
    return _to_image(fig)


def render_confusion(
    labels: np.ndarray, predicted: np.ndarray, names: tuple[str, ...]
) -> np.ndarray:
    """The confusion matrix (rows: true class, columns: predicted), counts in the cells, as
    one (1, h, w, 4) uint8 RGBA image."""
    from matplotlib.figure import Figure

    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    fig = Figure(figsize=(7, 6.5), dpi=DPI)
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    dark = counts.max() / 2
    for (row, col), count in np.ndenumerate(counts):
        color = "white" if count > dark else "black"
        ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    return _to_image(fig)


def _to_image(fig: Any) -> np.ndarray:
    # A bare Figure on an Agg canvas: no pyplot, no GUI backend, no global figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[np.newaxis]
