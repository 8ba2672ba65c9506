"""Per-patient tissue composition from per-tile predictions, joined with the clinical rows."""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd
import pyarrow.parquet as pq

from hmu_crc.clinical import CANONICAL_COLUMNS, parse_clinical
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.manifest import compile_patient_pattern, match_patient
from hmu_crc.sample import NOTICE_NAME

logger = logging.getLogger(__name__)

FILE_COLUMNS: tuple[str, ...] = ("file", "file_name")
"""Columns that name a tile: `file` in `hmu-crc predict` output, `file_name` in `<set>_predictions.csv`."""

PROBABILITY_COLUMNS: tuple[str, ...] = tuple(f"prob_{name}" for name in CLASS_NAMES)
"""Per-class probability columns; their argmax stands in for a missing `predicted` column."""

# The names `hmu-crc slide-map` writes (slide_map.py imports them), here so that reading them needs no torch.
SLIDE_PREDICTIONS_NAME = "tile_predictions.parquet"
"""The per-slide predictions file: its slide is named by the report beside it or by its folder, not by the file."""
SLIDE_REPORT_NAME = "class_fractions.json"
"""The report beside it, whose `slide` entry is the path of the slide."""
SLIDE_FOLDER_SUFFIX = "_map"
"""What `hmu-crc slide-map` appends to the slide's stem to name its default output folder."""

_EXAMPLES_SHOWN = 5
_CLASS_BY_KEY = {name.casefold(): name for name in CLASS_NAMES}


@dataclass(frozen=True)
class PatientMap:
    """A `--patient-map` CSV: `patient_id` plus `file_name` (tile -> patient) and/or `slide` (slide -> patient)."""

    source: Path
    by_file: dict[str, str]
    """Tile path or bare file name -> patient id."""
    by_slide: dict[str, str]
    """Slide name (its folder, or its Parquet file's stem) -> patient id."""


@dataclass
class TilePredictions:
    """Every predicted tile of every input file, with its patient."""

    frame: pd.DataFrame
    """Columns: patient_id, predicted (a class code), tile (the tile's path, or NA), source (`file:row`)."""
    files: list[Path]
    duplicates: int = 0
    """Tiles named in more than one row; each is counted once."""
    synthetic: bool = False
    """Whether some predicted tile lies inside a folder written by `hmu-crc sample`."""


@dataclass
class ClinicalSource:
    """Clinical rows read from a prepared folder or a clinical CSV."""

    frame: pd.DataFrame
    """One row per patient, the canonical columns of `hmu_crc.clinical` first."""
    description: str
    """Where the rows came from, in words."""
    synthetic: bool
    """Whether the rows carry the synthetic sample's marker (its notice file, or the prepared card's warning)."""


@dataclass
class Cohort:
    """The per-patient composition joined with the clinical rows, and who could not be joined."""

    table: pd.DataFrame
    """One row per patient with predictions: n_tiles, count_<CLASS>, frac_<CLASS>, has_clinical, clinical columns."""
    without_clinical: list[str] = field(default_factory=list)
    """Patients with predictions but no clinical row."""
    without_predictions: list[str] = field(default_factory=list)
    """Patients with a clinical row but no predicted tile."""


def _examples(values: Sequence[object]) -> str:
    shown = ", ".join(str(value) for value in values[:_EXAMPLES_SHOWN])
    return shown + (f" and {len(values) - _EXAMPLES_SHOWN} more" if len(values) > _EXAMPLES_SHOWN else "")


def read_patient_map(path: str | Path) -> PatientMap:
    """Read a patient map: a CSV with `patient_id` and a `file_name` and/or `slide` column.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If a needed column is missing or a row has a key but no patient id.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"patient map {path}: no such file; pass a CSV with patient_id and file_name or slide")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        keys = [name for name in ("file_name", "slide") if name in columns]
        if "patient_id" not in columns or not keys:
            msg = (
                f"patient map {path}: expected the columns patient_id and file_name (tile -> patient) or slide "
                f"(slide -> patient), found {columns}; rename the header row"
            )
            raise ValueError(msg)
        maps: dict[str, dict[str, str]] = {key: {} for key in ("file_name", "slide")}
        for line, row in enumerate(reader, start=2):
            patient = (row.get("patient_id") or "").strip()
            for key in keys:
                value = (row.get(key) or "").strip().replace("\\", "/")
                if value and not patient:
                    msg = (
                        f"patient map {path}:{line}: expected a patient_id for {key} {value!r}, found none; "
                        "fill it in or remove the row"
                    )
                    raise ValueError(msg)
                if value:
                    maps[key][value] = patient
    logger.info("%s: %d tile and %d slide mapping(s)", path, len(maps["file_name"]), len(maps["slide"]))
    return PatientMap(source=path, by_file=maps["file_name"], by_slide=maps["slide"])


def find_prediction_files(paths: Sequence[str | Path]) -> list[Path]:
    """The prediction files named, with every `*.parquet` found below a named folder (one per slide).

    Raises:
        FileNotFoundError: If a path does not exist.
        ValueError: If a file is neither CSV nor Parquet, or a folder holds no Parquet file.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            slides = sorted(path.rglob("*.parquet"))
            if not slides:
                msg = f"{path}: expected per-slide {SLIDE_PREDICTIONS_NAME} files below this folder, found none"
                raise ValueError(msg)
            found += slides
        elif not path.is_file():
            raise FileNotFoundError(f"predictions {path}: no such file or folder; check the path")
        elif path.suffix.lower() not in (".csv", ".parquet"):
            msg = (
                f"predictions {path}: expected a .csv (hmu-crc predict or evaluate) or a .parquet (one slide's "
                f"{SLIDE_PREDICTIONS_NAME}), found a {path.suffix or 'suffix-less'} file; pass one of those"
            )
            raise ValueError(msg)
        else:
            found.append(path)
    return found


def slide_name(path: Path) -> str:
    """The slide a Parquet file stands for.

    For `tile_predictions.parquet` it is the stem of the slide named in the `class_fractions.json` beside it
    or, without one, the folder's name less a trailing `_map` (`S01_map/tile_predictions.parquet` -> `S01`).
    Any other Parquet file is named by its stem.
    """
    if path.name != SLIDE_PREDICTIONS_NAME:
        return path.stem
    report = path.parent / SLIDE_REPORT_NAME
    if report.is_file():
        try:
            slide = json.loads(report.read_text(encoding="utf-8")).get("slide")
        except (OSError, ValueError, AttributeError):
            slide = None
        if isinstance(slide, str) and slide.strip():
            return PurePosixPath(slide.replace("\\", "/")).stem
    return path.parent.name.removesuffix(SLIDE_FOLDER_SUFFIX) or path.parent.name


def read_predictions(
    paths: Sequence[str | Path],
    *,
    patient_pattern: str,
    patient_map: PatientMap | None = None,
) -> TilePredictions:
    """Read prediction files into one row per tile with its patient and predicted class.

    A tile's patient is the file's `patient_id` column when it has one. Otherwise, in a CSV, it is looked up in
    the patient map's `file_name` rows (by the tile's path, then its bare file name) or, without a map, read
    from the tile's path with the pattern; in a Parquet file (one slide) it is looked up in the map's `slide`
    rows or, without a map, is the slide's name. Tiles named in more than one row are counted once.

    Args:
        paths: CSV files of `hmu-crc predict` or `hmu-crc evaluate`, per-slide Parquet files, or folders of them.
        patient_pattern: Regular expression with a `patient_id` group, searched in each tile's path.
        patient_map: Mapping read with `read_patient_map`, which replaces the pattern and the slide names.

    Returns:
        The tiles, the files read, and how many repeated tiles were set aside.

    Raises:
        ValueError: If a file lacks the needed columns, holds an unknown class, or a tile has no patient.
    """
    pattern = compile_patient_pattern(patient_pattern)
    files = find_prediction_files(paths)
    frames = [_read_one(path, pattern, patient_map) for path in files]
    frame = pd.concat(frames, ignore_index=True)
    named = frame["tile"].notna()
    repeated = named & frame.duplicated("tile", keep="first")
    if repeated.any():
        first = frame.loc[repeated, "source"].iloc[0]
        logger.warning(
            "%d tile(s) appear in more than one row (e.g. %s); each is counted once", int(repeated.sum()), first
        )
    frame = frame.loc[~repeated].reset_index(drop=True)
    logger.info("read %d predicted tile(s) of %d patient(s)", len(frame), frame["patient_id"].nunique())
    return TilePredictions(frame, files, int(repeated.sum()), _tiles_are_synthetic(frame["tile"]))


def _read_one(path: Path, pattern: re.Pattern[str], patient_map: PatientMap | None) -> pd.DataFrame:
    is_slide = path.suffix.lower() == ".parquet"
    columns = pq.read_schema(path).names if is_slide else list(pd.read_csv(path, nrows=0).columns)
    _check_columns(path, columns, is_slide)
    # The eight probabilities are read only when they stand in for a missing `predicted` column.
    classes = ["predicted"] if "predicted" in columns else list(PROBABILITY_COLUMNS)
    wanted = [c for c in columns if c in ("patient_id", *FILE_COLUMNS, *classes)]
    if is_slide:
        frame = pq.read_table(path, columns=wanted).to_pandas()
    else:
        frame = pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=False)
    if frame.empty:
        raise ValueError(f"predictions {path}: expected one row per tile, found no rows; pass a non-empty file")
    file_column = next((c for c in FILE_COLUMNS if c in frame.columns), None)
    tiles = frame[file_column].astype(str).str.replace("\\", "/") if file_column else pd.Series(pd.NA, frame.index)
    sources = [f"{path}:{row}" for row in range(2, len(frame) + 2)]
    return pd.DataFrame(
        {
            "patient_id": _patients(path, frame, tiles, pattern, patient_map, sources),
            "predicted": _predicted(path, frame, sources),
            "tile": tiles.astype(object).where(tiles.ne(""), None),
            "source": sources,
        }
    )


def _check_columns(path: Path, columns: list[str], is_slide: bool) -> None:
    """Raise unless the file has a class per tile and, for a CSV, a way to its patient."""
    if "predicted" not in columns and not all(c in columns for c in PROBABILITY_COLUMNS):
        msg = (
            f"predictions {path}: expected a 'predicted' column or the columns {', '.join(PROBABILITY_COLUMNS)} "
            f"(as `hmu-crc predict` and `hmu-crc evaluate` write them), found {columns}; "
            "pass a file those commands wrote, or add the columns"
        )
        raise ValueError(msg)
    if not is_slide and not any(c in columns for c in ("patient_id", *FILE_COLUMNS)):
        msg = (
            f"predictions {path}: expected a patient_id column or a tile path column ({' or '.join(FILE_COLUMNS)}) "
            f"to find each tile's patient, found {columns}; pass the CSV of `hmu-crc predict` (evaluate writes "
            "file_name only for datasets that have it) or add a patient_id column"
        )
        raise ValueError(msg)


def _predicted(path: Path, frame: pd.DataFrame, sources: list[str]) -> pd.Series:
    """The class code of each row, from `predicted` or, failing that, the argmax of the prob_ columns."""
    if "predicted" in frame.columns:
        values = frame["predicted"]
        if pd.api.types.is_integer_dtype(values):
            codes = values.map(lambda i: CLASS_NAMES[i] if 0 <= i < len(CLASS_NAMES) else None)
        else:
            codes = values.astype(str).str.strip().str.casefold().map(_CLASS_BY_KEY)
        bad = codes.isna()
        if bad.any():
            where = [f"{sources[i]} ({values.iloc[i]!r})" for i in bad.to_numpy().nonzero()[0]]
            msg = (
                f"predictions {path}: expected a class code in column 'predicted' ({', '.join(CLASS_NAMES)}), "
                f"found other values in {int(bad.sum())} row(s): {_examples(where)}; fix or remove those rows"
            )
            raise ValueError(msg)
        return codes
    probabilities = frame[list(PROBABILITY_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    if probabilities.isna().any().any():
        row = int(probabilities.isna().any(axis=1).to_numpy().nonzero()[0][0])
        msg = f"predictions {sources[row]}: expected numbers in every prob_ column, found a blank or text cell"
        raise ValueError(msg)
    return pd.Series([CLASS_NAMES[i] for i in probabilities.to_numpy().argmax(axis=1)], index=frame.index)


def _patients(
    path: Path,
    frame: pd.DataFrame,
    tiles: pd.Series,
    pattern: re.Pattern[str],
    patient_map: PatientMap | None,
    sources: list[str],
) -> pd.Series:
    """Each row's patient id, by the first rule of `read_predictions` that applies; raises for rows with none."""
    if "patient_id" in frame.columns:
        patients = frame["patient_id"].astype(str).str.strip()
        how, fix = "its patient_id column", "fill in the patient_id cells"
    elif path.suffix.lower() == ".parquet":
        slide = slide_name(path)
        if patient_map is not None:
            patient = patient_map.by_slide.get(slide, "")
            how = f"the slide {slide!r} in the patient map {patient_map.source}"
            fix = f"add a row with slide {slide!r} and its patient_id to {patient_map.source}"
        else:
            patient, how = slide, "the slide name"
            fix = "name each slide's folder after its patient, or pass --patient-map with slide and patient_id"
        patients = pd.Series(patient, index=frame.index)
    elif patient_map is not None:
        by_file = patient_map.by_file
        patients = tiles.map(lambda tile: by_file.get(tile) or by_file.get(PurePosixPath(tile).name) or "")
        how = f"the patient map {patient_map.source}"
        fix = f"add the tiles to {patient_map.source} (columns file_name, patient_id)"
    else:
        patients = tiles.map(lambda tile: match_patient(pattern, tile) or "")
        how = f"the pattern {pattern.pattern!r}"
        fix = "pass --patient-pattern with a (?P<patient_id>...) group that matches the tile paths, or --patient-map"
    # A "patient" named like a class means the pattern read the wrong part of the name (ADI_00012.png -> ADI).
    bad = patients.eq("") | patients.str.casefold().isin(_CLASS_BY_KEY)
    if bad.any():
        where = [
            sources[i] + (f" ({tiles.iloc[i]})" if pd.notna(tiles.iloc[i]) else "")
            for i in bad.to_numpy().nonzero()[0]
        ]
        msg = (
            f"predictions {path}: expected a patient id for every tile through {how}, found none (or a class code) "
            f"for {int(bad.sum())} tile(s): {_examples(where)}; {fix}"
        )
        raise ValueError(msg)
    return patients


def _tiles_are_synthetic(tiles: pd.Series) -> bool:
    """Whether one of the first tiles that exist on disk sits below the synthetic sample's notice file."""
    for tile in tiles.dropna().drop_duplicates().head(20):
        path = Path(tile)
        if path.is_file() and any((folder / NOTICE_NAME).is_file() for folder in list(path.parents)[:3]):
            return True
    return False


def patient_composition(tiles: pd.DataFrame) -> pd.DataFrame:
    """Tile counts and fractions per patient and class.

    The fraction of class C for a patient is the number of the patient's tiles predicted as C divided by the
    number of the patient's predicted tiles, so a patient's eight fractions sum to one.

    Args:
        tiles: One row per tile with `patient_id` and `predicted` (a class code), as `read_predictions` gives.

    Returns:
        Index patient_id (sorted); columns n_tiles, count_<CLASS> and frac_<CLASS> in class order.
    """
    counts = (
        tiles.groupby(["patient_id", "predicted"])
        .size()
        .unstack(fill_value=0)
        .reindex(columns=CLASS_NAMES, fill_value=0)
    )
    counts = counts.sort_index().astype("int64")
    total = counts.sum(axis=1)
    table = pd.concat(
        {
            "n_tiles": total,
            **{f"count_{name}": counts[name] for name in CLASS_NAMES},
            **{f"frac_{name}": counts[name] / total for name in CLASS_NAMES},
        },
        axis=1,
    )
    table.index.name = "patient_id"
    table.columns.name = None
    return table


def load_clinical(path: str | Path) -> ClinicalSource:
    """Read clinical rows from a prepared folder (its `clinical` config), a release folder, or a clinical CSV.

    A CSV is read with `hmu_crc.clinical.parse_clinical`, so any header the release may use is understood and a
    bad cell is an error naming its line. A release folder must hold one `*clinical*.csv` at its root.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: If a folder holds no clinical rows, or the CSV has bad rows.
    """
    path = Path(path)
    if path.is_file():
        table = parse_clinical(path.read_bytes(), path.name)
        synthetic = (path.parent / NOTICE_NAME).is_file()
        return ClinicalSource(table.frame, f"clinical CSV {path}", synthetic)
    if not path.is_dir():
        raise FileNotFoundError(f"clinical {path}: no such file or folder; pass a prepared folder or the clinical CSV")
    shards = sorted((path / "data" / "clinical").glob("*.parquet"))
    if shards:
        frame = pd.concat([pd.read_parquet(shard) for shard in shards], ignore_index=True)
        return ClinicalSource(frame, f"prepared folder {path} (clinical config)", _prepared_is_synthetic(path))
    candidates = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and "clinical" in p.name.lower())
    if len(candidates) != 1:
        msg = (
            f"clinical {path}: expected a prepared folder with data/clinical/*.parquet or a release folder with one "
            f"clinical CSV at its root, found {len(candidates)} clinical CSV(s) {[p.name for p in candidates]}; "
            "pass the clinical CSV itself"
        )
        raise ValueError(msg)
    return load_clinical(candidates[0])


def _prepared_is_synthetic(folder: Path) -> bool:
    """Whether a prepared folder came from the synthetic sample: its card's warning or its release's notice."""
    from hmu_crc.cards import SYNTHETIC_WARNING
    from hmu_crc.export import REPORT_NAME

    card = folder / "README.md"
    if card.is_file() and SYNTHETIC_WARNING in card.read_text(encoding="utf-8"):
        return True
    report = folder / REPORT_NAME
    if report.is_file():
        data_dir = json.loads(report.read_text()).get("data_dir")
        return bool(data_dir) and (Path(data_dir) / NOTICE_NAME).is_file()
    return False


def join_clinical(composition: pd.DataFrame, clinical: pd.DataFrame) -> Cohort:
    """Join the composition with the clinical rows, keeping every patient with predictions.

    Raises:
        ValueError: If no patient with predictions has a clinical row.
    """
    clinical = clinical.assign(patient_id=clinical["patient_id"].astype(str).str.strip()).set_index("patient_id")
    predicted = set(composition.index)
    known = set(clinical.index)
    without_clinical = sorted(predicted - known)
    without_predictions = sorted(known - predicted)
    if not predicted & known:
        msg = (
            "no patient with predictions has a clinical row: expected shared patient ids, found predictions for "
            f"{_examples(sorted(predicted))} and clinical rows for {_examples(sorted(known))}; "
            "check --patient-pattern or --patient-map against the clinical patient ids"
        )
        raise ValueError(msg)
    if without_clinical:
        logger.warning(
            "%d patient(s) with predictions have no clinical row: %s",
            len(without_clinical),
            _examples(without_clinical),
        )
    if without_predictions:
        logger.warning(
            "%d clinical row(s) have no predicted tiles: %s", len(without_predictions), _examples(without_predictions)
        )
    columns = [c for c in CANONICAL_COLUMNS if c != "patient_id" and c in clinical.columns]
    table = composition.assign(has_clinical=composition.index.isin(known)).join(clinical[columns], how="left")
    return Cohort(table, without_clinical, without_predictions)
