"""The builder used by import: every config, split by patient, clinical rows beside their tiles."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from hmu_crc.labels import CLASS_NAMES
from hmu_crc_hist550k import HmuCrcHist550k


def build(name: str, release: Path, cache: Path, **config) -> datasets.DatasetDict:
    builder = HmuCrcHist550k(config_name=name, data_dir=str(release), cache_dir=str(cache), **config)
    builder.download_and_prepare()
    return builder.as_dataset()


def split_of_patients(dataset: datasets.DatasetDict) -> dict[str, str]:
    seen: dict[str, str] = {}
    for split, part in dataset.items():
        for patient in part["patient_id"]:
            assert seen.setdefault(patient, split) == split, f"patient {patient} in {seen[patient]} and {split}"
    return seen


def test_tiles(sample_release: Path, tmp_path: Path) -> None:
    tiles = build("tiles", sample_release, tmp_path)
    assert set(tiles) == {"train", "validation"}
    assert sum(len(part) for part in tiles.values()) == 8 * 24
    assert tiles["train"].features["label"].names == list(CLASS_NAMES)
    row = tiles["validation"][0]
    assert row["image"].size == (224, 224) and row["image"].mode == "RGB"
    assert row["file_name"].startswith(CLASS_NAMES[row["label"]] + "/")
    assert row["file_name"].split("/")[-1].startswith(row["patient_id"] + "_")
    patients = split_of_patients(tiles)
    assert abs(sum(s == "validation" for s in patients.values()) / len(patients) - 0.3) < 0.15


@pytest.mark.parametrize("fold", [0, 2])
def test_folds_and_test_split(sample_release: Path, tmp_path: Path, fold: int) -> None:
    tiles = build("tiles", sample_release, tmp_path, num_folds=3, fold=fold, test_size=0.2, seed=7)
    assert set(tiles) == {"train", "validation", "test"}
    split_of_patients(tiles)


def test_clinical_rows_follow_their_tiles(sample_release: Path, tmp_path: Path) -> None:
    tiles = split_of_patients(build("tiles", sample_release, tmp_path))
    clinical = build("clinical", sample_release, tmp_path)
    features = clinical["train"].features
    assert features["age"] == datasets.Value("int32")
    assert features["os_months"] == datasets.Value("float32")
    assert features["os_event"] == datasets.Value("int8")
    assert "tumor_location" in features, "unmatched columns are kept"
    for split, part in clinical.items():
        for patient in part["patient_id"]:
            assert tiles[patient] == split
    assert sorted(p for part in clinical.values() for p in part["patient_id"]) == sorted(tiles)


def test_tiles_clinical(sample_release: Path, tmp_path: Path) -> None:
    joined = build("tiles_clinical", sample_release, tmp_path)
    clinical = build("clinical", sample_release, tmp_path)
    rows = {r["patient_id"]: r for part in clinical.values() for r in part}
    split_of_patients(joined)
    for row in joined["train"].select(range(10)):
        expected = rows[row["patient_id"]]
        assert row["label"] in range(8)
        assert {k: row[k] for k in expected} == expected


@pytest.mark.parametrize("name", ["crc_val_he_7k", "nct_crc_he_100k", "nct_crc_he_100k_nonorm"])
def test_kather_sets(sample_release: Path, tmp_path: Path, name: str) -> None:
    kather = build(name, sample_release, tmp_path)
    assert list(kather) == ["test"]
    test = kather["test"]
    assert len(test) == 8 * 2, "two tiles per tissue class, BACK left out"
    assert sorted(set(test["label"])) == list(range(8))
    for row in test:
        assert row["file_name"].split("/")[-1].startswith(CLASS_NAMES[row["label"]] + "-")
        assert row["image"].size == (224, 224)


def test_builder_needs_a_data_dir(tmp_path: Path) -> None:
    builder = HmuCrcHist550k(config_name="tiles", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs data_dir"):
        builder.download_and_prepare()
