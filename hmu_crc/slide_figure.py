"""The picture of a slide map: the slide's thumbnail beside its tiles coloured by predicted class, with a legend.

Built on `matplotlib.figure.Figure` and saved through Agg, never `pyplot`, as in `hmu_crc.figures`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from hmu_crc.figures import DPI
from hmu_crc.labels import CLASS_DESCRIPTIONS, CLASS_NAMES

logger = logging.getLogger(__name__)

CLASS_COLORS = MappingProxyType(
    {
        "ADI": "#f0d35b",  # fat: pale yellow
        "DEB": "#8c5a3c",  # debris and necrosis: brown
        "LYM": "#253494",  # lymphocytes: dark blue
        "MUC": "#7fcdee",  # mucus: light blue
        "MUS": "#d7301f",  # smooth muscle: red
        "NORM": "#31a354",  # normal mucosa: green
        "STR": "#fd8d3c",  # stroma: orange
        "TUM": "#8e2c9e",  # tumour epithelium: purple
    }
)
"""The one colour of each tissue class in every slide map; glass is left white."""

PANEL_INCHES = 5.0
"""Longer side of each of the two panels."""

LEGEND_INCHES = 3.8
"""Width of the legend's column, right of the panels."""


def class_map_rgba(classes: np.ndarray) -> np.ndarray:
    """(rows, columns, 4) float RGBA of a grid of class ids, -1 (no tissue) fully transparent."""
    palette = np.array([to_rgba(CLASS_COLORS[name]) for name in CLASS_NAMES] + [(1.0, 1.0, 1.0, 0.0)])
    return palette[np.where(classes < 0, len(CLASS_NAMES), classes)]


def write_slide_figure(
    path: Path,
    thumbnail: np.ndarray,
    classes: np.ndarray,
    tile_size: int,
    dimensions: tuple[int, int],
    counts: Mapping[str, int],
    title: str,
) -> Path:
    """Write the thumbnail and the coloured map side by side, in level-0 coordinates, as a PNG.

    Args:
        path: The PNG to write.
        thumbnail: (height, width, 3) uint8 RGB of the whole slide.
        classes: (rows, columns) class ids of the grid's tiles, -1 where no tissue was classified.
        tile_size: Side of a grid tile in level-0 pixels.
        dimensions: Level-0 width and height of the slide.
        counts: Tiles predicted per class, for the legend.
        title: The figure's title.

    Returns:
        The path written.
    """
    width, height = dimensions
    rows, columns = classes.shape
    # NOTE: panels are placed by hand: a constrained layout costs about as much as drawing the whole figure.
    panel_width = PANEL_INCHES * min(1.0, width / height)
    panel_height = PANEL_INCHES * min(1.0, height / width)
    margin, gap, top = 0.2, 0.25, 0.65
    figure_width = margin + 2 * panel_width + gap + LEGEND_INCHES
    figure_height = max(panel_height + margin + top, 2.6)
    figure = Figure(figsize=(figure_width, figure_height))
    boxes = [(margin, panel_width), (margin + panel_width + gap, panel_width)]
    left, right = (
        figure.add_axes((x / figure_width, margin / figure_height, w / figure_width, panel_height / figure_height))
        for x, w in boxes
    )
    shown = _fit(thumbnail, (round(panel_width * DPI), round(panel_height * DPI)))
    left.imshow(shown, extent=(0, width, height, 0), interpolation="nearest")
    left.set_title("slide", fontsize=9)
    right.imshow(
        class_map_rgba(classes), extent=(0, columns * tile_size, rows * tile_size, 0), interpolation="nearest"
    )
    total = sum(counts.values())
    right.set_title(f"tissue map: {total:,} tiles of {tile_size} level-0 px", fontsize=9)
    for axes in (left, right):
        axes.set_xlim(0, width)
        axes.set_ylim(height, 0)
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_color("#999999")
    handles = [
        Patch(
            facecolor=CLASS_COLORS[name],
            label=f"{name} {CLASS_DESCRIPTIONS[name]}: {counts.get(name, 0) / max(total, 1):.1%}",
        )
        for name in CLASS_NAMES
    ]
    legend_x = (margin + 2 * panel_width + gap + 0.1) / figure_width
    figure.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(legend_x, 1 - top / figure_height),
        fontsize=7,
        frameon=False,
        title="share of tissue tiles",
        title_fontsize=8,
    )
    figure.suptitle(title, fontsize=9, y=1 - 0.15 / figure_height, va="top")
    figure.savefig(path, format="png", dpi=DPI, facecolor="white")
    figure.clear()
    logger.debug("wrote %s", path)
    return path


def _fit(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image shrunk to fit `size` (width, height), or as it is when it already fits: matplotlib then only
    copies pixels instead of resampling a large thumbnail."""
    height, width = pixels.shape[:2]
    scale = min(size[0] / width, size[1] / height)
    if scale >= 1:
        return pixels
    shrunk = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(shrunk, Image.Resampling.BOX))
