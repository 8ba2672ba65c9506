"""Whole-slide images behind one small interface (`Slide`): OpenSlide for the scanners' formats, tifffile for
generic tiled pyramidal TIFFs.

What each reader was found to do with the TIFFs tifffile writes (OpenSlide 4.0.1, tifffile 2026.3):

- levels as a chain of top-level pages (`subfiletype=1` on the reduced ones): both read the whole pyramid;
- levels in SubIFDs of the first page: OpenSlide sees only level 0, tifffile all of them;
- `resolutionunit` centimetre or inch: both give the mpp; millimetre or micrometre (tifffile's extensions of the
  TIFF standard): OpenSlide gives none, so the mpp is read from the tags here;
- deflate tiles: tifffile reads a 224 px region in about half OpenSlide's time, since it decodes straight into RGB;
  JPEG tiles need the `imagecodecs` package, which is not a dependency, so such TIFFs go to OpenSlide;
- strips instead of tiles, and any PNG or JPEG: OpenSlide refuses them, and so do we (see `SlideError`), rather
  than hold a whole image in memory.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np
import openslide
import tifffile
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

MPP_RANGE = (0.05, 20.0)
"""Microns per pixel accepted from file metadata; outside it a tag is taken for a screen resolution (72 dpi is
353 µm/px) and ignored."""

TIFF_CACHE_BYTES = 64 * 2**20
"""Decoded TIFF tiles kept by `TiffSlide` so that neighbouring regions do not decode a tile twice."""

Reader = Literal["auto", "openslide", "tifffile"]

_MICRONS_PER_UNIT = {
    tifffile.RESUNIT.INCH: 25400.0,
    tifffile.RESUNIT.CENTIMETER: 10000.0,
    tifffile.RESUNIT.MILLIMETER: 1000.0,
    tifffile.RESUNIT.MICROMETER: 1.0,
}


class SlideError(ValueError):
    """A file that is not a whole-slide image we can read, or a slide that cannot be mapped."""


@dataclass(frozen=True)
class Level:
    """One level of a slide's pyramid."""

    width: int
    height: int
    downsample: float
    """Level-0 pixels per pixel of this level."""


class Slide(ABC):
    """A whole-slide image: its pyramid levels, its resolution, and RGB regions read on demand.

    Regions never hold more than they are asked for, so a slide of any size reads in flat memory. Reading is
    safe from several threads at once.
    """

    backend = ""
    """Which library reads the pixels: `openslide` or `tifffile`."""

    def __init__(self, path: Path, levels: list[Level], mpp: float | None) -> None:
        self.path = path
        self.levels = tuple(levels)
        self.mpp = mpp
        """Microns per level-0 pixel from the file's metadata, or None when it has none."""

    @property
    def dimensions(self) -> tuple[int, int]:
        """Width and height of level 0."""
        return self.levels[0].width, self.levels[0].height

    def best_level(self, downsample: float) -> int:
        """The smallest level that still has at least one pixel per `downsample` level-0 pixels."""
        fitting = [i for i, level in enumerate(self.levels) if level.downsample <= downsample * (1 + 1e-3)]
        return max(fitting, key=lambda i: self.levels[i].downsample) if fitting else 0

    @abstractmethod
    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """An (height, width, 3) uint8 RGB region of `level` whose top-left corner is level-0 pixel (x, y).

        Whatever lies outside the image or is transparent reads as white, like glass.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        width, height = self.dimensions
        mpp = f"{self.mpp:.4g} µm/px" if self.mpp else "mpp unknown"
        return f"{type(self).__name__}({self.path.name}: {width}x{height}, {len(self.levels)} levels, {mpp})"


class OpenSlideSlide(Slide):
    """A slide read by OpenSlide: SVS, NDPI, MRXS, generic tiled TIFF and the rest of its formats."""

    backend = "openslide"

    def __init__(self, path: Path, handle: openslide.OpenSlide, mpp: float | None) -> None:
        levels = [
            Level(width, height, float(downsample))
            for (width, height), downsample in zip(handle.level_dimensions, handle.level_downsamples, strict=True)
        ]
        super().__init__(path, levels, mpp)
        self._handle = handle

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        return _over_white(np.asarray(self._handle.read_region((x, y), level, (width, height))))

    def close(self) -> None:
        self._handle.close()


class TiffSlide(Slide):
    """A tiled pyramidal TIFF read tile by tile with tifffile: only the tiles a region touches are decoded."""

    backend = "tifffile"

    def __init__(self, path: Path, tiff: tifffile.TiffFile, pages: list[tifffile.TiffPage], mpp: float | None):
        width, height = pages[0].imagewidth, pages[0].imagelength
        levels = [
            Level(page.imagewidth, page.imagelength, (width / page.imagewidth + height / page.imagelength) / 2)
            for page in pages
        ]
        super().__init__(path, levels, mpp)
        self._tiff = tiff
        self._pages = pages
        self._file_lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._cache_lock = threading.Lock()

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        page, scale = self._pages[level], self.levels[level].downsample
        left, top = round(x / scale), round(y / scale)
        region = np.full((height, width, 3), 255, dtype=np.uint8)
        tile_width, tile_height = page.tilewidth, page.tilelength
        across = -(-page.imagewidth // tile_width)
        right, bottom = min(left + width, page.imagewidth), min(top + height, page.imagelength)
        for row in range(max(top, 0) // tile_height, -(-bottom // tile_height)):
            for column in range(max(left, 0) // tile_width, -(-right // tile_width)):
                tile = self._tile(level, row * across + column)
                tile_x, tile_y = column * tile_width, row * tile_height
                # The overlap of this tile and the region, in the level's pixels.
                x0, x1 = max(left, tile_x), min(right, tile_x + tile_width)
                y0, y1 = max(top, tile_y), min(bottom, tile_y + tile_height)
                region[y0 - top : y1 - top, x0 - left : x1 - left] = tile[
                    y0 - tile_y : y1 - tile_y, x0 - tile_x : x1 - tile_x
                ]
        return region

    def _tile(self, level: int, index: int) -> np.ndarray:
        key = (level, index)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        page = self._pages[level]
        offset, size = page.dataoffsets[index], page.databytecounts[index]
        if size == 0:  # a tile never written: sparse pyramids leave out empty glass
            tile = np.full((page.tilelength, page.tilewidth, 3), 255, dtype=np.uint8)
        else:
            with self._file_lock:
                self._tiff.filehandle.seek(offset)
                data = self._tiff.filehandle.read(size)
            segment = page.decode(data, index)[0]  # (1, tile height, tile width, samples)
            tile = _over_white(segment[0])
        with self._cache_lock:
            if key not in self._cache:  # another thread may have decoded it meanwhile
                self._cache[key] = tile
                self._cache_bytes += tile.nbytes
            while self._cache_bytes > TIFF_CACHE_BYTES and len(self._cache) > 1:
                self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes
        return tile

    def close(self) -> None:
        self._tiff.close()


def open_slide(path: str | Path, reader: Reader = "auto") -> Slide:
    """Open a whole-slide image.

    Args:
        path: The slide file.
        reader: `auto` reads generic tiled TIFFs with tifffile when it can decode their tiles, and everything else
            (SVS, NDPI, MRXS, ... and JPEG-compressed generic TIFFs) with OpenSlide; `openslide` or `tifffile`
            insists on one.

    Raises:
        FileNotFoundError: If there is no such file.
        SlideError: If the reader(s) cannot open it: a text file, a PNG or JPEG, a TIFF in strips rather than tiles.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such slide file; pass the path of a whole-slide image (SVS, tiled pyramidal TIFF, ...)"
        raise FileNotFoundError(msg)
    handle = None
    if reader != "tifffile":
        try:
            handle = openslide.OpenSlide(path)
        except openslide.OpenSlideUnsupportedFormatError:
            pass
        except openslide.OpenSlideError as error:
            msg = f"{path}: OpenSlide knows the format but cannot read the file ({error}); check it is complete"
            raise SlideError(msg) from error
    vendor = handle.properties.get(openslide.PROPERTY_NAME_VENDOR) if handle else None
    generic = handle is None or vendor == "generic-tiff"
    tiff = _readable_tiff(path) if reader == "tifffile" or (reader == "auto" and generic) else None
    if tiff is not None:
        if handle is not None:
            handle.close()
        slide: Slide = TiffSlide(path, *tiff, _tiff_mpp(tiff[1][0]))
    elif handle is not None:
        slide = OpenSlideSlide(path, handle, _openslide_mpp(handle) or _tiff_file_mpp(path, vendor))
    else:
        raise SlideError(_not_a_slide(path, reader))
    logger.info("opened %r with %s", slide, slide.backend)
    return slide


def _over_white(pixels: np.ndarray) -> np.ndarray:
    """RGB from RGB or RGBA (not premultiplied): transparent parts become white."""
    if pixels.shape[2] == 3:
        return pixels
    alpha = pixels[..., 3:]
    if alpha.min() == 255:
        return pixels[..., :3]
    # NOTE: an RGBA image packs four bytes a pixel; compositing in uint16 keeps this exact and cheap.
    rgb = pixels[..., :3].astype(np.uint16)
    return ((rgb * alpha + 255 * (255 - alpha.astype(np.uint16)) + 127) // 255).astype(np.uint8)


def _openslide_mpp(handle: openslide.OpenSlide) -> float | None:
    values = [handle.properties.get(name) for name in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)]
    try:
        mpp_x, mpp_y = (float(value) for value in values)
    except (TypeError, ValueError):
        return None
    return _plausible_mpp(mpp_x, mpp_y, "OpenSlide's mpp-x/mpp-y")


def _tiff_mpp(page: tifffile.TiffPage) -> float | None:
    """Microns per pixel from a TIFF page's resolution tags, in any unit tifffile writes."""
    unit = page.tags.get("ResolutionUnit")
    factor = _MICRONS_PER_UNIT.get(unit.value) if unit is not None else None
    x_tag, y_tag = page.tags.get("XResolution"), page.tags.get("YResolution")
    if factor is None or x_tag is None or y_tag is None:
        return None
    try:
        (x_num, x_den), (y_num, y_den) = x_tag.value, y_tag.value
        mpp_x, mpp_y = factor * x_den / x_num, factor * y_den / y_num
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return _plausible_mpp(mpp_x, mpp_y, f"TIFF resolution tags ({tifffile.RESUNIT(unit.value).name.lower()})")


def _tiff_file_mpp(path: Path, vendor: str | None) -> float | None:
    """The first page's mpp of a generic TIFF, where OpenSlide found none (it knows inches and centimetres only)."""
    if vendor != "generic-tiff":
        return None
    try:
        with tifffile.TiffFile(path) as tiff:
            return _tiff_mpp(tiff.pages.first)
    except (tifffile.TiffFileError, OSError, ValueError):
        return None


def _plausible_mpp(mpp_x: float, mpp_y: float, source: str) -> float | None:
    low, high = MPP_RANGE
    if not (low <= mpp_x <= high and low <= mpp_y <= high):
        logger.warning("ignoring %s of %.4g x %.4g µm/px: not a microscope's resolution", source, mpp_x, mpp_y)
        return None
    if abs(mpp_x - mpp_y) > 0.01 * max(mpp_x, mpp_y):
        logger.warning("%s differ (%.4g and %.4g µm/px); using their mean", source, mpp_x, mpp_y)
    return (mpp_x + mpp_y) / 2


def _readable_tiff(path: Path) -> tuple[tifffile.TiffFile, list[tifffile.TiffPage]] | None:
    """The file's pyramid as tifffile sees it, when every level is tiled 8-bit RGB(A) that it can decode."""
    try:
        tiff = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError):
        return None
    try:
        series = tiff.series[0]
        pages = [level.keyframe for level in series.levels]
        if all(_tiles_we_read(page) for page in pages):
            page = pages[-1]
            index = int(np.argmax(page.databytecounts))
            tiff.filehandle.seek(page.dataoffsets[index])
            page.decode(tiff.filehandle.read(page.databytecounts[index]), index)  # the codec is there
            return tiff, pages
        logger.debug("%s: tifffile sees levels it does not read tile by tile", path)
    except (
        tifffile.TiffFileError,
        ValueError,
        NotImplementedError,
        ImportError,
        IndexError,
        KeyError,
        RuntimeError,
    ) as error:
        logger.debug("%s: tifffile cannot read it tile by tile (%s)", path, error)
    tiff.close()
    return None


def _tiles_we_read(page: tifffile.TiffPage) -> bool:
    return (
        page.is_tiled
        and page.imagedepth == 1
        and page.dtype == np.uint8
        and page.photometric == tifffile.PHOTOMETRIC.RGB
        and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
        and page.samplesperpixel in (3, 4)
    )


def _not_a_slide(path: Path, reader: Reader) -> str:
    """Why `path` is refused, in words a user can act on."""
    if reader != "auto":
        return f"{path}: {reader} cannot read this file as a tiled slide; open it with reader='auto'"
    try:
        with Image.open(path) as image:
            found = f"a {image.width}x{image.height} {image.format} image, not a tiled, pyramidal slide"
    except (UnidentifiedImageError, OSError):
        found = "a file that neither OpenSlide nor tifffile reads as an image"
    return (
        f"{path}: expected a whole-slide image (SVS or another format OpenSlide opens, or a tiled pyramidal TIFF "
        f"of 8-bit RGB), found {found}. To classify single tiles use `hmu-crc predict`; to map a large plain image, "
        "convert it to a tiled pyramidal TIFF first (e.g. `vips tiffsave IN OUT.tif --tile --pyramid "
        "--compression deflate`)"
    )
