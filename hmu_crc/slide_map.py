"""Whole-slide tissue maps: every tissue tile of a slide classified at the training scale, streamed to Parquet,
summed into class fractions, and drawn beside the slide.

Memory stays flat whatever the slide's size: the tissue mask lives on a thumbnail, tiles are read a few batches
ahead in threads while the model runs, and predictions go to disk a row group at a time. Only the grid of
predicted class ids (one byte a tile) is kept whole, for the picture.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hmu_crc.composition import SLIDE_FOLDER_SUFFIX as OUTPUT_SUFFIX
from hmu_crc.composition import SLIDE_PREDICTIONS_NAME as PREDICTIONS_NAME
from hmu_crc.composition import SLIDE_REPORT_NAME as FRACTIONS_NAME
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.predict import load_classifier, predict_batch
from hmu_crc.sample import TILE_SIZE
from hmu_crc.slide_figure import write_slide_figure
from hmu_crc.slides import Slide, SlideError, open_slide
from hmu_crc.tissue import DEFAULT_TISSUE_THRESHOLD, TileGrid, Tissue, find_tissue
from hmu_crc.transforms import PixelPreprocessor

logger = logging.getLogger(__name__)

TRAINING_MPP = 0.5
"""Microns per pixel of the 224 px tiles the classifiers were trained on (Aperio AT2 at 20x)."""

FIGURE_NAME = "slide_map.png"

ROWS_PER_GROUP = 8192
"""Predictions buffered before they are written as one Parquet row group."""

MIN_TILE_PIXELS = 16
"""Smallest tile side, in level-0 pixels, that `--mpp` may ask for on a slide."""

PREDICTION_SCHEMA = pa.schema(
    [
        ("column", pa.int32()),
        ("row", pa.int32()),
        ("x", pa.int64()),
        ("y", pa.int64()),
        ("tile_size", pa.int32()),
        ("tissue_fraction", pa.float32()),
        ("predicted", pa.string()),
        *((f"prob_{name}", pa.float32()) for name in CLASS_NAMES),
    ]
)
"""One row per classified tile: grid column and row, level-0 top-left corner and side, the thumbnail's tissue
fraction of the tile, the predicted class and the probability of each class."""

Classifier = tuple[PreTrainedModel, PixelPreprocessor]


@dataclass
class SlideMapSummary:
    """What `map_slide` found and wrote."""

    output_dir: Path
    tissue_tiles: int
    grid_tiles: int
    counts: dict[str, int]
    fractions: dict[str, float]
    tissue_area_mm2: float | None
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Scale:
    """How the slide's pixels become model tiles."""

    slide_mpp: float | None
    mpp_source: Literal["metadata", "--slide-mpp"] | None
    tile_size: int
    """Side of a tile in level-0 pixels."""
    tile_mpp: float | None
    """Microns per pixel of the 224 px tiles handed to the model."""


def map_slide(
    slide_path: str | Path,
    model_id: str | Path,
    output_dir: str | Path,
    *,
    mpp: float | Literal["native"] = TRAINING_MPP,
    slide_mpp: float | None = None,
    tissue_threshold: float = DEFAULT_TISSUE_THRESHOLD,
    saturation_threshold: float | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    classifier: Classifier | None = None,
) -> SlideMapSummary:
    """Classify every tissue tile of a whole-slide image and write `tile_predictions.parquet`,
    `class_fractions.json` and `slide_map.png` into `output_dir`.

    Args:
        slide_path: An SVS or other slide OpenSlide opens, or a tiled pyramidal TIFF.
        model_id: A folder written by train_hf.py, or a Hub model id.
        output_dir: Folder for the three outputs; created if missing, files in it replaced.
        mpp: Microns per pixel of the 224 px tiles (the training scale by default), or `native` for 224 px tiles of
            level 0 as they are.
        slide_mpp: The slide's microns per level-0 pixel, overriding (or standing in for) its metadata.
        tissue_threshold: Smallest tissue fraction of a tile that is classified.
        saturation_threshold: Saturation from which a thumbnail pixel is tissue (default: found per slide).
        batch_size: Tiles per forward pass.
        num_workers: Threads reading tiles while the model runs (0 reads in this thread).
        classifier: A model and preprocessor already loaded from `model_id`, to skip loading it again.

    Returns:
        Tile counts, class fractions, tissue area, and the paths written.

    Raises:
        FileNotFoundError: If the slide does not exist.
        SlideError: For a file that is not a slide, a slide without mpp when `mpp` is a number, or one without
            tissue.
        ValueError: For arguments out of range, or a model whose labels are not the eight tissue classes.
    """
    _check_arguments(mpp, slide_mpp, tissue_threshold, saturation_threshold, batch_size, num_workers)
    output_dir = Path(output_dir)
    with open_slide(slide_path) as slide:
        scale = _scale(slide, mpp, slide_mpp)
        tissue = find_tissue(slide, scale.tile_size, TILE_SIZE, tissue_threshold, saturation_threshold)
        model, preprocessor = classifier or load_classifier(model_id)
        output_dir.mkdir(parents=True, exist_ok=True)
        predictions = output_dir / PREDICTIONS_NAME
        metadata = {"slide": str(slide.path), "model": str(model_id), "tile_size": scale.tile_size}
        classes = _classify(slide, tissue, model, preprocessor, predictions, metadata, batch_size, num_workers)
    counts = {name: int((classes == i).sum()) for i, name in enumerate(CLASS_NAMES)}
    kept = len(tissue.cells)
    mm2 = (scale.slide_mpp / 1000) ** 2 if scale.slide_mpp else None
    summary = SlideMapSummary(
        output_dir=output_dir,
        tissue_tiles=kept,
        grid_tiles=tissue.fractions.size,
        counts=counts,
        fractions={name: count / kept for name, count in counts.items()},
        tissue_area_mm2=float(tissue.mask.sum() * tissue.downsample**2 * mm2) if mm2 else None,
        outputs={"predictions": predictions, "fractions": output_dir / FRACTIONS_NAME},
    )
    report = _report(slide, model_id, mpp, scale, tissue, tissue_threshold, summary, mm2)
    summary.outputs["fractions"].write_text(json.dumps(report, indent=2) + "\n")
    title = f"{slide.path.name}: {kept:,} tissue tiles at {_mpp_words(scale)}, model {model_id}"
    summary.outputs["figure"] = write_slide_figure(
        output_dir / FIGURE_NAME, tissue.thumbnail, classes, scale.tile_size, slide.dimensions, counts, title
    )
    logger.info("slide map of %s written to %s", slide.path.name, output_dir)
    return summary


def default_output_dir(slide_path: str | Path) -> Path:
    """Where `hmu-crc slide-map` writes without `--output-dir`: `<slide stem>_map` in the working folder."""
    return Path(f"{Path(slide_path).stem}{OUTPUT_SUFFIX}")


def _check_arguments(
    mpp: float | str,
    slide_mpp: float | None,
    tissue_threshold: float,
    saturation_threshold: float | None,
    batch_size: int,
    num_workers: int,
) -> None:
    problems = []
    if mpp != "native" and not (isinstance(mpp, int | float) and mpp > 0):
        problems.append(f"mpp: expected a positive number of microns per pixel or 'native', found {mpp!r}")
    if slide_mpp is not None and not slide_mpp > 0:
        problems.append(f"slide mpp: expected a positive number of microns per pixel, found {slide_mpp}")
    if not 0 < tissue_threshold <= 1:
        problems.append(f"tissue threshold: expected a fraction in (0, 1], found {tissue_threshold}")
    if saturation_threshold is not None and not 0 < saturation_threshold < 1:
        problems.append(f"saturation threshold: expected a value in (0, 1), found {saturation_threshold}")
    if batch_size < 1:
        problems.append(f"batch size: expected at least 1, found {batch_size}")
    if num_workers < 0:
        problems.append(f"workers: expected 0 or more, found {num_workers}")
    if problems:
        raise ValueError("; ".join(problems) + "; fix the argument(s) and run again")


def _scale(slide: Slide, mpp: float | Literal["native"], slide_mpp: float | None) -> Scale:
    """The slide's mpp and the level-0 side of a tile, or a clear error when the scale cannot be known."""
    source = "--slide-mpp" if slide_mpp else ("metadata" if slide.mpp else None)
    if slide_mpp and slide.mpp and abs(slide_mpp - slide.mpp) > 0.01 * slide.mpp:
        logger.warning(
            "%s: using --slide-mpp %.4g instead of the %.4g µm/px in its metadata", slide.path, slide_mpp, slide.mpp
        )
    known = slide_mpp or slide.mpp
    if mpp == "native":
        if known and abs(known - TRAINING_MPP) > 0.1 * TRAINING_MPP:
            logger.warning(
                "%s is scanned at %.3g µm/px and --mpp native keeps that scale; the model was trained at %.2g µm/px",
                slide.path,
                known,
                TRAINING_MPP,
            )
        return Scale(known, source, TILE_SIZE, known)
    if known is None:
        msg = (
            f"{slide.path}: expected the slide's microns per pixel in its metadata to take tiles at {mpp} µm/px, "
            "found none; pass the scanner's resolution with --slide-mpp (0.25 at 40x, 0.5 at 20x on an Aperio AT2), "
            "or --mpp native to classify 224 px tiles of level 0 as they are"
        )
        raise SlideError(msg)
    tile_size = round(TILE_SIZE * mpp / known)
    if tile_size < MIN_TILE_PIXELS:
        msg = (
            f"{slide.path}: tiles at {mpp} µm/px would be {tile_size} level-0 px on a slide of {known:.4g} µm/px, "
            f"expected at least {MIN_TILE_PIXELS}; check --mpp and --slide-mpp"
        )
        raise SlideError(msg)
    if abs(mpp - TRAINING_MPP) > 0.1 * TRAINING_MPP:
        logger.warning("tiles at %.3g µm/px; the model was trained at %.2g µm/px", mpp, TRAINING_MPP)
    return Scale(known, source, tile_size, tile_size * known / TILE_SIZE)


def _classify(
    slide: Slide,
    tissue: Tissue,
    model: PreTrainedModel,
    preprocessor: PixelPreprocessor,
    path: Path,
    metadata: dict[str, Any],
    batch_size: int,
    num_workers: int,
) -> np.ndarray:
    """Predict every kept tile, streaming rows to Parquet; returns the grid of class ids, -1 where nothing was
    classified."""
    grid = tissue.grid
    classes = np.full((grid.rows, grid.columns), -1, dtype=np.int8)
    schema = PREDICTION_SCHEMA.with_metadata({"hmu_crc": json.dumps(metadata)})
    buffer: list[pa.RecordBatch] = []
    buffered = 0
    with (
        pq.ParquetWriter(path, schema) as writer,
        tqdm(total=len(tissue.cells), desc=f"mapping {slide.path.name}", unit="tile") as bar,
    ):
        for batch, pixels in read_batches(slide, grid, tissue.cells, batch_size, num_workers):
            probabilities = predict_batch(model, preprocessor, pixels)
            predicted = probabilities.argmax(axis=1)
            classes[batch[:, 0], batch[:, 1]] = predicted
            buffer.append(_record_batch(batch, grid, tissue.fractions, predicted, probabilities, schema))
            buffered += len(batch)
            if buffered >= ROWS_PER_GROUP:
                writer.write_table(pa.Table.from_batches(buffer, schema))
                buffer, buffered = [], 0
            bar.update(len(batch))
        if buffer:
            writer.write_table(pa.Table.from_batches(buffer, schema))
    return classes


def read_batches(
    slide: Slide, grid: TileGrid, cells: np.ndarray, batch_size: int, num_workers: int
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """The tiles of `cells` in batches, read by `num_workers` threads up to two batches ahead of the consumer.

    Yields:
        Each batch's (row, column) cells and its (224, 224, 3) uint8 tiles.
    """
    batches = (cells[start : start + batch_size] for start in range(0, len(cells), batch_size))
    if num_workers == 0:
        for batch in batches:
            yield batch, [grid.read(slide, row, column) for row, column in batch]
        return
    pending: deque[tuple[np.ndarray, list[Future[np.ndarray]]]] = deque()
    with ThreadPoolExecutor(num_workers, thread_name_prefix="slide-read") as pool:
        try:
            for batch in batches:
                pending.append((batch, [pool.submit(grid.read, slide, row, column) for row, column in batch]))
                if len(pending) > 2:
                    done, futures = pending.popleft()
                    yield done, [future.result() for future in futures]
            while pending:
                done, futures = pending.popleft()
                yield done, [future.result() for future in futures]
        finally:
            for _, futures in pending:  # on an error or an early stop, drop the reads not yet started
                for future in futures:
                    future.cancel()


def _record_batch(
    cells: np.ndarray,
    grid: TileGrid,
    tissue: np.ndarray,
    predicted: np.ndarray,
    probabilities: np.ndarray,
    schema: pa.Schema,
) -> pa.RecordBatch:
    rows, columns = cells[:, 0], cells[:, 1]
    names = np.asarray(CLASS_NAMES, dtype=object)[predicted]
    arrays = [
        pa.array(columns, pa.int32()),
        pa.array(rows, pa.int32()),
        pa.array(columns.astype(np.int64) * grid.tile_size),
        pa.array(rows.astype(np.int64) * grid.tile_size),
        pa.array(np.full(len(cells), grid.tile_size, dtype=np.int32)),
        pa.array(tissue[rows, columns].astype(np.float32)),
        pa.array(names, pa.string()),
        *(pa.array(probabilities[:, i].astype(np.float32)) for i in range(len(CLASS_NAMES))),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _report(
    slide: Slide,
    model_id: str | Path,
    mpp: float | str,
    scale: Scale,
    tissue: Tissue,
    tissue_threshold: float,
    summary: SlideMapSummary,
    mm2: float | None,
) -> dict[str, Any]:
    """`class_fractions.json`: the fractions and counts, and everything needed to repeat the run."""
    grid = tissue.grid
    tile_mm2 = grid.tile_size**2 * mm2 if mm2 else None
    return {
        "slide": str(slide.path),
        "model": str(model_id),
        "reader": slide.backend,
        "slide_dimensions": list(slide.dimensions),
        "slide_mpp": scale.slide_mpp,
        "slide_mpp_source": scale.mpp_source,
        "mpp": mpp,
        "tile_mpp": scale.tile_mpp,
        "tile_size": TILE_SIZE,
        "tile_size_level0": grid.tile_size,
        "level": grid.level,
        "level_downsample": slide.levels[grid.level].downsample,
        "tissue_threshold": tissue_threshold,
        "saturation_threshold": round(tissue.saturation_threshold, 4),
        "grid": {"columns": grid.columns, "rows": grid.rows},
        "tiles": {
            "grid": summary.grid_tiles,
            "tissue": summary.tissue_tiles,
            "background": summary.grid_tiles - summary.tissue_tiles,
        },
        "tile_counts": summary.counts,
        "class_fractions": {name: round(value, 6) for name, value in summary.fractions.items()},
        "tissue_area_mm2": _round(summary.tissue_area_mm2),
        "tissue_tile_area_mm2": _round(tile_mm2 * summary.tissue_tiles if tile_mm2 else None),
        "class_area_mm2": {name: _round(tile_mm2 * n) for name, n in summary.counts.items()} if tile_mm2 else None,
        "notes": {
            "class_fractions": "share of the tissue tiles predicted as each class; background tiles are left out",
            "tissue_area_mm2": "area of the thumbnail's tissue mask",
            "tissue_tile_area_mm2": "area of the tiles classified (tissue fraction >= tissue_threshold)",
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _mpp_words(scale: Scale) -> str:
    return f"{scale.tile_mpp:.3g} µm/px" if scale.tile_mpp else "native scale"
