"""Release-level validation: strict errors that name the file, --skip-invalid reports, nothing lost silently."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hmu_crc.manifest import ReleaseOptions, build_manifest
from hmu_crc.problems import ReleaseError

TILES = 8 * 24


def first_tile(release: Path, class_name: str = "ADI") -> Path:
    return sorted((release / class_name).iterdir())[0]


def damage_every_way(release: Path, make_png: Callable[..., bytes]) -> dict[str, str]:
    """Break the release once per kind of bad input; returns kind -> path inside the release."""
    adi = sorted((release / "ADI").iterdir())
    adi[0].write_bytes(b"")
    adi[1].write_bytes(adi[1].read_bytes()[:500])
    adi[2].write_text("not a picture")
    adi[3].write_bytes(make_png(mode="RGBA"))
    adi[4].write_bytes(make_png(mode="L"))
    adi[5].write_bytes(make_png(size=(256, 256)))
    shutil.copy(adi[6], release / "ADI" / "P9999_ADI_copy.png")  # sorts after its original: the copy is flagged
    (release / "BACK").mkdir()
    (release / "BACK" / "P0001_BACK_1.png").write_bytes(make_png())
    (release / "ADI" / "nopatient.png").write_bytes(make_png(seed=5))
    return {
        "empty": adi[0].name,
        "truncated": adi[1].name,
        "not_an_image": adi[2].name,
        "wrong_mode": adi[3].name,
        "wrong_size": adi[5].name,
        "duplicate": "P9999_ADI_copy.png",
        "unknown_class": "P0001_BACK_1.png",
        "no_patient_id": "nopatient.png",
    }


def test_clean_release(sample_release: Path) -> None:
    manifest = build_manifest(ReleaseOptions(data_dir=sample_release))
    assert manifest.counts["tiles_found"] == manifest.counts["tiles_written"] == TILES
    assert manifest.counts["tiles_excluded"] == 0
    assert [p.kind for p in manifest.problems] == ["background"] * 6
    assert set(manifest.clinical["split"]) == {"train", "validation"}


def test_strict_mode_names_every_bad_file_at_once(release_copy: Path, make_png: Callable[..., bytes]) -> None:
    broken = damage_every_way(release_copy, make_png)
    with pytest.raises(ReleaseError) as caught:
        build_manifest(ReleaseOptions(data_dir=release_copy))
    problems = caught.value.problems
    kinds = {p.kind: p for p in problems}
    for kind, name in broken.items():
        assert any(p.kind == kind and p.where.endswith(name) for p in problems), kind
    assert sorted(p.found for p in problems if p.kind == "wrong_mode") == [
        "L (grayscale) at 8 bits",
        "RGBA at 8 bits",
    ]
    assert kinds["duplicate"].found == f"the same bytes as ADI/{sorted((release_copy / 'ADI').iterdir())[6].name}"
    message = str(caught.value)
    assert "--skip-invalid" in message and "expected 224x224, found 256x256" in message
    assert "(?P<patient_id>" in kinds["no_patient_id"].found
    assert "--patient-pattern" in kinds["no_patient_id"].fix


def test_skip_invalid_reports_and_loses_nothing(release_copy: Path, make_png: Callable[..., bytes]) -> None:
    broken = damage_every_way(release_copy, make_png)
    manifest = build_manifest(ReleaseOptions(data_dir=release_copy, skip_invalid=True, num_proc=2))
    counts = manifest.counts
    found_on_disk = sum(1 for p in release_copy.glob("*/*.png") if not p.parent.name.startswith(("CRC", "NCT")))
    assert counts["tiles_found"] == found_on_disk
    assert counts["tiles_written"] + counts["tiles_excluded"] == found_on_disk
    assert counts["tiles_excluded"] == len(broken) + 1  # the grayscale tile as well as the RGBA one
    written = set(manifest.tiles["name"])
    for name in broken.values():
        assert not any(n.endswith(name) for n in written)


def test_tiles_without_clinical_row_and_rows_without_tiles(release_copy: Path) -> None:
    csv = release_copy / "HMU CRC Clinical.csv"
    lines = csv.read_text().splitlines()
    dropped = lines.pop(1).split(",")[0]
    lines.append(lines[-1].replace(lines[-1].split(",")[0], "P9999", 1))
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReleaseError) as caught:
        build_manifest(ReleaseOptions(data_dir=release_copy))
    kinds = {p.kind: p for p in caught.value.problems}
    assert dropped in kinds["no_clinical_row"].found
    assert "P9999" in kinds["no_tiles"].where

    manifest = build_manifest(ReleaseOptions(data_dir=release_copy, skip_invalid=True))
    assert dropped in set(manifest.tiles["patient_id"]), "tiles without a clinical row are kept"
    assert "P9999" not in set(manifest.clinical["patient_id"])


def test_bad_clinical_value_names_the_row(release_copy: Path) -> None:
    csv = release_copy / "HMU CRC Clinical.csv"
    lines = csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[2] = "sixty"
    lines[3] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReleaseError, match=r"HMU CRC Clinical\.csv:4.*sixty"):
        build_manifest(ReleaseOptions(data_dir=release_copy))


def test_clinical_csv_with_bom_and_in_another_encoding(release_copy: Path) -> None:
    csv = release_copy / "HMU CRC Clinical.csv"
    text = csv.read_text()
    csv.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert "patient_id" in build_manifest(ReleaseOptions(data_dir=release_copy)).clinical

    csv.write_bytes(text.replace("Colon", "Côlon").encode("cp1252"))
    with pytest.raises(ReleaseError, match="--clinical-encoding"):
        build_manifest(ReleaseOptions(data_dir=release_copy))
    manifest = build_manifest(ReleaseOptions(data_dir=release_copy, clinical_encoding="cp1252"))
    assert "Côlon" in set(manifest.clinical["tumor_location"])


def test_patient_map_file_replaces_the_pattern(release_copy: Path) -> None:
    patient_of = {}
    for path in sorted(release_copy.glob("*/P*_*.png")):
        patient, rest = path.name.split("_", 1)
        path.rename(path.with_name(rest))
        patient_of[f"{path.parent.name}/{rest}"] = patient
    with pytest.raises(ReleaseError, match="the class code 'ADI' where the pattern"):
        build_manifest(ReleaseOptions(data_dir=release_copy))
    mapping = release_copy.parent / "map.csv"
    mapping.write_text("file_name,patient_id\n" + "".join(f"{k},{v}\n" for k, v in patient_of.items()))
    manifest = build_manifest(ReleaseOptions(data_dir=release_copy, patient_map_file=mapping))
    assert dict(zip(manifest.tiles["name"], manifest.tiles["patient_id"], strict=True)) == patient_of


def test_pattern_without_group_is_refused(sample_release: Path) -> None:
    with pytest.raises(ValueError, match="no \\(\\?P<patient_id>"):
        build_manifest(ReleaseOptions(data_dir=sample_release, patient_pattern=r"^(\w+)_"))


def test_tile_split_is_opt_in_and_warns(sample_release: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        manifest = build_manifest(ReleaseOptions(data_dir=sample_release, split_by="tile"))
    assert "leak" in caplog.text or "same patients" in caplog.text
    per_patient = manifest.tiles.groupby("patient_id")["split"].nunique()
    assert (per_patient > 1).any(), "a tile-level split puts some patient in two splits"
