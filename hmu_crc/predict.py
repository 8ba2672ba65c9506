"""Classifying tile files with a trained model: the same decoding and normalisation as evaluation, into a CSV."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel

from hmu_crc.evaluation import check_labels, softmax
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.training import processor_geometry
from hmu_crc.transforms import PixelPreprocessor, decode_tile

logger = logging.getLogger(__name__)

TILE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
"""File endings read as tiles, in any case; other files in a folder are passed over."""
COLUMNS = ("file", "predicted", *(f"prob_{name}" for name in CLASS_NAMES))
"""The CSV's header: the words of `<set>_predictions.csv` from evaluation, without the true label."""
DECODE_ERRORS = (OSError, ValueError, RuntimeError, SyntaxError)
"""What Pillow and libspng raise for a file that is not a readable image."""


@dataclass
class PredictionSummary:
    """What `predict_tiles` wrote."""

    output: Path
    predicted: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Unreadable files left out with `skip_invalid`, with the reason."""
    skipped_list: Path | None = None
    """The CSV listing them, beside `output`, when there are any."""


def find_tiles(paths: Sequence[str | Path]) -> list[Path]:
    """Tile files named directly, and the tiles found in named folders at any depth, in a stable order.

    Raises:
        FileNotFoundError: If a path does not exist.
        ValueError: If a file named directly is not a tile, or nothing at all is found.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TILE_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in TILE_SUFFIXES:
                msg = f"{path}: expected a tile ending in one of {', '.join(TILE_SUFFIXES)}; pass tiles or folders"
                raise ValueError(msg)
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder; pass tile files or folders of tiles")
    if not found:
        msg = f"no tiles ({', '.join(TILE_SUFFIXES)}) found in {', '.join(map(str, paths))}; check the paths"
        raise ValueError(msg)
    return found


class TileFiles(torch.utils.data.Dataset):
    """Tile files decoded to uint8 arrays in DataLoader workers; an unreadable file yields its error instead."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, decode_tile(self.files[index].read_bytes()), None
        except DECODE_ERRORS as error:
            return index, None, f"{type(error).__name__}: {error}"


def tile_loader(files: Sequence[Path], batch_size: int, num_workers: int | None) -> torch.utils.data.DataLoader:
    """Batches of `TileFiles` items, as lists, decoded in `num_workers` processes (default: up to 8 cores; 0 decodes
    in this one)."""
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    return torch.utils.data.DataLoader(TileFiles(files), batch_size=batch_size, num_workers=workers, collate_fn=list)


@torch.inference_mode()
def predict_batch(model: PreTrainedModel, preprocessor: PixelPreprocessor, arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Class probabilities (float64, rows sum to 1) for (H, W, 3) uint8 tiles, normalised as in evaluation."""
    device = model.device
    tensors = [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1) for a in arrays]
    if len({t.shape for t in tensors}) == 1:
        pixels = preprocessor(torch.stack(tensors).to(device), train=False)
    else:  # tiles of different sizes: each is resized to the model's size on its own
        pixels = torch.cat([preprocessor(t[None].to(device), train=False) for t in tensors])
    logits = model(pixel_values=pixels).logits
    return softmax(logits.float().cpu().numpy().astype(np.float64))


def load_classifier(model_id: str | Path) -> tuple[PreTrainedModel, PixelPreprocessor]:
    """A tissue classifier (folder or Hub id) in eval mode on the GPU when there is one, with its normalisation.

    Raises:
        ValueError: If the model's labels are not the eight tissue classes in their order.
    """
    model = AutoModelForImageClassification.from_pretrained(str(model_id))
    check_labels(model)
    mean, std, size = processor_geometry(AutoImageProcessor.from_pretrained(str(model_id)), None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), PixelPreprocessor(mean, std, size)


def predict_tiles(
    model_id: str | Path,
    paths: Sequence[str | Path],
    output: str | Path,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    skip_invalid: bool = False,
) -> PredictionSummary:
    """Classify tile files and folders of tiles into a CSV of `COLUMNS`, one row per readable tile.

    Args:
        model_id: A folder written by train_hf.py, or a Hub model id.
        paths: Tile files (PNG, TIFF, JPEG) and folders searched at any depth.
        output: The CSV to write.
        batch_size: Tiles per forward pass.
        num_workers: Processes decoding tiles (default: up to 8 of the machine's cores; 0 decodes in this one).
        skip_invalid: Leave unreadable files out and list them in `<output>_skipped.csv`, instead of stopping.

    Returns:
        How many tiles were classified, and which were skipped.

    Raises:
        ValueError: For a model with other labels, or an unreadable tile without `skip_invalid`.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, found {batch_size}")
    files = find_tiles(paths)
    model, preprocessor = load_classifier(model_id)
    loader = tile_loader(files, batch_size, num_workers)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    summary = PredictionSummary(output, 0)
    with open(output, "w", newline="") as handle, tqdm(total=len(files), desc="predicting", unit="tile") as bar:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for rows, read in _predicted_rows(loader, files, model, preprocessor, summary, skip_invalid):
            writer.writerows(rows)
            bar.update(read)
    if summary.skipped:
        summary.skipped_list = _write_skipped(output, summary.skipped)
        logger.warning(
            "%d unreadable file(s) left out, e.g. %s; all listed in %s",
            len(summary.skipped),
            summary.skipped[0][0],
            summary.skipped_list,
        )
    logger.info("classified %d tile(s) into %s", summary.predicted, output)
    return summary


def _predicted_rows(
    loader: torch.utils.data.DataLoader,
    files: list[Path],
    model: PreTrainedModel,
    preprocessor: PixelPreprocessor,
    summary: PredictionSummary,
    skip_invalid: bool,
) -> Iterator[tuple[list[list[object]], int]]:
    """Per batch: the CSV rows of its readable tiles, and how many files it read."""
    for batch in loader:
        good = readable_tiles(batch, files, summary.skipped, skip_invalid)
        if not good:
            yield [], len(batch)
            continue
        probabilities = predict_batch(model, preprocessor, [pixels for _, pixels in good])
        summary.predicted += len(good)
        rows = [
            [str(files[index]), CLASS_NAMES[int(row.argmax())], *(f"{p:.6f}" for p in row)]
            for (index, _), row in zip(good, probabilities, strict=True)
        ]
        yield rows, len(batch)


def readable_tiles(
    batch: Iterable[tuple[int, np.ndarray | None, str | None]],
    files: Sequence[Path],
    skipped: list[tuple[Path, str]],
    skip_invalid: bool,
) -> list[tuple[int, np.ndarray]]:
    """The decoded tiles of a `TileFiles` batch as (index, pixels); an unreadable one stops the run with a clear
    error or, with `skip_invalid`, is appended to `skipped` with its reason."""
    readable = []
    for index, pixels, error in batch:
        if error is None:
            readable.append((index, pixels))
        elif skip_invalid:
            skipped.append((files[index], error))
        else:
            msg = (
                f"{files[index]}: expected a PNG, TIFF or JPEG tile that decodes to RGB, found an unreadable "
                f"file ({error}); replace or remove it, or pass --skip-invalid to list it and go on"
            )
            raise ValueError(msg)
    return readable


def _write_skipped(output: Path, skipped: list[tuple[Path, str]]) -> Path:
    path = output.with_name(f"{output.stem}_skipped.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "error"])
        writer.writerows([str(file), error] for file, error in skipped)
    return path
