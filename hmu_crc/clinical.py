"""Read the release's per-patient clinical CSV into one typed table, whatever its headers are called."""

from __future__ import annotations

import csv
import io
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import pandas as pd

from hmu_crc.problems import Problem, ReleaseError

logger = logging.getLogger(__name__)

CANONICAL_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "sex",
    "age",
    "t_stage",
    "n_stage",
    "m_stage",
    "tnm_stage",
    "treatment",
    "os_months",
    "os_event",
)
"""The clinical columns we understand, in the order they come first in the output table."""

COLUMN_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "patient_id": (
            "patientid",
            "patientno",
            "patientnumber",
            "patientcode",
            "patient",
            "pid",
            "caseid",
            "caseno",
            "casenumber",
            "subjectid",
            "id",
        ),
        "sex": ("sex", "gender", "性别"),
        "age": ("age", "ageyears", "ageatdiagnosis", "ageatdiagnosisyears", "diagnosisage", "年龄"),
        "t_stage": ("tstage", "t", "pt", "ptstage", "tcategory", "tumorstage", "tumourstage"),
        "n_stage": ("nstage", "n", "pn", "pnstage", "ncategory", "nodestage", "lymphnodestage"),
        "m_stage": ("mstage", "m", "pm", "pmstage", "mcategory", "distantmetastasis", "metastasisstage"),
        "tnm_stage": (
            "tnmstage",
            "tnm",
            "ptnm",
            "ptnmstage",
            "stage",
            "ajccstage",
            "pathologicalstage",
            "pathologicstage",
            "clinicalstage",
        ),
        "treatment": ("treatment", "treatmenthistory", "treatments", "therapy", "therapyhistory"),
        "os_months": (
            "osmonths",
            "os",
            "ostime",
            "survivaltime",
            "survivaltimemonths",
            "survivalmonths",
            "overallsurvival",
            "overallsurvivalmonths",
            "followup",
            "followupmonths",
            "followuptime",
            "followuptimemonths",
        ),
        "os_event": (
            "osevent",
            "osstatus",
            "survivalstatus",
            "status",
            "vitalstatus",
            "event",
            "death",
        ),
    }
)
"""Canonical column -> the headers that mean it, as `normalize_header` writes them.

A header matches only when its normalised form equals an alias exactly, so "T" is `t_stage`
but "Tumor Location" is nothing and is kept as the extra column `tumor_location`.
No alias may belong to two columns; that is checked when the module is imported.
Headers without units ("Survival Time", "Follow-up") are taken to be in months;
one that says another unit ("Survival Time (days)") matches nothing and is kept as text.
"""

_ARROW_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "patient_id": "string",
        "sex": "string",
        "age": "int32",
        "t_stage": "string",
        "n_stage": "string",
        "m_stage": "string",
        "tnm_stage": "string",
        "treatment": "string",
        "os_months": "float32",
        "os_event": "int8",
    }
)

# NOTE: the plain "string" dtype is Arrow-backed in pandas 3 and converts to large_string,
# which `datasets` reads as Value("large_string"); the python storage converts to string.
_PANDAS_DTYPES: Mapping[str, str | pd.StringDtype] = MappingProxyType(
    {
        "string": pd.StringDtype("python"),
        "int32": "Int32",
        "int8": "Int8",
        "float32": "Float32",
    }
)

MISSING_VALUES: frozenset[str] = frozenset({"", "na", "n/a", "nan", "-"})
"""Cell texts (compared case-insensitively, after stripping) that mean "no value"."""

T_STAGES: tuple[str, ...] = ("TX", "T0", "Tis", "T1", "T2", "T3", "T4", "T4a", "T4b")
N_STAGES: tuple[str, ...] = ("NX", "N0", "N1", "N1a", "N1b", "N1c", "N2", "N2a", "N2b")
M_STAGES: tuple[str, ...] = ("MX", "M0", "M1", "M1a", "M1b", "M1c")
TNM_STAGES: tuple[str, ...] = (
    "0",
    "I",
    "II",
    "IIA",
    "IIB",
    "IIC",
    "III",
    "IIIA",
    "IIIB",
    "IIIC",
    "IV",
    "IVA",
    "IVB",
    "IVC",
)
"""AJCC stage groups for colorectal cancer, plus the unlettered groups older records use."""

_SEXES = MappingProxyType(
    {"m": "male", "male": "male", "男": "male", "f": "female", "female": "female", "女": "female"}
)
_EVENTS = MappingProxyType(
    {
        **dict.fromkeys(("1", "1.0", "dead", "death", "deceased", "yes", "true"), 1),
        **dict.fromkeys(("0", "0.0", "alive", "censored", "no", "false"), 0),
    }
)
_ARABIC_TO_ROMAN = MappingProxyType({"0": "0", "1": "i", "2": "ii", "3": "iii", "4": "iv"})
_TNM_BY_KEY = MappingProxyType({stage.casefold(): stage for stage in TNM_STAGES})
_MAX_AGE = 130


def normalize_header(name: str) -> str:
    """Fold a header for matching: lower case, with every character that is not a letter or digit removed.

    Non-Latin letters are kept, so "性别" stays "性别". For example "Survival Time (months)"
    becomes "survivaltimemonths".
    """
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(char for char in folded if char.isalnum())


def _alias_index(aliases: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Turn canonical -> aliases into alias -> canonical, refusing an alias that means two columns."""
    index: dict[str, str] = {}
    for column, names in aliases.items():
        for alias in (normalize_header(column), *names):
            if alias != normalize_header(alias):
                msg = f"alias {alias!r} of {column!r} is not normalised; write it as {normalize_header(alias)!r}"
                raise ValueError(msg)
            owner = index.setdefault(alias, column)
            if owner != column:
                msg = f"alias {alias!r} is given for both {owner!r} and {column!r}; keep it for one of them"
                raise ValueError(msg)
    return index


_CANONICAL_BY_ALIAS = MappingProxyType(_alias_index(COLUMN_ALIASES))


def _snake_case(name: str) -> str:
    """Name an unmatched column: "Tumor Location" -> "tumor_location"."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return re.sub(r"[\W_]+", "_", folded).strip("_")


def match_columns(headers: Sequence[str], *, source: str = "clinical CSV") -> dict[str, str]:
    """Map each header of the CSV to the name of its column in the output table.

    Headers found in `COLUMN_ALIASES` get their canonical name; any other header is kept under a
    snake_case version of itself (or `column_<position>` when nothing is left of it).

    Args:
        headers: The header row as found in the file.
        source: The file's name, used in error messages.

    Returns:
        Header as found -> output column name, in the order of `headers`.

    Raises:
        ReleaseError: With one "bad_csv" problem per pair of headers that land on the same output column.
    """
    names: dict[str, str] = {}
    owners: dict[str, tuple[int, str]] = {}
    problems: list[Problem] = []
    for position, header in enumerate(headers, start=1):
        key = normalize_header(header)
        name = _CANONICAL_BY_ALIAS.get(key) or _snake_case(header) or f"column_{position}"
        # An exact repeat of a blank header gets a different fallback name, hence the second look-up.
        first = owners.get(name) or (owners[names[header]] if header in names else None)
        if first is not None:
            problems.append(_column_clash(source, first, (position, header), name))
            continue
        names[header] = name
        owners[name] = (position, header)
    if problems:
        raise ReleaseError(problems)
    return names


def _column_clash(source: str, first: tuple[int, str], second: tuple[int, str], name: str) -> Problem:
    return Problem(
        kind="bad_csv",
        where=f"{source}:1",
        found=f"column {first[0]} {first[1]!r} and column {second[0]} {second[1]!r} both read as {name!r}",
        expected="one column per field",
        fix="rename or remove one of the two columns",
    )


@dataclass
class ClinicalTable:
    """The clinical CSV as one row per patient.

    `frame` holds the ten `CANONICAL_COLUMNS` first (a column the file lacks is all missing),
    then the file's unmatched columns as text, with index 0..n-1. Its dtypes are pandas'
    nullable ones, so a missing cell is `pd.NA`: `string` (python storage) for text, `Int32`
    for age, `Float32` for os_months and `Int8` for os_event. `pyarrow.Table.from_pandas`
    turns them into string, int32, float32 and int8 columns, as `clinical_arrow_types` says.
    """

    frame: pd.DataFrame
    problems: list[Problem]
    """Everything that was wrong, when parsed with on_invalid="report"; empty otherwise."""
    source: str
    """The file's name as given."""
    line_of: dict[str, int]
    """Patient id -> the line of its row in the file (the header is line 1)."""


@dataclass(frozen=True)
class _Rule:
    """How to read one canonical column's cells."""

    parse: Callable[[str], object | None]
    """Returns the value, or None when the text is not one we accept."""
    accepted: str
    """What is accepted, in words, for error messages."""


def _squash(text: str) -> str:
    """Fold a coded value: compatibility forms unified (fullwidth digits, "Ⅲ"), lower case, no spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(folded.split())


def _parse_text(text: str) -> str:
    return text.strip()


def _parse_sex(text: str) -> str | None:
    return _SEXES.get(_squash(text))


def _parse_age(text: str) -> int | None:
    match = re.fullmatch(r"(\d+)(?:\.0*)?", _squash(text))
    if match is None or int(match.group(1)) > _MAX_AGE:
        return None
    return int(match.group(1))


def _stage_parser(letter: str, allowed: tuple[str, ...]) -> Callable[[str], str | None]:
    """Build a reader for one TNM category: "3", "pT3", "t 3" -> "T3" for letter "t"."""
    by_key = {value.casefold(): value for value in allowed}

    def parse(text: str) -> str | None:
        key = re.sub(rf"^[pc](?={letter})", "", _squash(text))
        if not key.startswith(letter):
            key = letter + key
        return by_key.get(key)

    return parse


def _parse_tnm_stage(text: str) -> str | None:
    key = _squash(text).removeprefix("stage")
    if key[:1] in _ARABIC_TO_ROMAN:
        key = _ARABIC_TO_ROMAN[key[0]] + key[1:]
    return _TNM_BY_KEY.get(key)


def _parse_months(text: str) -> float | None:
    key = _squash(text)
    if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", key) is None:
        return None
    return float(key)


def _parse_event(text: str) -> int | None:
    return _EVENTS.get(_squash(text))


def _one_of(values: Iterable[str]) -> str:
    return "one of " + ", ".join(values)


_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "patient_id": _Rule(_parse_text, "a non-empty patient id"),
        "sex": _Rule(_parse_sex, "male or female (M, F, Male, Female, 男 or 女, in any case)"),
        "age": _Rule(_parse_age, f"a whole number of years from 0 to {_MAX_AGE} (63 or 63.0)"),
        "t_stage": _Rule(
            _stage_parser("t", T_STAGES),
            f"{_one_of(T_STAGES)} (case, spaces and a p or c prefix are ignored; 3 means T3)",
        ),
        "n_stage": _Rule(
            _stage_parser("n", N_STAGES),
            f"{_one_of(N_STAGES)} (case, spaces and a p or c prefix are ignored; 1 means N1)",
        ),
        "m_stage": _Rule(
            _stage_parser("m", M_STAGES),
            f"{_one_of(M_STAGES)} (case, spaces and a p or c prefix are ignored; 0 means M0)",
        ),
        "tnm_stage": _Rule(
            _parse_tnm_stage,
            f"{_one_of(TNM_STAGES)} (Roman or Arabic numerals, case and spaces ignored, 'Stage' optional)",
        ),
        "treatment": _Rule(_parse_text, "free text"),
        "os_months": _Rule(_parse_months, "a number of months, 0 or more (24 or 24.5)"),
        "os_event": _Rule(_parse_event, "1 (dead, death, deceased, yes, true) or 0 (alive, censored, no, false)"),
    }
)


def clinical_arrow_types(extras: Iterable[str] = ()) -> dict[str, str]:
    """Name the `datasets.Value` dtype of each clinical column.

    Args:
        extras: Names of unmatched columns to include; they are always "string".

    Returns:
        Column -> dtype name, the canonical columns first, in `CANONICAL_COLUMNS` order.
    """
    return {**_ARROW_TYPES, **dict.fromkeys(extras, "string")}


def parse_clinical(
    data: bytes,
    source: str,
    *,
    encoding: str | None = None,
    on_invalid: Literal["raise", "report"] = "raise",
) -> ClinicalTable:
    """Read the clinical CSV into one typed row per patient.

    Without `encoding` the bytes must be UTF-8 (a byte-order mark is dropped). The delimiter is a comma,
    unless the header has none but has semicolons or tabs. Problems with the file as a whole (its
    encoding, its header, unreadable CSV) are raised at once in either mode. Problems with rows and
    cells are all collected first: with on_invalid="raise" they are raised together; with "report"
    a bad cell is left missing, a row with a missing or repeated patient id (the first row for an
    id is kept) or the wrong number of fields is left out, and each is listed in `problems`.

    Args:
        data: The file's bytes.
        source: The file's name, used in messages as `<source>:<line>`.
        encoding: The file's text encoding (a Python codec name, e.g. "gb18030"), if not UTF-8.
        on_invalid: "raise" to raise every bad row and cell at once, "report" to list them and go on.

    Returns:
        The table, its problems (in "report" mode) and the line of each patient's row.

    Raises:
        ReleaseError: For problems with the file, and in "raise" mode for every bad row or cell.
        ValueError: If `on_invalid` is neither "raise" nor "report".
    """
    if on_invalid not in ("raise", "report"):
        msg = f"on_invalid must be 'raise' or 'report', got {on_invalid!r}"
        raise ValueError(msg)
    text = _decode(data, source, encoding)
    header, records = _read_records(text, source)
    found: list[tuple[int, Problem]] = []
    records = _drop_ragged(header, records, source, found)
    header, records = _drop_blank_columns(header, records, source)
    names = match_columns(header, source=source)
    if "patient_id" not in names.values():
        raise ReleaseError([_no_patient_column(source, header)])
    _log_columns(source, names)
    output_names = list(names.values())
    header_of = {name: header for header, name in names.items()}
    kept: list[dict[str, object]] = []
    line_of: dict[str, int] = {}
    for line, cells in records:
        row = _read_row(dict(zip(output_names, cells, strict=True)), header_of, (source, line), line_of, found)
        if row is not None:
            line_of[str(row["patient_id"])] = line
            kept.append(row)
    problems = [problem for _, problem in sorted(found, key=lambda pair: pair[0])]
    if problems and on_invalid == "raise":
        raise ReleaseError(problems)
    frame = _build_frame(kept, [name for name in output_names if name not in _ARROW_TYPES])
    logger.info("%s: %d patient(s), %d problem(s)", source, len(frame), len(problems))
    return ClinicalTable(frame=frame, problems=problems, source=source, line_of=line_of)


def _decode(data: bytes, source: str, encoding: str | None) -> str:
    """Turn the file's bytes into text, or raise a "bad_encoding" problem that says how to fix it."""
    try:
        text = data.decode(encoding or "utf-8")
    except LookupError:
        found = f"an unknown encoding name {encoding!r}"
        fix = "pass a Python codec name to --clinical-encoding, such as utf-8, gb18030 or latin-1"
        raise ReleaseError([_encoding_problem(source, found, "a known text encoding", fix)]) from None
    except UnicodeDecodeError as error:
        raise ReleaseError([_undecodable(data, source, encoding, error)]) from None
    if text.startswith("\ufeff"):
        logger.info("%s: dropped the UTF-8 byte-order mark at the start of the file", source)
        text = text[1:]
    return text


def _undecodable(data: bytes, source: str, encoding: str | None, error: UnicodeDecodeError) -> Problem:
    offset = error.start
    line = data[:offset].count(b"\n") + 1
    found = f"byte 0x{data[offset]:02X} at byte offset {offset} (line {line})"
    if encoding is None:
        expected = "UTF-8 text (with or without a byte-order mark)"
        # NOTE: no guess at the real encoding: GB18030 accepts much Latin-1 text, so a guess would mislead.
        fix = (
            "re-save the file as UTF-8 (CSV UTF-8 in Excel), or pass its encoding with --clinical-encoding, "
            "e.g. --clinical-encoding gb18030 for a Chinese Excel export or cp1252 for a Western one"
        )
    else:
        expected = f"text in the {encoding} encoding given with --clinical-encoding"
        fix = "pass the file's real encoding to --clinical-encoding, or re-save the file as UTF-8"
    return _encoding_problem(f"{source}:{line}", found, expected, fix)


def _encoding_problem(where: str, found: str, expected: str, fix: str) -> Problem:
    return Problem(kind="bad_encoding", where=where, found=found, expected=expected, fix=fix)


def _bad_csv(where: str, found: str, expected: str, fix: str) -> Problem:
    return Problem(kind="bad_csv", where=where, found=found, expected=expected, fix=fix)


def _read_records(text: str, source: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Split the text into its header and its non-blank rows, each with the line it starts on."""
    delimiter = _sniff_delimiter(text, source)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as error:
        found = f"text the CSV reader cannot split into cells ({error})"
        fix = "save the sheet again as CSV, so that cells with quotes or line breaks are quoted properly"
        raise ReleaseError([_bad_csv(f"{source}:{line}", found, "a CSV file", fix)]) from None
    if not records:
        fix = "export the clinical sheet again, with its header row"
        raise ReleaseError([_bad_csv(f"{source}:1", "no header row", "a header row and a row per patient", fix)])
    (_, header), *rows = records
    return header, rows


def _sniff_delimiter(text: str, source: str) -> str:
    """Pick the delimiter from the header line: a comma, unless there is none but semicolons or tabs."""
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    delimiter = max(";\t", key=header.count)
    if header.count(delimiter) == 0:
        return ","
    logger.info("%s: the header has no comma; reading the file as %r-separated", source, delimiter)
    return delimiter


def _drop_ragged(
    header: list[str],
    records: list[tuple[int, list[str]]],
    source: str,
    found: list[tuple[int, Problem]],
) -> list[tuple[int, list[str]]]:
    """Keep the rows with as many fields as the header; list the others as "bad_csv"."""
    kept = []
    for line, cells in records:
        if len(cells) == len(header):
            kept.append((line, cells))
            continue
        problem = _bad_csv(
            f"{source}:{line}",
            f"{len(cells)} field(s) in a row starting {cells[0]!r}",
            f"{len(header)} fields, as in the header",
            "quote cells that hold the delimiter (saving the sheet again as CSV does this), "
            "or pass --skip-invalid to leave the row out and list it in the report",
        )
        found.append((line, problem))
    return kept


def _drop_blank_columns(
    header: list[str],
    records: list[tuple[int, list[str]]],
    source: str,
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Leave out columns with neither a header nor any value, as a trailing delimiter makes."""
    keep = [
        position
        for position, name in enumerate(header)
        if name.strip() or any(not _is_missing(cells[position]) for _, cells in records)
    ]
    if len(keep) < len(header):
        logger.info("%s: left out %d column(s) with no header and no values", source, len(header) - len(keep))
    return [header[i] for i in keep], [(line, [cells[i] for i in keep]) for line, cells in records]


def _no_patient_column(source: str, header: list[str]) -> Problem:
    aliases = ", ".join(COLUMN_ALIASES["patient_id"])
    return _bad_csv(
        f"{source}:1",
        f"the headers {header!r}",
        f"a patient id column (a header that reads as one of {aliases}, ignoring case and punctuation)",
        "name the patient id column 'Patient ID', or remove any title rows above the header",
    )


def _log_columns(source: str, names: Mapping[str, str]) -> None:
    extras = [header for header, name in names.items() if name not in _ARROW_TYPES]
    absent = [name for name in CANONICAL_COLUMNS if name not in names.values()]
    if extras:
        logger.info("%s: kept %d column(s) with no known meaning as text: %s", source, len(extras), extras)
    if absent:
        logger.warning("%s: no column for %s; these will be empty for every patient", source, absent)


def _is_missing(cell: str) -> bool:
    return cell.strip().casefold() in MISSING_VALUES


def _read_row(
    cells: Mapping[str, str],
    header_of: Mapping[str, str],
    at: tuple[str, int],
    line_of: Mapping[str, int],
    found: list[tuple[int, Problem]],
) -> dict[str, object] | None:
    """Read one row's cells into values, appending a problem per bad cell; None if the row must be left out.

    Args:
        cells: Output column -> the cell's text.
        header_of: Output column -> its header as found, for messages.
        at: The file's name and the line the row starts on.
        line_of: The lines of the patients read so far, to find a repeated id.
        found: Where to append (line, problem) pairs.
    """
    source, line = at
    where = f"{source}:{line}"
    patient_id = cells["patient_id"].strip()
    if _is_missing(patient_id):
        found.append((line, _missing_patient(where, header_of["patient_id"], patient_id)))
        return None
    if patient_id in line_of:
        found.append((line, _duplicate_patient(at, patient_id, line_of[patient_id])))
        return None
    row: dict[str, object] = {}
    for name, cell in cells.items():
        if _is_missing(cell):
            continue
        rule = _RULES.get(name)
        value = rule.parse(cell) if rule else cell.strip()
        if value is None and rule is not None:
            found.append((line, _bad_value(where, header_of[name], name, cell, rule.accepted)))
            continue
        row[name] = value
    return row


def _missing_patient(where: str, header: str, cell: str) -> Problem:
    return Problem(
        kind="bad_value",
        where=where,
        found=f"{cell!r} in column {header!r} (patient_id)",
        expected="a non-empty patient id",
        fix="fill in the patient id, or pass --skip-invalid to leave the row out and list it in the report",
    )


def _duplicate_patient(at: tuple[str, int], patient_id: str, first_line: int) -> Problem:
    source, line = at
    return Problem(
        kind="duplicate_patient",
        where=f"{source}:{line}",
        found=f"patient id {patient_id!r} again (its first row is line {first_line})",
        expected="one row per patient",
        fix=(
            f"merge or remove one of lines {first_line} and {line}, "
            "or pass --skip-invalid to keep the first row and list this one in the report"
        ),
    )


def _bad_value(where: str, header: str, column: str, cell: str, accepted: str) -> Problem:
    shown = cell if len(cell) <= 60 else cell[:57] + "..."
    return Problem(
        kind="bad_value",
        where=where,
        found=f"{shown!r} in column {header!r} ({column})",
        expected=f"{column} to be {accepted}",
        fix=(
            "correct the cell, or pass --skip-invalid to keep the row "
            f"with {column} empty and list the value in the report"
        ),
    )


def _build_frame(rows: list[dict[str, object]], extras: list[str]) -> pd.DataFrame:
    """Lay the rows out as columns of nullable dtypes, canonical columns first."""
    types = clinical_arrow_types(extras)
    columns = {
        name: pd.array([row.get(name) for row in rows], dtype=_PANDAS_DTYPES[arrow_type])
        for name, arrow_type in types.items()
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))
