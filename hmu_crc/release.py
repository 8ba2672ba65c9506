"""Finding the tiles, the clinical CSV and Kather's sets in a release, as extracted folders and zip archives."""

from __future__ import annotations

import logging
import os
import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hmu_crc.labels import CLASS_NAMES, KATHER_BACKGROUND
from hmu_crc.problems import Problem

logger = logging.getLogger(__name__)

DEFAULT_PATIENT_PATTERN = r"(?P<patient_id>[^/_]+)_[^/]*$"
"""Patient id = the tile file name's part before its first underscore (`ADI/P0001_ADI_00012.png` -> `P0001`).

The pattern is searched in the tile's path inside the release (POSIX separators), so a pattern may also read a
per-patient folder, e.g. `(?P<patient_id>[^/]+)/[^/]+$`.
"""

KATHER_SETS: dict[str, str] = {
    "crc-val-he-7k": "crc_val_he_7k",
    "nct-crc-he-100k": "nct_crc_he_100k",
    "nct-crc-he-100k-nonorm": "nct_crc_he_100k_nonorm",
}
"""Folder (or archive) name of each of Kather's sets, lower-cased, and the config that exposes it."""

IGNORED_NAMES = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}
"""Operating-system litter that is skipped (and counted) wherever it appears."""

_CLASS_BY_FOLDER = {name.lower(): name for name in CLASS_NAMES}


@dataclass(frozen=True)
class Entry:
    """One file of the release, on disk or inside a zip archive."""

    name: str
    """Path inside the release, POSIX style; inside an archive, the archive's stem stands for its folder."""
    disk_path: str
    """The file on disk: the file itself, or the zip archive that holds it."""
    member: str | None = None
    """The member's name inside `disk_path` when that is a zip archive."""

    @property
    def parts(self) -> list[str]:
        return self.name.split("/")

    def read(self) -> bytes:
        if self.member is None:
            with open(self.disk_path, "rb") as handle:
                return handle.read()
        return _open_zip(self.disk_path).read(self.member)


@dataclass(frozen=True)
class Tile:
    """A file that sits in a class folder, whatever it turns out to contain."""

    entry: Entry
    class_name: str
    """One of CLASS_NAMES, or BACK for Kather's background."""


@dataclass
class Listing:
    """Everything a scan found, before any file is opened."""

    tiles: list[Tile] = field(default_factory=list)
    kather: dict[str, list[Tile]] = field(default_factory=dict)
    clinical: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    """Files that cannot become tiles (unknown class folder, unsafe archive path); each counts as a tile found."""
    kather_problems: dict[str, list[Problem]] = field(default_factory=dict)
    """The same, for images in an unknown folder of one of Kather's sets."""
    ignored: list[str] = field(default_factory=list)
    """Files that are not tiles by design (README, licence, OS litter), listed in the report."""


_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}


def _open_zip(path: str) -> zipfile.ZipFile:
    # NOTE: keyed by process id: a ZipFile inherited through fork shares its file offset with the parent, and
    # concurrent reads through it would interleave.
    key = (os.getpid(), path)
    if key not in _ZIPS:
        _ZIPS[key] = zipfile.ZipFile(path)
    return _ZIPS[key]


def scan_release(data_dir: str | Path) -> Listing:
    """List a release's tiles, clinical CSV candidates and Kather sets, reading folders and zip archives alike.

    Args:
        data_dir: The release's root folder.

    Returns:
        The listing, sorted by path inside the release so that every later step is deterministic.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"release folder {root} not found; pass the folder that holds ADI/ ... TUM/")
    listing = Listing()
    for entry in sorted(_walk(root, listing), key=lambda e: e.name):
        _classify(entry, listing)
    logger.info(
        "found %d tiles, %d Kather set(s), %d clinical CSV candidate(s) in %s",
        len(listing.tiles),
        len(listing.kather),
        len(listing.clinical),
        root,
    )
    return listing


def _walk(root: Path, listing: Listing) -> Iterator[Entry]:
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d.lower() not in IGNORED_NAMES)
        for file_name in sorted(files):
            path = Path(folder, file_name)
            name = path.relative_to(root).as_posix()
            if file_name.lower().endswith(".zip"):
                yield from _walk_zip(path, name[: -len(".zip")], listing)
            else:
                yield Entry(name=name, disk_path=str(path))


def _walk_zip(path: Path, stem: str, listing: Listing) -> Iterator[Entry]:
    with zipfile.ZipFile(path) as archive:
        members = [info.filename for info in archive.infolist() if not info.is_dir()]
    for member in members:
        where = f"{path.name}:{member}"
        if not _is_safe_member(member):
            listing.problems.append(
                Problem(
                    kind="unsafe_path",
                    where=where,
                    found="a member path that is absolute or climbs out with '..'",
                    expected="a relative path inside the archive",
                    fix="rebuild the archive from the release folder; this member is never read or extracted",
                )
            )
            continue
        inner = posixpath.normpath(member.replace("\\", "/"))
        head, _, rest = inner.partition("/")
        # An archive named after its top folder (ADI.zip holding ADI/...) stands for that folder, not a parent.
        if rest and head == posixpath.basename(stem):
            inner = rest
        yield Entry(name=f"{stem}/{inner}", disk_path=str(path), member=member)


def _is_safe_member(member: str) -> bool:
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member):
        return False
    return ".." not in re.split(r"[\\/]", member)


def _classify(entry: Entry, listing: Listing) -> None:
    parts = entry.parts
    lowered = [part.lower() for part in parts]
    if any(part in IGNORED_NAMES or part.startswith(".") for part in lowered):
        listing.ignored.append(entry.name)
        return
    if lowered[-1].endswith(".csv") and "clinical" in lowered[-1]:
        listing.clinical.append(entry)
        return
    kather_at = next((i for i, part in enumerate(lowered[:-1]) if part in KATHER_SETS), None)
    if kather_at is not None:
        _classify_kather(entry, KATHER_SETS[lowered[kather_at]], parts[kather_at + 1 : -1], listing)
        return
    class_name = next((_CLASS_BY_FOLDER[part] for part in lowered[:-1] if part in _CLASS_BY_FOLDER), None)
    if class_name is not None:
        listing.tiles.append(Tile(entry, class_name))
    elif _looks_like_image(lowered[-1]) and len(parts) > 1:
        listing.problems.append(_unknown_class(entry.name, parts[-2]))
    else:
        listing.ignored.append(entry.name)


def _classify_kather(entry: Entry, config: str, folders: list[str], listing: Listing) -> None:
    upper = [folder.upper() for folder in folders]
    class_name = next((f for f in upper if f in CLASS_NAMES or f == KATHER_BACKGROUND), None)
    if class_name is not None:
        listing.kather.setdefault(config, []).append(Tile(entry, class_name))
    elif _looks_like_image(entry.name.lower()):
        problem = _unknown_class(entry.name, folders[-1] if folders else "(set root)")
        listing.kather_problems.setdefault(config, []).append(problem)
    else:
        listing.ignored.append(entry.name)


def _looks_like_image(name: str) -> bool:
    return name.endswith((".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"))


def _unknown_class(name: str, folder: str) -> Problem:
    return Problem(
        kind="unknown_class",
        where=name,
        found=f"an image in folder {folder!r}",
        expected=f"tiles inside one of the class folders {', '.join(CLASS_NAMES)}",
        fix="move it into its class folder, or pass --skip-invalid to list it in the report",
    )
