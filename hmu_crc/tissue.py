"""Where the tissue is: a slide's thumbnail, a saturation mask over it, and the grid of tiles laid on the slide.

H&E-stained tissue is coloured and glass is grey-white, so a thumbnail pixel is tissue when its HSV saturation
reaches a threshold (see `saturation_threshold`). A closing then joins the thin pink walls of adipose tissue, whose
fat cells look as empty as glass, and a tile is kept when its tissue fraction reaches the tile threshold. Coloured
pen marks pass for tissue: keep them off the slide or crop them out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from hmu_crc.slides import Slide, SlideError

logger = logging.getLogger(__name__)

DEFAULT_TISSUE_THRESHOLD = 0.25
"""Tissue fraction from which a tile is classified. A quarter keeps tiles at the edge of the tissue, where a
pathologist still reads the tissue type, and leaves out tiles of glass with a few specks or a ragged edge."""

MIN_SATURATION = 0.05
"""Lowest saturation threshold: clean glass stays below about 0.04 on a thumbnail, the walls of fat cells reach
0.05 to 0.08, and the other tissues 0.08 and more."""

GLASS_MARGIN = 0.03
"""How far above the glass's typical saturation the threshold may go, at most."""

GLASS_BIN = 0.005
"""Width of the histogram bins in which the glass's typical saturation is found."""

THUMBNAIL_PIXELS_PER_TILE = 16
"""Thumbnail pixels along a tile's side, when the thumbnail stays within `THUMBNAIL_MAX_SIDE`."""

THUMBNAIL_MAX_SIDE = 4096
"""Longest side of the thumbnail the mask is computed on, in pixels; larger slides get fewer pixels a tile."""

READ_CHUNK = 2048
"""Longest side, in pixels of the level read, of one region read while building the thumbnail."""


@dataclass(frozen=True)
class TileGrid:
    """Non-overlapping square tiles over a slide, from its top-left corner; the last row and column may stick out
    past the slide's edge, where the reader gives white."""

    tile_size: int
    """Side of a tile in level-0 pixels."""
    columns: int
    rows: int
    level: int
    """The pyramid level tiles are read from."""
    read_size: int
    """Side of a tile in pixels of `level`; resized to `output_size` when it differs."""
    output_size: int
    """Side of the tiles handed to the model."""

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """Level-0 (x, y) of a tile's top-left corner."""
        return column * self.tile_size, row * self.tile_size

    def read(self, slide: Slide, row: int, column: int) -> np.ndarray:
        """A tile as the model wants it: (output_size, output_size, 3) uint8."""
        x, y = self.origin(row, column)
        pixels = slide.read_region(x, y, self.level, self.read_size, self.read_size)
        if self.read_size == self.output_size:
            return pixels
        image = Image.fromarray(pixels).resize((self.output_size, self.output_size), Image.Resampling.BILINEAR)
        return np.asarray(image)


def tile_grid(slide: Slide, tile_size: int, output_size: int) -> TileGrid:
    """The grid of `tile_size` level-0 px tiles, read from the smallest level that has `output_size` px or more
    per tile."""
    width, height = slide.dimensions
    level = slide.best_level(tile_size / output_size)
    read_size = max(1, round(tile_size / slide.levels[level].downsample))
    return TileGrid(
        tile_size, math.ceil(width / tile_size), math.ceil(height / tile_size), level, read_size, output_size
    )


def thumbnail_downsample(slide: Slide, grid: TileGrid) -> float:
    """Level-0 pixels per thumbnail pixel: `THUMBNAIL_PIXELS_PER_TILE` a tile, or fewer on a large slide."""
    return max(grid.tile_size / THUMBNAIL_PIXELS_PER_TILE, max(slide.dimensions) / THUMBNAIL_MAX_SIDE, 1.0)


def read_thumbnail(slide: Slide, downsample: float) -> np.ndarray:
    """The whole slide at one pixel per `downsample` level-0 pixels, read chunk by chunk from the best level, so
    that memory holds the thumbnail and one chunk, never a whole level."""
    width, height = slide.dimensions
    thumb_width, thumb_height = math.ceil(width / downsample), math.ceil(height / downsample)
    level = slide.best_level(downsample)
    scale = slide.levels[level].downsample
    if level == 0 and len(slide.levels) == 1 and downsample >= 4:
        logger.warning("%s has no pyramid: the thumbnail is read from full resolution, which is slow", slide.path)
    step = max(1, int(READ_CHUNK * scale / downsample))  # thumbnail pixels per chunk side
    thumbnail = np.empty((thumb_height, thumb_width, 3), dtype=np.uint8)
    for top, left, chunk_height, chunk_width in _chunks(thumb_height, thumb_width, step):
        region = slide.read_region(
            round(left * downsample),
            round(top * downsample),
            level,
            max(1, round(chunk_width * downsample / scale)),
            max(1, round(chunk_height * downsample / scale)),
        )
        resized = Image.fromarray(region).resize((chunk_width, chunk_height), Image.Resampling.BOX)
        thumbnail[top : top + chunk_height, left : left + chunk_width] = np.asarray(resized)
    return thumbnail


def _chunks(height: int, width: int, step: int) -> Iterator[tuple[int, int, int, int]]:
    for top in range(0, height, step):
        for left in range(0, width, step):
            yield top, left, min(step, height - top), min(step, width - left)


def saturation(pixels: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of (..., 3) uint8 RGB: (max - min) / max, 0 for black."""
    high = pixels.max(axis=-1).astype(np.float32)
    low = pixels.min(axis=-1).astype(np.float32)
    return np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]: the cut between histogram bins with the largest between-class
    variance."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def saturation_threshold(values: np.ndarray) -> float:
    """The saturation from which a thumbnail pixel is tissue.

    Otsu's split of the saturations, lowered to the glass's level plus `GLASS_MARGIN`, and never under
    `MIN_SATURATION`. The glass's level is the most common saturation below Otsu's split (the white of fat cells
    shares it); pale tissue below the split does not move it, as it would move a mean or a median. Otsu alone splits
    whatever it is given in two and lands well inside pale tissues such as fat and mucus; the floor keeps a slide of
    nothing but glass from splitting its noise into glass and "tissue".
    """
    otsu = otsu_threshold(values)
    bins = max(1, math.ceil(otsu / GLASS_BIN))
    counts, edges = np.histogram(values, bins=bins, range=(0.0, bins * GLASS_BIN))
    glass = float(edges[int(np.argmax(counts))] + GLASS_BIN / 2)
    return max(MIN_SATURATION, min(otsu, glass + GLASS_MARGIN))


def tissue_mask(
    thumbnail: np.ndarray, pixels_per_tile: float, threshold: float | None = None
) -> tuple[np.ndarray, float]:
    """Tissue pixels of a thumbnail, and the saturation threshold used.

    Args:
        thumbnail: (height, width, 3) uint8 RGB.
        pixels_per_tile: Thumbnail pixels along a tile's side; the closing reaches a quarter of a tile.
        threshold: A saturation threshold in (0, 1) to use instead of `saturation_threshold`'s.

    Returns:
        A boolean mask of the thumbnail's shape, and the threshold.
    """
    values = saturation(thumbnail)
    if threshold is None:
        threshold = saturation_threshold(values)
    mask = values >= threshold
    reach = max(1, round(pixels_per_tile / 4))
    disk = np.hypot(*np.mgrid[-reach : reach + 1, -reach : reach + 1]) <= reach
    # Pad with the edge so that tissue cut by the slide's border is not eaten by the closing's erosion.
    padded = np.pad(mask, reach, mode="edge")
    mask = ndimage.binary_closing(padded, structure=disk)[reach:-reach, reach:-reach]
    return mask, float(threshold)


def tile_tissue_fractions(mask: np.ndarray, downsample: float, grid: TileGrid) -> np.ndarray:
    """The fraction of each grid tile that the mask calls tissue, (rows, columns) float in [0, 1]; the part of a
    tile past the slide's edge counts as glass."""
    per_column = _sum_by_tile(mask, downsample, grid.tile_size, grid.columns, axis=1)
    counts = _sum_by_tile(per_column, downsample, grid.tile_size, grid.rows, axis=0)
    return np.minimum(counts / (grid.tile_size / downsample) ** 2, 1.0)


def _sum_by_tile(values: np.ndarray, downsample: float, tile_size: int, tiles: int, axis: int) -> np.ndarray:
    """Sum thumbnail pixels along `axis` into the tiles their centres fall in, without a full-size index array."""
    centres = (np.arange(values.shape[axis]) + 0.5) * downsample
    owner = np.minimum(centres // tile_size, tiles - 1).astype(np.int64)
    starts = np.flatnonzero(np.diff(owner, prepend=-1))  # owners only grow, so each tile's pixels are contiguous
    sums = np.add.reduceat(values, starts, axis=axis, dtype=np.int64)
    shape = list(values.shape)
    shape[axis] = tiles
    out = np.zeros(shape, dtype=np.int64)
    index: list[slice | np.ndarray] = [slice(None)] * values.ndim
    index[axis] = owner[starts]
    out[tuple(index)] = sums
    return out


@dataclass(frozen=True)
class Tissue:
    """What `find_tissue` found on a slide."""

    grid: TileGrid
    thumbnail: np.ndarray
    """The whole slide, (height, width, 3) uint8 RGB at `downsample`."""
    downsample: float
    """Level-0 pixels per thumbnail pixel."""
    mask: np.ndarray
    """Tissue pixels of the thumbnail."""
    saturation_threshold: float
    fractions: np.ndarray
    """(rows, columns) tissue fraction of each grid tile."""
    cells: np.ndarray
    """(n, 2) row and column of the tiles kept, row by row."""


def find_tissue(
    slide: Slide,
    tile_size: int,
    output_size: int,
    tissue_threshold: float = DEFAULT_TISSUE_THRESHOLD,
    saturation: float | None = None,
) -> Tissue:
    """Lay the grid of `tile_size` level-0 px tiles over a slide and keep those with enough tissue.

    Args:
        slide: The open slide.
        tile_size: Side of a tile in level-0 pixels.
        output_size: Side of the tiles handed to the model.
        tissue_threshold: Smallest tissue fraction of a tile kept.
        saturation: A saturation threshold to use instead of `saturation_threshold`'s.

    Raises:
        SlideError: If no tile holds enough tissue.
    """
    grid = tile_grid(slide, tile_size, output_size)
    downsample = thumbnail_downsample(slide, grid)
    thumbnail = read_thumbnail(slide, downsample)
    mask, threshold = tissue_mask(thumbnail, grid.tile_size / downsample, saturation)
    fractions = tile_tissue_fractions(mask, downsample, grid)
    cells = np.argwhere(fractions >= tissue_threshold)
    if len(cells) == 0:
        msg = (
            f"{slide.path}: expected tissue, found none: no tile of {grid.tile_size} level-0 px reaches a tissue "
            f"fraction of {tissue_threshold} (largest {fractions.max():.2f}, saturation threshold {threshold:.3f}); "
            "check the slide is not blank, or lower --tissue-threshold or --saturation-threshold"
        )
        raise SlideError(msg)
    logger.info(
        "%s: %d of %d tiles hold tissue (grid %d x %d of %d level-0 px, read from level %d at %d px)",
        slide.path.name,
        len(cells),
        fractions.size,
        grid.columns,
        grid.rows,
        grid.tile_size,
        grid.level,
        grid.read_size,
    )
    return Tissue(grid, thumbnail, downsample, mask, threshold, fractions, cells)
