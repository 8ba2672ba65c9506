"""Tests for reading the clinical CSV: header aliases, value normalisation, encodings and problems."""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa
import pytest

from hmu_crc import clinical
from hmu_crc.clinical import (
    CANONICAL_COLUMNS,
    COLUMN_ALIASES,
    clinical_arrow_types,
    match_columns,
    normalize_header,
    parse_clinical,
)
from hmu_crc.problems import ReleaseError

SOURCE = "HMU CRC Clinical.csv"
SAMPLE_HEADER = (
    "Patient ID,Sex,Age,T,N,M,TNM Stage,Treatment History,Survival Time (months),Survival Status,Tumor Location"
)


OUTPUT_OF = {
    "sex": "sex",
    "age": "age",
    "t": "t_stage",
    "n": "n_stage",
    "m": "m_stage",
    "tnm": "tnm_stage",
    "treatment": "treatment",
    "os": "os_months",
    "status": "os_event",
    "location": "tumor_location",
}
"""The keys of `sample_row`'s cells -> their output column."""


def csv_bytes(*rows: str, header: str = SAMPLE_HEADER, encoding: str = "utf-8") -> bytes:
    return "\n".join((header, *rows, "")).encode(encoding)


def sample_row(patient_id: str = "P001", **cells: str) -> str:
    """One row of the sample's layout, with a good value in every column unless overridden."""
    values = {
        "sex": "Male",
        "age": "63",
        "t": "T3",
        "n": "N1",
        "m": "M0",
        "tnm": "IIIB",
        "treatment": "Surgery",
        "os": "24",
        "status": "Alive",
        "location": "Sigmoid colon",
    }
    values.update(cells)
    return ",".join((patient_id, *values.values()))


def test_sample_headers_map_to_the_canonical_columns():
    names = match_columns(SAMPLE_HEADER.split(","))

    assert list(names.values()) == [*CANONICAL_COLUMNS, "tumor_location"]


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("  PATIENT_ID ", "patient_id"),
        ("patient-no.", "patient_id"),
        ("GENDER", "sex"),
        ("Age at diagnosis", "age"),
        ("pT", "t_stage"),
        ("Lymph node stage", "n_stage"),
        ("Distant metastasis", "m_stage"),
        ("AJCC stage", "tnm_stage"),
        ("therapy", "treatment"),
        ("OS (months)", "os_months"),
        ("Follow-up months", "os_months"),
        ("Vital_Status", "os_event"),
        ("性别", "sex"),
    ],
)
def test_headers_match_ignoring_case_spaces_and_punctuation(header: str, column: str):
    assert match_columns([header]) == {header: column}


def test_normalize_header_drops_everything_but_letters_and_digits():
    assert normalize_header("Survival Time (months)") == "survivaltimemonths"


def test_unmatched_columns_are_kept_as_text_under_a_snake_case_name():
    data = csv_bytes(sample_row(location="Rectum"))

    table = parse_clinical(data, SOURCE)

    assert list(table.frame.columns) == [*CANONICAL_COLUMNS, "tumor_location"]
    assert table.frame.loc[0, "tumor_location"] == "Rectum"


def test_two_headers_for_one_column_are_refused_naming_both():
    with pytest.raises(ReleaseError) as caught:
        match_columns(["Patient ID", "Sex", "Gender"])

    assert "'Sex'" in str(caught.value)
    assert "'Gender'" in str(caught.value)
    assert caught.value.problems[0].kind == "bad_csv"


def test_no_alias_belongs_to_two_columns():
    aliases = [alias for names in COLUMN_ALIASES.values() for alias in names]

    assert len(aliases) == len(set(aliases))
    assert all(alias == normalize_header(alias) for alias in aliases)
    assert set(COLUMN_ALIASES) == set(CANONICAL_COLUMNS)


def test_an_ambiguous_alias_table_is_refused():
    with pytest.raises(ValueError, match="'stage'"):
        clinical._alias_index({"tnm_stage": ("stage",), "t_stage": ("stage",)})


@pytest.mark.parametrize(
    ("column", "cell", "value"),
    [
        ("sex", "M", "male"),
        ("sex", "female", "female"),
        ("sex", "男", "male"),
        ("sex", "女", "female"),
        ("age", "63.0", 63),
        ("age", " 63 ", 63),
        ("t", "3", "T3"),
        ("t", "pT3", "T3"),
        ("t", "t4A", "T4a"),
        ("t", "T4 a", "T4a"),
        ("t", "tis", "Tis"),
        ("t", "x", "TX"),
        ("n", "pN1b", "N1b"),
        ("n", "0", "N0"),
        ("n", "nx", "NX"),
        ("m", "cM0", "M0"),
        ("m", "m1C", "M1c"),
        ("tnm", "Stage IIIB", "IIIB"),
        ("tnm", "3", "III"),
        ("tnm", "3b", "IIIB"),
        ("tnm", "iii b", "IIIB"),
        ("tnm", "0", "0"),
        ("tnm", "Ⅳ", "IV"),
        ("treatment", "  Surgery + FOLFOX ", "Surgery + FOLFOX"),
        ("os", "24.5", 24.5),
        ("os", "0", 0.0),
        ("status", "Dead", 1),
        ("status", "censored", 0),
        ("status", "deceased", 1),
        ("status", "TRUE", 1),
        ("status", "no", 0),
        ("status", "1", 1),
    ],
)
def test_values_are_normalised(column: str, cell: str, value: object):
    table = parse_clinical(csv_bytes(sample_row(**{column: cell})), SOURCE)

    assert table.frame.loc[0, OUTPUT_OF[column]] == value


@pytest.mark.parametrize("cell", ["", "NA", "n/a", "nan", "-", "  "])
def test_missing_values_are_null_in_every_column(cell: str):
    cells = dict.fromkeys(OUTPUT_OF, cell)

    table = parse_clinical(csv_bytes(sample_row(**cells)), SOURCE)

    assert table.frame.loc[0, "patient_id"] == "P001"
    assert table.frame.drop(columns="patient_id").isna().all(axis=None)
    assert table.problems == []


def test_absent_canonical_columns_are_present_and_null():
    table = parse_clinical(csv_bytes("P001,63", header="id,age"), SOURCE)

    assert list(table.frame.columns) == list(CANONICAL_COLUMNS)
    assert table.frame["os_months"].isna().all()
    assert table.frame.loc[0, "age"] == 63


@pytest.mark.parametrize(
    ("column", "header", "cell"),
    [
        ("sex", "Sex", "X"),
        ("age", "Age", "sixty"),
        ("age", "Age", "63.5"),
        ("t", "T", "T9"),
        ("n", "N", "N4"),
        ("m", "M", "M2"),
        ("tnm", "TNM Stage", "V"),
        ("os", "Survival Time (months)", "-3"),
        ("status", "Survival Status", "maybe"),
    ],
)
def test_a_bad_value_raises_naming_line_column_value_and_fix(column: str, header: str, cell: str):
    data = csv_bytes(sample_row("P001"), sample_row("P002", **{column: cell}))

    with pytest.raises(ReleaseError) as caught:
        parse_clinical(data, SOURCE)

    message = str(caught.value)
    assert f"{SOURCE}:3" in message
    assert repr(header) in message
    assert repr(cell) in message
    assert "--skip-invalid" in message
    assert [problem.kind for problem in caught.value.problems] == ["bad_value"]


def test_every_bad_cell_is_raised_at_once():
    data = csv_bytes(sample_row("P001", age="old"), sample_row("P002", t="T9"))

    with pytest.raises(ReleaseError) as caught:
        parse_clinical(data, SOURCE)

    assert [problem.where for problem in caught.value.problems] == [f"{SOURCE}:2", f"{SOURCE}:3"]


def test_report_mode_keeps_the_row_with_the_bad_cell_empty_and_lists_it():
    data = csv_bytes(sample_row("P001", t="T9"))

    table = parse_clinical(data, SOURCE, on_invalid="report")

    assert table.frame.loc[0, "patient_id"] == "P001"
    assert pd.isna(table.frame.loc[0, "t_stage"])
    assert table.frame.loc[0, "n_stage"] == "N1"
    assert [(problem.kind, problem.where) for problem in table.problems] == [("bad_value", f"{SOURCE}:2")]
    assert "'T9'" in table.problems[0].found


def test_line_of_gives_each_patients_line_in_the_file():
    data = csv_bytes(sample_row("P001"), "", sample_row("P002"))

    table = parse_clinical(data, SOURCE)

    assert table.line_of == {"P001": 2, "P002": 4}


def test_a_line_break_inside_a_quoted_cell_keeps_later_lines_right():
    data = csv_bytes(sample_row("P001", treatment='"Surgery\nthen FOLFOX"'), sample_row("P002", age="old"))

    with pytest.raises(ReleaseError) as caught:
        parse_clinical(data, SOURCE)

    assert caught.value.problems[0].where == f"{SOURCE}:4"


def test_a_byte_order_mark_is_dropped_from_the_first_header(caplog: pytest.LogCaptureFixture):
    header = SAMPLE_HEADER.replace("Patient ID", '"Patient ID"')
    data = b"\xef\xbb\xbf" + csv_bytes(sample_row(), sample_row(""), header=header)

    with caplog.at_level(logging.INFO, logger="hmu_crc.clinical"):
        table = parse_clinical(data, SOURCE, on_invalid="report")

    assert table.frame.loc[0, "patient_id"] == "P001"
    assert "in column 'Patient ID'" in table.problems[0].found
    assert "byte-order mark" in caplog.text


@pytest.mark.parametrize(("encoding", "cell"), [("gb18030", "男"), ("latin-1", "Sigmoïd colon")])
def test_bytes_that_are_not_utf8_are_refused_with_offset_and_hint(encoding: str, cell: str):
    data = csv_bytes(sample_row(location=cell), encoding=encoding)
    offset = next(index for index, byte in enumerate(data) if byte >= 0x80)

    with pytest.raises(ReleaseError) as caught:
        parse_clinical(data, SOURCE, on_invalid="report")

    message = str(caught.value)
    assert caught.value.problems[0].kind == "bad_encoding"
    assert f"byte offset {offset}" in message
    assert f"{SOURCE}:2" in message
    assert "--clinical-encoding gb18030" in message


def test_a_given_encoding_is_honoured():
    data = csv_bytes(sample_row(sex="男"), encoding="gb18030")

    table = parse_clinical(data, SOURCE, encoding="gb18030")

    assert table.frame.loc[0, "sex"] == "male"


def test_an_unknown_encoding_name_is_a_clear_error():
    with pytest.raises(ReleaseError, match="unknown encoding name 'gbk2'"):
        parse_clinical(csv_bytes(sample_row()), SOURCE, encoding="gbk2")


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_delimiters_are_sniffed(delimiter: str):
    data = csv_bytes(
        sample_row(treatment="Surgery").replace(",", delimiter),
        header=SAMPLE_HEADER.replace(",", delimiter),
    )

    table = parse_clinical(data, SOURCE)

    assert table.frame.loc[0, "t_stage"] == "T3"
    assert table.frame.loc[0, "tumor_location"] == "Sigmoid colon"


def test_a_repeated_patient_id_names_both_lines():
    data = csv_bytes(sample_row("P001"), sample_row("P002"), sample_row(" P001 "))

    with pytest.raises(ReleaseError) as caught:
        parse_clinical(data, SOURCE)

    problem = caught.value.problems[0]
    assert problem.kind == "duplicate_patient"
    assert problem.where == f"{SOURCE}:4"
    assert "line 2" in problem.found


def test_report_mode_keeps_the_first_row_of_a_repeated_patient():
    data = csv_bytes(sample_row("P001", age="50"), sample_row("P001", age="70"))

    table = parse_clinical(data, SOURCE, on_invalid="report")

    assert table.frame["age"].tolist() == [50]
    assert [problem.kind for problem in table.problems] == ["duplicate_patient"]


def test_report_mode_leaves_out_a_row_without_patient_id():
    data = csv_bytes(sample_row("P001"), sample_row("NA"))

    table = parse_clinical(data, SOURCE, on_invalid="report")

    assert table.frame["patient_id"].tolist() == ["P001"]
    assert [(problem.kind, problem.where) for problem in table.problems] == [("bad_value", f"{SOURCE}:3")]


def test_a_ragged_row_is_a_csv_problem():
    data = csv_bytes(sample_row("P001"), sample_row("P002", treatment="Surgery, FOLFOX"))

    with pytest.raises(ReleaseError) as caught:
        parse_clinical(data, SOURCE)

    problem = caught.value.problems[0]
    assert (problem.kind, problem.where) == ("bad_csv", f"{SOURCE}:3")
    assert "12 field(s)" in problem.found


def test_a_file_without_a_patient_id_column_is_refused():
    with pytest.raises(ReleaseError, match="patient id column"):
        parse_clinical(csv_bytes("male,63", header="Sex,Age"), SOURCE, on_invalid="report")


def test_the_frame_converts_to_the_arrow_types_it_promises():
    data = csv_bytes(sample_row("P001"), sample_row("P002", age="", os="", status=""))

    table = parse_clinical(data, SOURCE)
    schema = pa.Table.from_pandas(table.frame, preserve_index=False).schema

    expected = clinical_arrow_types(["tumor_location"])
    assert {name: str(schema.field(name).type) for name in schema.names} == {
        name: {"float32": "float"}.get(kind, kind) for name, kind in expected.items()
    }
    assert list(table.frame.index) == [0, 1]


def test_an_empty_table_still_has_typed_columns():
    table = parse_clinical(csv_bytes(), SOURCE)

    schema = pa.Table.from_pandas(table.frame, preserve_index=False).schema
    assert str(schema.field("age").type) == "int32"
    assert len(table.frame) == 0
