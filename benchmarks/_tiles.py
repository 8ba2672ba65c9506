"""Tiles for the data-path benchmarks: a synthetic release prepared by `hmu-crc prepare`, loaded like a user would."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import datasets


def prepare_sample(root: Path, *, patients: int, tiles_per_class: int) -> Path:
    """Write a synthetic release under `root` and prepare it; returns the prepared folder."""
    from hmu_crc.cli import main as hmu_crc
    from hmu_crc.sample import write_sample

    raw, prepared = root / "raw", root / "prepared"
    write_sample(raw, patients=patients, tiles_per_class=tiles_per_class, seed=1)
    logging.disable(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):  # prepare's summary would spoil the JSON on stdout
        hmu_crc(["prepare", "--data-dir", str(raw), "--output-dir", str(prepared), "--num-proc", "2"])
    logging.disable(logging.NOTSET)
    return prepared


def repeat_to(tiles: datasets.Dataset, count: int) -> datasets.Dataset:
    """Exactly `count` rows, cycling through `tiles`: decoding the same bytes twice costs the same as new ones."""
    copies = -(-count // len(tiles))
    return datasets.concatenate_datasets([tiles] * copies).select(range(count))
