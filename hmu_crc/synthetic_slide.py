"""Small SYNTHETIC whole-slide images for tests, demos and benchmarks: a layout of `render_tile` tiles of known
classes on glass, written as a tiled pyramidal TIFF that OpenSlide or tifffile reads like a scanner's."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
from PIL import Image

from hmu_crc.labels import CLASS_NAMES, KATHER_BACKGROUND
from hmu_crc.sample import TILE_SIZE, render_tile

logger = logging.getLogger(__name__)

Layout = Sequence[Sequence[str | None]]
"""Rows of class codes, one per 224 px tile; None is glass."""


def render_layout(layout: Layout, rng: np.random.Generator, scale: int = 1) -> np.ndarray:
    """Draw a layout as one RGB image: each cell a `render_tile` tile of its class (Kather's BACK for glass),
    enlarged `scale` times, as if scanned at 0.5/scale µm/px.

    Raises:
        ValueError: If a code is not one of the eight classes, or the rows differ in length.
    """
    columns = {len(row) for row in layout}
    if len(columns) != 1:
        raise ValueError(f"layout: expected rows of equal length, found lengths {sorted(columns)}")
    side = TILE_SIZE * scale
    image = np.empty((len(layout) * side, columns.pop() * side, 3), dtype=np.uint8)
    for r, row in enumerate(layout):
        for c, code in enumerate(row):
            if code is not None and code not in CLASS_NAMES:
                msg = f"layout[{r}][{c}]: expected one of {', '.join(CLASS_NAMES)} or None, found {code!r}"
                raise ValueError(msg)
            tile = render_tile(KATHER_BACKGROUND if code is None else code, rng)
            if scale != 1:
                tile = np.asarray(Image.fromarray(tile).resize((side, side), Image.Resampling.BICUBIC))
            image[r * side : (r + 1) * side, c * side : (c + 1) * side] = tile
    return image


def region_layout(rows: int, columns: int, rng: np.random.Generator, regions: int = 8) -> list[list[str | None]]:
    """A slide-like layout: an oval of tissue on glass, cut into `regions` patches, each of one class (distinct
    classes while there are enough): each tile takes the class of the nearest of `regions` random centres, so that
    classes form areas rather than a checkerboard.

    Raises:
        ValueError: If the grid is smaller than 2 x 2 or `regions` is not positive.
    """
    if rows < 2 or columns < 2 or regions < 1:
        msg = f"layout: expected at least 2 x 2 tiles and 1 region, found {rows} x {columns} and {regions}"
        raise ValueError(msg)
    centres = rng.uniform((0, 0), (rows, columns), size=(regions, 2))
    classes = rng.choice(CLASS_NAMES, size=regions, replace=regions > len(CLASS_NAMES))  # distinct when they can be
    grid = np.stack(np.mgrid[0:rows, 0:columns], axis=-1) + 0.5  # tile centres, (rows, columns, 2)
    nearest = np.linalg.norm(grid[:, :, None, :] - centres, axis=-1).argmin(axis=-1)
    # Tissue inside an oval that leaves a margin of glass; its edge is roughened tile by tile.
    radius = np.hypot((grid[..., 0] - rows / 2) / (rows / 2), (grid[..., 1] - columns / 2) / (columns / 2))
    tissue = radius + rng.uniform(-0.12, 0.12, size=radius.shape) < 0.9
    return [[str(classes[nearest[r, c]]) if tissue[r, c] else None for c in range(columns)] for r in range(rows)]


def write_pyramid_tiff(
    path: str | Path,
    pixels: np.ndarray,
    mpp: float | None,
    *,
    layout: Literal["pages", "subifds", "svs"] = "pages",
    unit: Literal["centimeter", "micrometer"] = "centimeter",
    tile: int = 256,
    smallest: int = 256,
    compression: Literal["zlib", "none"] = "zlib",
) -> Path:
    """Write an RGB image as a tiled pyramidal TIFF with levels halving down to `smallest` px.

    Args:
        path: The file to write.
        pixels: (height, width, 3) uint8 level 0.
        mpp: Microns per level-0 pixel, or None for a slide that does not say.
        layout: `pages` chains the reduced levels after level 0 (a generic TIFF that OpenSlide and tifffile both
            read); `subifds` puts them in SubIFDs of level 0 (OpenSlide sees only level 0); `svs` chains them with
            Aperio's image descriptions, which carry the mpp, so that OpenSlide reads the file as an SVS (real SVS
            tiles are JPEG, which tifffile writes only with the `imagecodecs` package).
        unit: The resolution tags' unit (`pages` and `subifds`); OpenSlide understands centimetres, not tifffile's
            micrometres.
        tile: Side of the TIFF tiles.
        smallest: Levels stop once their longer side is at most this.
        compression: Deflate (`zlib`), or none to take decoding out of benchmarks.

    Returns:
        The path written.
    """
    levels = [pixels]
    while max(levels[-1].shape[:2]) > smallest:
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(2)))
    height, width = pixels.shape[:2]
    options = {"tile": (tile, tile), "compression": None if compression == "none" else compression}
    options |= {"photometric": "rgb", "metadata": None}
    with tifffile.TiffWriter(path) as writer:
        for index, level in enumerate(levels):
            extra: dict[str, object] = {}
            if layout == "svs":
                size = f"{width}x{height}" + (f" -> {level.shape[1]}x{level.shape[0]}" if index else "")
                extra["description"] = f"Aperio Image Library v12.0.0\r\n{size} (synthetic)|AppMag = 20" + (
                    f"|MPP = {mpp}" if mpp is not None else ""
                )
            elif mpp is not None:
                per_unit = (1e4 if unit == "centimeter" else 1.0) / (mpp * 2**index)
                extra |= {"resolution": (per_unit, per_unit), "resolutionunit": unit.upper()}
            if layout == "subifds" and index == 0:
                extra["subifds"] = len(levels) - 1
            elif index:
                extra["subfiletype"] = 1
            writer.write(level, **options, **extra)
    logger.debug("wrote %s: %d levels, level 0 %s", path, len(levels), pixels.shape)
    return Path(path)


SAMPLE_MPP = 0.5
"""Microns per pixel of the sample slide: the training scale, as a 20x Aperio AT2 scans."""


@dataclass(frozen=True)
class SampleSlide:
    """What `write_sample_slide` wrote."""

    slide: Path
    layout_file: Path
    """`<slide stem>_layout.json`: the class planted in each 224 px tile, the truth to hold a slide map against."""
    counts: dict[str, int]
    """Tiles planted per class; glass tiles are not counted."""
    glass_tiles: int


def write_sample_slide(
    path: str | Path, rows: int = 12, columns: int = 16, seed: int = 0, regions: int = 8
) -> SampleSlide:
    """Write a SYNTHETIC whole slide: a `region_layout` of `render_tile` tiles at 0.5 µm/px, as a tiled pyramidal
    TIFF, and beside it the layout as JSON.

    Raises:
        ValueError: If the path does not end in .tif or .tiff, the file or its layout file exists, or the grid
            is too small.
    """
    path = Path(path)
    layout_file = path.with_name(f"{path.stem}_layout.json")
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{path}: expected a file name ending in .tif or .tiff, found {path.suffix or 'none'}")
    for existing in (path, layout_file):
        if existing.exists():
            raise ValueError(f"{existing}: expected a new file, found one; pass another path or remove it")
    rng = np.random.default_rng(seed)
    layout = region_layout(rows, columns, rng, regions)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pyramid_tiff(path, render_layout(layout, rng), SAMPLE_MPP)
    planted = Counter(code for row in layout for code in row if code is not None)
    counts = {name: planted.get(name, 0) for name in CLASS_NAMES}
    glass = rows * columns - sum(counts.values())
    record = {
        "synthetic": True,
        "note": "Drawn by `hmu-crc sample-slide`: every pixel is generated, none comes from a patient.",
        "slide": path.name,
        "mpp": SAMPLE_MPP,
        "tile_size": TILE_SIZE,
        "seed": seed,
        "tile_counts": counts,
        "glass_tiles": glass,
        "layout": layout,
    }
    layout_file.write_text(json.dumps(record, indent=1) + "\n")
    logger.info("wrote the synthetic slide %s (%d x %d tiles, %d of glass)", path, rows, columns, glass)
    return SampleSlide(path, layout_file, counts, glass)
