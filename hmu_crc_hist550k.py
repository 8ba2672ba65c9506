"""The `datasets` builder of HMU-CRC-Hist550K: tiles, clinical rows and Kather's external sets, split by patient."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
from datasets.builder import Key

from hmu_crc.examples import TileRow, tile_examples
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.manifest import (
    Manifest,
    ReleaseOptions,
    SplitBy,
    build_manifest,
    clinical_by_patient,
    clinical_columns,
    plain_records,
    tile_rows,
)
from hmu_crc.provenance import CITATION, DESCRIPTION, HOMEPAGE, KATHER_CITATION, LICENSE
from hmu_crc.release import DEFAULT_PATIENT_PATTERN
from hmu_crc.splits import SplitSpec
from hmu_crc.validation import ValidationLevel

logger = logging.getLogger(__name__)

RELEASE_CONFIGS = ("tiles", "clinical", "tiles_clinical")
KATHER_CONFIGS = ("crc_val_he_7k", "nct_crc_he_100k", "nct_crc_he_100k_nonorm")
SHARD_TILES = 10_000
"""Tiles per generator shard: the unit that `num_proc` workers share out."""


@dataclass
class HmuCrcHist550kConfig(datasets.BuilderConfig):
    """Which view of the release to build, and how to split it."""

    validation_size: float = 0.3
    """Fraction of patients in `validation` (the paper's 7:3 split); ignored when `num_folds` is set."""
    test_size: float = 0.0
    """Fraction of patients held out in `test` before any other split."""
    num_folds: int = 0
    """Patient-grouped k-fold cross-validation when at least 2 (the paper uses 10): `fold` is `validation`."""
    fold: int = 0
    seed: int = 42
    patient_pattern: str = DEFAULT_PATIENT_PATTERN
    """Regular expression with a `patient_id` group, searched in each tile's path inside the release."""
    patient_map_file: str | None = None
    """CSV with columns `file_name, patient_id`; when given, it replaces the pattern."""
    clinical_file: str | None = None
    """The clinical CSV, when it is not inside the release (found by a name containing 'clinical')."""
    clinical_encoding: str | None = None
    split_by: SplitBy = "patient"
    """`tile` splits tiles regardless of patient: it leaks patients between splits and logs a warning."""
    skip_invalid: bool = False
    validation: ValidationLevel = "checksum"

    def options(self, num_proc: int = 1) -> ReleaseOptions:
        if self.data_dir is None:
            raise ValueError(f"config {self.name!r} needs data_dir: the folder of the release as published")
        return ReleaseOptions(
            data_dir=Path(self.data_dir),
            patient_pattern=self.patient_pattern,
            patient_map_file=Path(self.patient_map_file) if self.patient_map_file else None,
            clinical_file=Path(self.clinical_file) if self.clinical_file else None,
            clinical_encoding=self.clinical_encoding,
            split=SplitSpec(self.validation_size, self.test_size, self.num_folds, self.fold, self.seed),
            split_by=self.split_by,
            skip_invalid=self.skip_invalid,
            validation=self.validation,
            num_proc=num_proc,
        )


class HmuCrcHist550k(datasets.GeneratorBasedBuilder):
    """HMU-CRC-Hist550K: 224x224 H&E tiles of eight colorectal tissue classes, and the patients' clinical rows."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = HmuCrcHist550kConfig
    BUILDER_CONFIGS = [  # noqa: RUF012 (the base class declares it a list)
        HmuCrcHist550kConfig(name="tiles", description="Tiles with label and patient id."),
        HmuCrcHist550kConfig(name="clinical", description="One row per patient, in the split of its tiles."),
        HmuCrcHist550kConfig(name="tiles_clinical", description="Tiles with their patient's clinical columns."),
        HmuCrcHist550kConfig(name="crc_val_he_7k", description="Kather's CRC-VAL-HE-7K, BACK left out."),
        HmuCrcHist550kConfig(name="nct_crc_he_100k", description="Kather's NCT-CRC-HE-100K, BACK left out."),
        HmuCrcHist550kConfig(name="nct_crc_he_100k_nonorm", description="NCT-CRC-HE-100K before stain norm."),
    ]
    DEFAULT_CONFIG_NAME = "tiles"

    def __init__(self, *args: Any, manifest: Manifest | None = None, **kwargs: Any) -> None:
        """Accepts `manifest`, a release already validated with the same options, to avoid a second scan."""
        self._manifest = manifest
        self._num_proc = 1
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        name = self.config.name
        tile = {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASS_NAMES))}
        if name in KATHER_CONFIGS:
            features = {**tile, "file_name": datasets.Value("string")}
        elif name == "tiles":
            features = {**tile, "patient_id": datasets.Value("string"), "file_name": datasets.Value("string")}
        else:
            clinical = self._clinical_features()
            if name == "clinical":
                features = clinical
            else:
                rest = {k: v for k, v in clinical.items() if k != "patient_id"}
                features = {**tile, "patient_id": datasets.Value("string"), "file_name": datasets.Value("string")}
                features.update(rest)
        return datasets.DatasetInfo(
            description=DESCRIPTION,
            features=datasets.Features(features),
            homepage=HOMEPAGE,
            license=LICENSE,
            citation=CITATION + (KATHER_CITATION if name in KATHER_CONFIGS else ""),
        )

    def _clinical_features(self) -> dict[str, datasets.Value]:
        if self._manifest is not None and self._manifest.clinical is not None:
            columns = clinical_columns(self._manifest.clinical)
        elif self.config.data_dir is not None:
            columns = clinical_columns(self._get_manifest().clinical)
        else:
            columns = clinical_columns(None)
        return {column: datasets.Value(dtype) for column, dtype in columns.items()}

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_splits_kwargs):
        # NOTE: the release is validated once, in parallel, before any split is written; the base class keeps
        # num_proc to itself, so it is taken here.
        self._num_proc = prepare_splits_kwargs.get("num_proc") or 1
        super()._download_and_prepare(dl_manager, verification_mode, **prepare_splits_kwargs)

    def _get_manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = build_manifest(self.config.options(self._num_proc))
        return self._manifest

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        manifest = self._get_manifest()
        name = self.config.name
        if name in KATHER_CONFIGS:
            if name not in manifest.kather:
                raise FileNotFoundError(f"{name}: Kather's set not found under {self.config.data_dir}")
            rows = manifest.kather[name]
            return [self._tile_split(datasets.Split.TEST, rows, None)]
        if name == "clinical":
            if manifest.clinical is None:
                raise FileNotFoundError(f"clinical: no clinical CSV under {self.config.data_dir}")
            return [
                datasets.SplitGenerator(
                    name=split,
                    gen_kwargs={"records": manifest.clinical.loc[manifest.clinical["split"] == split]},
                )
                for split in manifest.split_names
            ]
        clinical = None
        if name == "tiles_clinical":
            if manifest.clinical is None:
                raise FileNotFoundError(f"tiles_clinical: no clinical CSV under {self.config.data_dir}")
            clinical = manifest.clinical
        tiles = manifest.tiles
        return [
            self._tile_split(split, tiles.loc[tiles["split"] == split], clinical) for split in manifest.split_names
        ]

    def _tile_split(self, split: str, rows: pd.DataFrame, clinical: pd.DataFrame | None) -> datasets.SplitGenerator:
        records = tile_rows(rows)
        # At least one shard per process, so that num_proc is used even on a split smaller than SHARD_TILES.
        count = max(self._num_proc, -(-len(records) // SHARD_TILES))
        size = max(1, -(-len(records) // count))
        shards = [records[i : i + size] for i in range(0, len(records), size)] or [[]]
        by_patient = clinical_by_patient(clinical, rows) if clinical is not None else None
        return datasets.SplitGenerator(name=split, gen_kwargs={"shards": shards, "clinical": by_patient})

    def _generate_examples(
        self,
        shards: list[list[TileRow]] | None = None,
        clinical: dict[str | None, dict] | None = None,
        records: pd.DataFrame | None = None,
    ) -> Iterator[tuple[Key, dict[str, Any]]]:
        if records is not None:
            for index, row in enumerate(plain_records(records.drop(columns="split"))):
                yield Key(0, index), row
            return
        for shard_id, shard in enumerate(shards or []):
            for index, example in enumerate(tile_examples(shard, clinical)):
                yield Key(shard_id, index), example
