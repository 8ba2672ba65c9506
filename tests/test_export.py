"""`hmu-crc prepare`: a Hub-ready folder that `load_dataset` reads with no code of ours."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard

from hmu_crc.cli import main
from hmu_crc.labels import CLASS_NAMES


@pytest.fixture
def prepared(prepared_sample: Path) -> Path:
    return prepared_sample


def test_every_config_loads_with_its_types(prepared: Path) -> None:
    configs = datasets.get_dataset_config_names(str(prepared))
    assert set(configs) == {
        "tiles",
        "clinical",
        "tiles_clinical",
        "crc_val_he_7k",
        "nct_crc_he_100k",
        "nct_crc_he_100k_nonorm",
    }
    tiles = datasets.load_dataset(str(prepared), "tiles")
    assert tiles["train"].features["label"].names == list(CLASS_NAMES)
    assert tiles["train"][0]["image"].size == (224, 224)
    clinical = datasets.load_dataset(str(prepared), "clinical")
    assert clinical["train"].features["age"] == datasets.Value("int32")
    assert clinical["train"].features["os_event"] == datasets.Value("int8")
    joined = datasets.load_dataset(str(prepared), "tiles_clinical", split="validation")
    assert joined.features["label"].names == list(CLASS_NAMES) and "tnm_stage" in joined.features
    kather = datasets.load_dataset(str(prepared), "crc_val_he_7k")
    assert list(kather) == ["test"]


def test_load_by_folder_name_from_the_folder_above(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(prepared.parent)
    tiles = datasets.load_dataset("hmu_crc_hist550k", "tiles", split="train")
    assert tiles.features["label"].names == list(CLASS_NAMES)


def test_images_are_embedded_not_paths(prepared: Path, tmp_path: Path) -> None:
    moved = Path(shutil.copytree(prepared, tmp_path / "elsewhere"))
    for shard in (moved / "data" / "tiles").glob("*.parquet"):
        images = pq.read_table(shard, columns=["image"]).column("image").to_pylist()
        assert all(image["bytes"] and image["bytes"].startswith(b"\x89PNG") for image in images)
    tiles = datasets.load_dataset(str(moved), "tiles", split="validation")
    tiles[0]["image"].load()


def test_card_and_report(prepared: Path, sample_release: Path) -> None:
    card = DatasetCard.load(prepared / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] and meta["task_categories"] == ["image-classification"]
    assert next(c for c in meta["configs"] if c["config_name"] == "tiles")["default"] is True
    assert "synthetic" in card.text.lower()
    for heading in ("## How it was made", "## Clinical fields", "## External test sets", "## Limitations"):
        assert heading in card.text
    assert "`tumor_location`" in card.text, "the CSV's unmatched columns are named"
    assert "Patients per split: train" in card.text
    yaml.safe_load(prepared.joinpath("README.md").read_text().split("---")[1])
    report = json.loads((prepared / "preparation_report.json").read_text())
    counts = report["counts"]
    assert counts["tiles_found"] == counts["tiles_written"] + counts["tiles_excluded"] == 8 * 24
    assert sum(counts["tiles_per_patient"].values()) == 8 * 24
    background = (prepared / "problems.csv").read_text().count(",background,")
    assert background == 3 * 2, "BACK tiles are counted and listed"


def test_zip_release_gives_the_same_rows(sample_release: Path, prepared: Path, tmp_path: Path) -> None:
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    shutil.make_archive(str(zipped / "HMU-CRC-Hist550K"), "zip", sample_release)
    out = tmp_path / "out"
    assert main(["prepare", "--data-dir", str(zipped), "--output-dir", str(out)]) == 0
    for config in ("tiles", "clinical"):
        ours = datasets.load_dataset(str(out), config)
        theirs = datasets.load_dataset(str(prepared), config)
        for split in theirs:
            key = "file_name" if config == "tiles" else "patient_id"
            left = sorted(
                r[key].removeprefix("HMU-CRC-Hist550K/")
                for r in ours[split].remove_columns([c for c in ours[split].column_names if c == "image"])
            )
            right = sorted(
                r[key] for r in theirs[split].remove_columns([c for c in theirs[split].column_names if c == "image"])
            )
            assert left == right


def test_failed_prepare_keeps_the_earlier_output(prepared: Path, release_copy: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(prepared, tmp_path / "out"))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (release_copy / "ADI" / "broken.png").write_bytes(b"")
    assert main(["prepare", "--data-dir", str(release_copy), "--output-dir", str(out)]) == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_refuses_to_replace_a_foreign_folder(sample_release: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    assert main(["prepare", "--data-dir", str(sample_release), "--output-dir", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
