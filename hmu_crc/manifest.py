"""One validated pass over a release: which tiles and clinical rows go into which split, and what was left out."""

from __future__ import annotations

import csv
import logging
import multiprocessing
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hmu_crc.clinical import CANONICAL_COLUMNS, clinical_arrow_types, parse_clinical
from hmu_crc.labels import CLASS_NAMES, KATHER_BACKGROUND, LABEL2ID
from hmu_crc.problems import Problem, ReleaseError
from hmu_crc.release import DEFAULT_PATIENT_PATTERN, Listing, Tile, scan_release
from hmu_crc.splits import SplitSpec, assign_splits, check_no_leakage
from hmu_crc.validation import ValidationLevel, check_entry

logger = logging.getLogger(__name__)

SplitBy = Literal["patient", "tile"]

EXCLUDING = frozenset(
    {"unreadable", "not_an_image", "corrupt", "truncated", "empty", "wrong_size", "wrong_mode", "unknown_class"}
    | {"unsafe_path", "duplicate", "no_patient_id", "background", "no_tiles", "duplicate_patient"}
)
"""Problem kinds that leave a tile or clinical row out; with the others the tile is kept (a tile without a
clinical row) or the row is kept with the bad cell left empty."""


@dataclass(frozen=True)
class ReleaseOptions:
    """How to read and cut a release; the builder's config fields map onto these one to one."""

    data_dir: Path
    patient_pattern: str = DEFAULT_PATIENT_PATTERN
    patient_map_file: Path | None = None
    clinical_file: Path | None = None
    clinical_encoding: str | None = None
    split: SplitSpec = field(default_factory=SplitSpec)
    split_by: SplitBy = "patient"
    skip_invalid: bool = False
    validation: ValidationLevel = "checksum"
    num_proc: int = 1


@dataclass
class Manifest:
    """The outcome of `build_manifest`: rows to write, and the report of what was not written."""

    tiles: pd.DataFrame
    """One row per tile to write: name, disk_path, member, label, patient_id, split (sorted by name)."""
    clinical: pd.DataFrame | None
    """One row per patient with tiles: typed clinical columns and split; None when the release has no CSV."""
    kather: dict[str, pd.DataFrame]
    """Kather config name -> its tiles to write (name, disk_path, member, label)."""
    problems: list[Problem]
    """Everything excluded or flagged, in the order found."""
    counts: dict[str, object]
    """Counts for the report: tiles found, written and excluded, per class, patient and split."""
    ignored: list[str]
    """Files that are not tiles by design."""

    @property
    def split_names(self) -> list[str]:
        return [name for name in ("train", "validation", "test") if (self.tiles["split"] == name).any()]

    @property
    def configs(self) -> list[str]:
        """The builder configs this release can fill: the clinical ones need a CSV, Kather's need their sets."""
        names = ["tiles"] + (["clinical", "tiles_clinical"] if self.clinical is not None else [])
        return names + sorted(self.kather)


def build_manifest(options: ReleaseOptions) -> Manifest:
    """Scan, validate, map patients, join the clinical rows and split: everything short of writing.

    In strict mode (the default) every problem is collected first and raised together in one `ReleaseError`;
    with `skip_invalid`, problem tiles and rows are left out and listed.
    """
    listing = scan_release(options.data_dir)
    problems = list(listing.problems)

    tiles = _checked_tiles(listing.tiles, options, "PNG", problems)
    tiles = _drop_duplicates(tiles, problems)
    tiles = _with_patients(tiles, options, problems)
    excluded = sum(1 for p in problems if p.kind in EXCLUDING)
    _check_accounting("release", len(listing.tiles) + len(listing.problems), len(tiles), excluded)

    clinical = _read_clinical(listing, options, problems)
    if clinical is not None:
        tiles, clinical = _join_clinical(tiles, clinical, problems)
    kather = {}
    for name, found in sorted(listing.kather.items()):
        problems.extend(listing.kather_problems.get(name, []))
        kather[name] = _checked_kather(name, found, listing.kather_problems.get(name, []), options, problems)

    fatal = [p for p in problems if p.kind != "background"]
    if fatal and not options.skip_invalid:
        raise ReleaseError(fatal, hint="Fix the files, or pass --skip-invalid to leave them out and list them.")

    tiles = _split(tiles, options)
    if clinical is not None:
        split_of = dict(zip(tiles["patient_id"], tiles["split"], strict=True))
        clinical = clinical.assign(split=clinical["patient_id"].map(split_of))
    counts = _counts(len(listing.tiles) + len(listing.problems), tiles, kather)
    manifest = Manifest(tiles, clinical, kather, problems, counts, listing.ignored)
    logger.info("release: %d tiles to write, %d problem(s)", len(tiles), len(problems))
    return manifest


def _checked_tiles(found: list[Tile], options: ReleaseOptions, expect: str, problems: list[Problem]) -> pd.DataFrame:
    """Read and check every tile (in `num_proc` processes), hash it, and keep the good ones."""
    jobs = [(t.entry.name, t.entry.disk_path, t.entry.member, options.validation, expect) for t in found]
    results = _map(check_entry, jobs, options.num_proc, desc=f"checking {expect} tiles")
    rows = []
    for tile, (problem, digest) in zip(found, results, strict=True):
        if problem is not None:
            problems.append(problem)
            continue
        entry = tile.entry
        rows.append((entry.name, entry.disk_path, entry.member, tile.class_name, digest))
    return pd.DataFrame(rows, columns=["name", "disk_path", "member", "class_name", "digest"])


def _map(function, jobs: list, num_proc: int, desc: str) -> list:
    if num_proc <= 1 or len(jobs) < 2 * num_proc:
        return [function(job) for job in tqdm(jobs, desc=desc, disable=len(jobs) < 1000)]
    chunk = max(1, min(256, len(jobs) // (num_proc * 8)))
    # NOTE: fork where the platform has it, as datasets' own workers do: workers start in milliseconds and
    # inherit the imports; elsewhere spawn, which needs the caller's script to be importable.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(num_proc) as pool:
        results = pool.imap(function, jobs, chunksize=chunk)
        return list(tqdm(results, total=len(jobs), desc=desc, disable=len(jobs) < 1000))


def _drop_duplicates(tiles: pd.DataFrame, problems: list[Problem]) -> pd.DataFrame:
    """Keep the first of each set of byte-identical tiles (by path) and report the others."""
    repeated = tiles.duplicated("digest", keep="first")
    if repeated.any():
        first = tiles.drop_duplicates("digest").set_index("digest")["name"]
        for name, digest in tiles.loc[repeated, ["name", "digest"]].itertuples(index=False):
            problems.append(
                Problem(
                    kind="duplicate",
                    where=name,
                    found=f"the same bytes as {first[digest]}",
                    expected="every tile once",
                    fix="delete the copy, or pass --skip-invalid to keep the first and list the others",
                )
            )
    return tiles.loc[~repeated].reset_index(drop=True)


def _with_patients(tiles: pd.DataFrame, options: ReleaseOptions, problems: list[Problem]) -> pd.DataFrame:
    """Derive each tile's patient from the mapping file or the file-name pattern."""
    if options.patient_map_file is not None:
        mapping = _read_patient_map(Path(options.patient_map_file))
        patient = tiles["name"].map(lambda name: mapping.get(name) or mapping.get(name.rsplit("/", 1)[-1]))
        how = f"the mapping file {options.patient_map_file}"
        fix = "add the tile to the mapping file (columns file_name, patient_id)"
    else:
        pattern = compile_patient_pattern(options.patient_pattern)
        patient = tiles["name"].map(lambda name: match_patient(pattern, name))
        how = f"the pattern {options.patient_pattern!r}"
        fix = "pass --patient-pattern with a (?P<patient_id>...) group that matches, or --patient-map FILE"
    # A "patient" named like a class means the pattern read the wrong part of the name (ADI_00012.png -> ADI).
    class_like = patient.str.upper().isin(CLASS_NAMES).fillna(False).astype(bool)
    for name, code in zip(tiles.loc[class_like, "name"], patient[class_like], strict=True):
        found = f"the class code {code!r} where {how} should give a patient id"
        problems.append(Problem("no_patient_id", name, found, "a patient id", fix))
    patient = patient.where(~class_like, None)
    missing = patient.isna()
    for name in tiles.loc[missing & ~class_like, "name"]:
        problems.append(Problem("no_patient_id", name, f"no patient id through {how}", "a patient id", fix))
    return tiles.assign(patient_id=patient).loc[~missing].reset_index(drop=True)


def compile_patient_pattern(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"patient pattern {pattern!r} is not a valid regular expression: {error}") from error
    if "patient_id" not in compiled.groupindex:
        raise ValueError(f"patient pattern {pattern!r} has no (?P<patient_id>...) group; add one around the id")
    return compiled


def match_patient(pattern: re.Pattern[str], name: str) -> str | None:
    match = pattern.search(name)
    return match.group("patient_id") if match and match.group("patient_id") else None


def _read_patient_map(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"file_name", "patient_id"} <= set(reader.fieldnames):
            msg = f"patient map {path}: expected the columns file_name and patient_id, found {reader.fieldnames}"
            raise ValueError(msg)
        return {row["file_name"].strip(): row["patient_id"].strip() for row in reader if row["patient_id"].strip()}


def _read_clinical(listing: Listing, options: ReleaseOptions, problems: list[Problem]) -> pd.DataFrame | None:
    if options.clinical_file is not None:
        path = Path(options.clinical_file)
        data, source = path.read_bytes(), path.name
    elif not listing.clinical:
        logger.warning("no clinical CSV found in %s; the clinical configs will be skipped", options.data_dir)
        return None
    elif len(listing.clinical) > 1:
        names = ", ".join(entry.name for entry in listing.clinical)
        raise ValueError(f"found several clinical CSV files ({names}); expected one; pick one with --clinical-file")
    else:
        data, source = listing.clinical[0].read(), listing.clinical[0].name
    mode = "report" if options.skip_invalid else "raise"
    table = parse_clinical(data, source, encoding=options.clinical_encoding, on_invalid=mode)
    problems.extend(table.problems)
    return table.frame


def _join_clinical(
    tiles: pd.DataFrame, clinical: pd.DataFrame, problems: list[Problem]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Flag tiles without a clinical row (kept) and drop clinical rows without tiles (reported)."""
    known = set(clinical["patient_id"])
    orphans = tiles.loc[~tiles["patient_id"].isin(known)]
    for patient, group in orphans.groupby("patient_id", sort=True):
        problems.append(
            Problem(
                kind="no_clinical_row",
                where=f"{group['name'].iloc[0]} and {len(group) - 1} more tile(s)",
                found=f"patient {patient!r} absent from the clinical CSV",
                expected="a clinical row for every patient with tiles",
                fix="add the row, or pass --skip-invalid to keep the tiles with empty clinical columns",
            )
        )
    with_tiles = clinical["patient_id"].isin(set(tiles["patient_id"]))
    for patient in clinical.loc[~with_tiles, "patient_id"]:
        problems.append(
            Problem(
                kind="no_tiles",
                where=f"clinical row of patient {patient!r}",
                found="no tile of this patient",
                expected="tiles for every clinical row",
                fix="check the patient pattern, or pass --skip-invalid to leave the row out and list it",
            )
        )
    return tiles, clinical.loc[with_tiles].reset_index(drop=True)


def _checked_kather(
    name: str, found: list[Tile], unplaced: list[Problem], options: ReleaseOptions, problems: list[Problem]
) -> pd.DataFrame:
    """Check one of Kather's sets; BACK tiles are left out and listed as such."""
    start = len(problems)
    for tile in found:
        if tile.class_name == KATHER_BACKGROUND:
            problems.append(
                Problem(
                    kind="background",
                    where=tile.entry.name,
                    found="a BACK (background) tile",
                    expected=f"one of the eight tissue classes {', '.join(CLASS_NAMES)}",
                    fix="nothing to fix: the eight-class models have no background label, so it is left out",
                )
            )
    tissue = [tile for tile in found if tile.class_name != KATHER_BACKGROUND]
    tiles = _checked_tiles(tissue, options, "TIFF", problems)
    _check_accounting(name, len(found) + len(unplaced), len(tiles), len(problems) - start + len(unplaced))
    return tiles.assign(label=tiles["class_name"].map(LABEL2ID)).drop(columns="digest")


def _check_accounting(what: str, found: int, kept: int, excluded: int) -> None:
    # NOTE: the promise that nothing is lost silently, checked where it is made rather than only in tests.
    if found != kept + excluded:
        raise RuntimeError(f"{what}: {found} tiles found but {kept} kept + {excluded} excluded; please report this")


def _split(tiles: pd.DataFrame, options: ReleaseOptions) -> pd.DataFrame:
    labels = tiles["class_name"].map(LABEL2ID).to_numpy()
    if options.split_by == "tile":
        logger.warning(
            "split_by='tile' puts tiles of one patient in several splits: validation scores will be optimistic "
            "because the model sees the same patients in training. Use it only to reproduce tile-level baselines."
        )
        split_of = assign_splits(tiles["name"].to_numpy(), labels, options.split)
        split = tiles["name"].map(split_of)
    else:
        split_of = assign_splits(tiles["patient_id"].to_numpy(), labels, options.split)
        split = tiles["patient_id"].map(split_of)
        check_no_leakage(tiles["patient_id"].tolist(), split.tolist())
    order = np.lexsort((tiles["name"].to_numpy(), labels))
    return tiles.assign(label=labels, split=split).iloc[order].reset_index(drop=True)


def _counts(found: int, tiles: pd.DataFrame, kather: dict[str, pd.DataFrame]) -> dict[str, object]:
    per_split = tiles.groupby(["split", "class_name"]).size().unstack(fill_value=0)
    return {
        "tiles_found": found,
        "tiles_written": len(tiles),
        "tiles_excluded": found - len(tiles),
        "patients": int(tiles["patient_id"].nunique()),
        "tiles_per_class": {name: int((tiles["class_name"] == name).sum()) for name in CLASS_NAMES},
        "tiles_per_split_and_class": {
            str(split): {name: int(row.get(name, 0)) for name in CLASS_NAMES} for split, row in per_split.iterrows()
        },
        "patients_per_split": {str(k): int(v) for k, v in tiles.groupby("split")["patient_id"].nunique().items()},
        "tiles_per_patient": {str(k): int(v) for k, v in tiles.groupby("patient_id").size().items()},
        "kather_tiles_written": {name: len(frame) for name, frame in kather.items()},
    }


def clinical_columns(clinical: pd.DataFrame | None) -> dict[str, str]:
    """The clinical columns and their `datasets` dtypes: the canonical ten, then the release's own extras."""
    types = clinical_arrow_types()
    columns = {name: types[name] for name in CANONICAL_COLUMNS}
    if clinical is not None:
        columns.update({name: "string" for name in clinical.columns if name not in columns and name != "split"})
    return columns


def plain_records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as dicts of plain Python values, with every kind of missing value (NaN, NA, NaT) as None."""
    plain = frame.astype(object)
    return plain.where(frame.notna(), None).to_dict("records")


def tile_rows(tiles: pd.DataFrame) -> list[tuple]:
    """A manifest's tiles as the plain tuples that `examples.tile_examples` reads (cheap to send to workers)."""
    columns = ["name", "disk_path", "member", "label"] + (["patient_id"] if "patient_id" in tiles else [])
    return list(tiles[columns].itertuples(index=False, name=None))


def clinical_by_patient(clinical: pd.DataFrame, tiles: pd.DataFrame) -> dict[str | None, dict]:
    """Clinical columns of each patient of `tiles`, and under None the empty row for patients without one."""
    rows = clinical.drop(columns="split", errors="ignore").set_index("patient_id")
    known = rows.loc[rows.index.isin(tiles["patient_id"].unique())]
    by_patient: dict[str | None, dict] = dict(zip(known.index, plain_records(known), strict=True))
    by_patient[None] = dict.fromkeys(rows.columns)
    return by_patient
