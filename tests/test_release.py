"""Scanning a release: class folders, zip archives read in place, unsafe members, litter and unknown folders."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from hmu_crc.labels import CLASS_NAMES
from hmu_crc.release import scan_release


def test_folders_are_listed_by_class(sample_release: Path) -> None:
    listing = scan_release(sample_release)
    assert len(listing.tiles) == 8 * 24
    assert {tile.class_name for tile in listing.tiles} == set(CLASS_NAMES)
    assert all(tile.entry.name.startswith(f"{tile.class_name}/") for tile in listing.tiles)
    assert [entry.name for entry in listing.clinical] == ["HMU CRC Clinical.csv"]
    assert set(listing.kather) == {"crc_val_he_7k", "nct_crc_he_100k", "nct_crc_he_100k_nonorm"}
    assert not listing.problems


def test_zip_archives_are_read_without_extracting(release_copy: Path, tmp_path: Path) -> None:
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    # One archive per class with the class folder inside, as releases are often cut, plus one archive whose
    # members sit at its root and take the archive's name as their folder.
    for name in CLASS_NAMES[:-1]:
        shutil.make_archive(str(zipped / f"HMU-{name}"), "zip", release_copy, name)
    shutil.make_archive(str(zipped / "TUM"), "zip", release_copy / "TUM")
    shutil.copy(release_copy / "HMU CRC Clinical.csv", zipped)

    from_folders = scan_release(release_copy)
    from_zips = scan_release(zipped)
    assert len(from_zips.tiles) == len(from_folders.tiles)
    by_name = {
        tile.entry.name.split("/", 1)[1] if tile.entry.name.startswith("HMU-") else tile.entry.name: tile
        for tile in from_zips.tiles
    }
    for tile in from_folders.tiles:
        twin = by_name[tile.entry.name]
        assert twin.class_name == tile.class_name
        assert twin.entry.member is not None
        assert twin.entry.read() == tile.entry.read()
    assert not list(zipped.glob("**/*.png")), "nothing may be extracted to disk"


def test_archive_members_that_escape_are_refused_and_never_read(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../../outside.png", b"x")
        archive.writestr("/etc/passwd.png", b"x")
        archive.writestr("ADI\\..\\..\\win.png", b"x")
        archive.writestr("ADI/ok_1.png", b"x")
    listing = scan_release(tmp_path)
    assert [p.kind for p in listing.problems] == ["unsafe_path"] * 3
    assert all("evil.zip:" in p.where for p in listing.problems)
    assert [tile.entry.name for tile in listing.tiles] == ["evil/ADI/ok_1.png"]
    assert not (tmp_path.parent / "outside.png").exists()


def test_unknown_class_folder_and_litter(release_copy: Path) -> None:
    (release_copy / "BACK").mkdir()
    shutil.copy(next((release_copy / "ADI").iterdir()), release_copy / "BACK" / "P0001_BACK_0.png")
    (release_copy / "ADI" / ".DS_Store").write_bytes(b"litter")
    (release_copy / "README.txt").write_text("about the release")
    listing = scan_release(release_copy)
    assert [(p.kind, p.where) for p in listing.problems] == [("unknown_class", "BACK/P0001_BACK_0.png")]
    assert "one of the class folders ADI" in listing.problems[0].message()
    assert {"ADI/.DS_Store", "README.txt"} <= set(listing.ignored)
