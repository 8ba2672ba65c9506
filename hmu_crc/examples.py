"""The rows that the builder yields and the export writes: one definition, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from hmu_crc.release import Entry

TileRow = tuple[Any, ...]
"""(name, disk_path, member, label) or (name, disk_path, member, label, patient_id), as in the manifest."""

TILE_COLUMNS = ["name", "disk_path", "member", "label"]


def tile_examples(rows: Iterable[TileRow], clinical: Mapping[str | None, dict] | None = None) -> Iterator[dict]:
    """Read each tile and yield its example: image bytes (never a path), label, file name, patient, clinical.

    Args:
        rows: Tiles as in the manifest, see `TileRow`.
        clinical: Patient id -> clinical columns, with the key None holding the empty row for a tile whose patient
            has no clinical row; None for configs without clinical columns.
    """
    for name, disk_path, member, label, *patient in rows:
        example = {
            "image": {"bytes": Entry(name, disk_path, member).read(), "path": name.rsplit("/", 1)[-1]},
            "label": label,
            "file_name": name,
        }
        if patient:
            example["patient_id"] = patient[0]
        if clinical is not None:
            example.update(clinical.get(patient[0]) or clinical[None])
        yield example
