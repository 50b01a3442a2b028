"""Figures as images, drawn with matplotlib: grids of small images with their titles, the
confusion matrix. Each is one (1, h, w, 4) uint8 RGBA array, what ``tf.summary.image`` takes;
writing them is ``summaries.py``'s. matplotlib is imported on first use: it costs start-up time.

Every image is drawn exactly ``CARD_WIDTH`` pixels wide: TensorBoard's Images tab shows each
image in a card of that width, scaled with ``image-rendering: pixelated``, so a wider image
loses rows and columns of pixels (and its letters) and a narrower one is blown up blocky. At
that width, one pixel of the image is one pixel on the screen, letters at ``FONT_PX``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Images per grid: enough to see a pattern, small enough to stay a few hundred KB.
GRID_IMAGES = 40
CARD_WIDTH = 350  # pixels: TensorBoard's image card (tf-image-loader's width)
DPI = 100
FONT_PX = 11  # the smallest text that stays easy to read on a screen
GAP = 4  # pixels around each image of a grid


def _points(pixels: float) -> float:
    return pixels * 72 / DPI


def text_width(text: str, pixels: float = FONT_PX) -> float:
    """The width in pixels of the widest line of ``text``, drawn at ``pixels``."""
    from matplotlib.textpath import TextPath  # lazily: matplotlib costs start-up time

    lines = text.split("\n") or [""]
    return max(TextPath((0, 0), line, size=pixels).get_extents().width for line in lines)


def render_grid(
    images: np.ndarray, titles: list[str], columns: int = 10, diverging: bool = False
) -> np.ndarray:
    """A grid of small images, each with its title above it (lines split at ``\\n``), as one
    (1, h, w, 4) uint8 RGBA image ``CARD_WIDTH`` wide.

    As many columns as asked for, fewer where the longest title would not fit above its
    image; each image is enlarged by the largest whole factor that fits its column. The images
    are tiled into one array shown by one ``imshow``: a figure of 40 subplots takes seconds to
    lay out, one image a tenth of that.
    """
    from matplotlib.figure import Figure

    n = len(images)
    titles = list(titles[:n])
    height, width = images.shape[1:3] if n else (28, 28)
    widest = max((text_width(title) for title in titles), default=0.0)
    columns = max(min(columns, n), 1)
    while columns > 1 and widest + GAP > CARD_WIDTH / columns:
        columns -= 1
    rows = max(-(-n // columns), 1)
    cell_w = CARD_WIDTH / columns
    scale = max(int((cell_w - 2 * GAP) // width), 1)
    lines = max((title.count("\n") + 1 for title in titles), default=1)
    band = int(lines * FONT_PX * 1.2) + GAP  # the title band above each image
    cell_h = band + height * scale + GAP
    tiles = np.full((rows * cell_h, CARD_WIDTH), np.nan)  # NaN: transparent, white
    if diverging and n:
        # Each template scaled to [-1, 1]: zero sits at the colormap's white middle.
        limits = np.abs(images).reshape(n, -1).max(axis=1, initial=0)
        images = images / np.where(limits > 0, limits, 1)[:, None, None]
    for i, image in enumerate(images):
        top = (i // columns) * cell_h + band
        left = int((i % columns) * cell_w + (cell_w - width * scale) / 2)
        big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
        tiles[top : top + height * scale, left : left + width * scale] = big
    fig = Figure(figsize=(CARD_WIDTH / DPI, rows * cell_h / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    cmap, limits = ("RdBu_r", (-1, 1)) if diverging else ("gray_r", (0, 255))
    # One array element per pixel of the figure: nothing is resampled.
    ax.imshow(tiles, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
    for i, title in enumerate(titles):
        x = (i % columns + 0.5) * cell_w
        y = (i // columns) * cell_h + band / 2
        ax.text(x, y, title, ha="center", va="center", fontsize=_points(FONT_PX))
    if not n:
        # An empty grid still says why it is empty (a perfect score, say).
        ax.text(CARD_WIDTH / 2, cell_h / 2, "none", ha="center", va="center")
    return _to_image(fig)


def render_confusion(
    labels: np.ndarray, predicted: np.ndarray, names: tuple[str, ...]
) -> np.ndarray:
    """The confusion matrix (rows: true class, columns: predicted), counts in the cells, as
    one (1, h, w, 4) uint8 RGBA image ``CARD_WIDTH`` wide."""
    from matplotlib.figure import Figure

    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    label_px = max(text_width(name, FONT_PX) for name in names)
    # The matrix takes what the tick labels leave; the rotated x labels need their height.
    fig = Figure(figsize=(CARD_WIDTH / DPI, (CARD_WIDTH + 0.5 * label_px) / DPI), dpi=DPI)
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    ticks = np.arange(len(names))
    font = _points(FONT_PX)
    ax.set_xticks(ticks, names, rotation=45 if label_px > FONT_PX else 0, ha="right", fontsize=font)
    ax.set_yticks(ticks, names, fontsize=font)
    ax.tick_params(length=2, pad=2)
    ax.set_xlabel("predicted", fontsize=font, labelpad=2)
    ax.set_ylabel("true", fontsize=font, labelpad=2)
    fig.tight_layout(pad=0.3)
    # The counts as large as a cell allows: the widest count fills at most 90% of a cell.
    position = ax.get_position()
    cell_px = min(position.width * CARD_WIDTH, position.height * fig.bbox.height) / len(names)
    widest = text_width(str(counts.max()), FONT_PX)
    count_px = min(FONT_PX, FONT_PX * 0.9 * cell_px / widest)
    dark = counts.max() / 2
    for (row, col), count in np.ndenumerate(counts):
        color = "white" if count > dark else "black"
        ax.text(col, row, str(count), ha="center", va="center", fontsize=_points(count_px),
                color=color)  # fmt: skip
    return _to_image(fig)


def _to_image(fig: Any) -> np.ndarray:
    # A bare Figure on an Agg canvas: no pyplot, no GUI backend, no global figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[np.newaxis]
