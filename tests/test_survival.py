"""`hmu-crc survival`: per-patient composition, Kaplan-Meier with log-rank, Cox, and their inputs and outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hmu_crc.cli import main
from hmu_crc.composition import (
    join_clinical,
    load_clinical,
    patient_composition,
    read_patient_map,
    read_predictions,
)
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.release import DEFAULT_PATIENT_PATTERN
from hmu_crc.sample import CLINICAL_CSV_NAME
from hmu_crc.survival import (
    SurvivalOptions,
    cox_classes,
    cox_design,
    fit_cox,
    run_survival,
    split_by_fraction,
    stage_group,
)

FRACTIONS = [f"frac_{name}" for name in CLASS_NAMES]


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _oracle_predictions(release: Path, path: Path, drop: str | None = None, extra: int = 0) -> Path:
    """A `predict`-shaped CSV of the release's tiles, each predicted as its folder's class."""
    rows = [
        [str(tile), tile.parent.name]
        for tile in sorted(release.glob("*/*.png"))
        if drop is None or drop not in tile.name
    ]
    rows += [[f"/elsewhere/TUM/P9999_TUM_{i:05d}.png", "TUM"] for i in range(extra)]
    return _write_csv(path, ["file", "predicted"], rows)


# --- composition -------------------------------------------------------------------------------------------------


def test_composition_counts_and_fractions(tmp_path: Path) -> None:
    rows = [
        ["slides/TUM/A01_TUM_00001.png", "TUM"],
        ["slides/TUM/A01_TUM_00002.png", "TUM"],
        ["slides/STR/A01_STR_00003.png", "STR"],
        ["slides/LYM/A01_LYM_00004.png", "lym"],  # any case
        ["slides/ADI/B02_ADI_00001.png", "ADI"],
        ["slides/ADI/B02_ADI_00002.png", "ADI"],
        ["slides/ADI/B02_ADI_00001.png", "ADI"],  # the same tile again: counted once
    ]
    path = _write_csv(tmp_path / "predictions.csv", ["file", "predicted"], rows)
    tiles = read_predictions([path], patient_pattern=DEFAULT_PATIENT_PATTERN)
    table = patient_composition(tiles.frame)

    assert tiles.duplicates == 1
    assert list(table.index) == ["A01", "B02"]
    assert list(table.columns) == ["n_tiles", *(f"count_{c}" for c in CLASS_NAMES), *FRACTIONS]
    assert table.loc["A01", "n_tiles"] == 4 and table.loc["B02", "n_tiles"] == 2
    assert table.loc["A01", ["count_TUM", "count_STR", "count_LYM", "count_ADI"]].tolist() == [2, 1, 1, 0]
    assert table.loc["A01", "frac_TUM"] == pytest.approx(0.5)
    assert table.loc["A01", "frac_STR"] == table.loc["A01", "frac_LYM"] == pytest.approx(0.25)
    assert table.loc["B02", "frac_ADI"] == pytest.approx(1.0)
    assert table[FRACTIONS].sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0])


def test_probabilities_stand_in_for_predicted_and_evaluate_file_names_work(tmp_path: Path) -> None:
    probabilities = np.eye(len(CLASS_NAMES))[[7, 7, 6]] * 0.9 + 0.1 / len(CLASS_NAMES)
    frame = pd.DataFrame(probabilities, columns=[f"prob_{c}" for c in CLASS_NAMES])
    frame.insert(0, "label", ["TUM", "TUM", "STR"])
    frame.insert(0, "file_name", ["TUM/C03_TUM_00001.png", "TUM/C03_TUM_00002.png", "STR/D04_STR_00001.png"])
    frame.to_csv(tmp_path / "validation_predictions.csv", index=False)
    tiles = read_predictions([tmp_path / "validation_predictions.csv"], patient_pattern=DEFAULT_PATIENT_PATTERN)
    table = patient_composition(tiles.frame)
    assert table["n_tiles"].to_dict() == {"C03": 2, "D04": 1}
    assert table.loc["C03", "frac_TUM"] == 1.0 and table.loc["D04", "frac_STR"] == 1.0

    # A map of file names replaces the pattern; a bare file name matches a tile in any folder.
    rows = [["TUM/C03_TUM_00001.png", "X"], ["C03_TUM_00002.png", "X"], ["STR/D04_STR_00001.png", "Y"]]
    mapping = read_patient_map(_write_csv(tmp_path / "map.csv", ["file_name", "patient_id"], rows))
    tiles = read_predictions(
        [tmp_path / "validation_predictions.csv"], patient_pattern=DEFAULT_PATIENT_PATTERN, patient_map=mapping
    )
    assert patient_composition(tiles.frame)["n_tiles"].to_dict() == {"X": 2, "Y": 1}


def _slide(folder: Path, predicted: list[str], report_slide: str | None = None) -> Path:
    folder.mkdir(parents=True)
    path = folder / "tile_predictions.parquet"
    pq.write_table(pa.table({"x": list(range(len(predicted))), "predicted": predicted}), path)
    if report_slide:
        (folder / "class_fractions.json").write_text(json.dumps({"slide": report_slide}))
    return path


def test_slide_parquet_files_by_folder_report_and_map(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    _slide(slides / "P0001_map", ["TUM", "STR", "STR", "ADI"])
    _slide(slides / "anything", ["LYM"], report_slide="/scans/P0002.svs")
    tiles = read_predictions([slides], patient_pattern=DEFAULT_PATIENT_PATTERN)
    table = patient_composition(tiles.frame)
    assert table["n_tiles"].to_dict() == {"P0001": 4, "P0002": 1}
    assert table.loc["P0001", "frac_STR"] == pytest.approx(0.5)

    # Two slides of one patient through the map: their tiles are pooled.
    mapping = _write_csv(tmp_path / "map.csv", ["slide", "patient_id"], [["P0001", "X1"], ["P0002", "X1"]])
    tiles = read_predictions([slides], patient_pattern=DEFAULT_PATIENT_PATTERN, patient_map=read_patient_map(mapping))
    table = patient_composition(tiles.frame)
    assert table["n_tiles"].to_dict() == {"X1": 5}
    assert table.loc["X1", "frac_STR"] == pytest.approx(0.4)


def test_unmatched_patients_are_listed_not_dropped() -> None:
    composition = pd.DataFrame({"n_tiles": [3, 2]}, index=pd.Index(["A", "B"], name="patient_id"))
    clinical = pd.DataFrame({"patient_id": ["B", "C"], "age": [60, 70]})
    cohort = join_clinical(composition, clinical)
    assert cohort.without_clinical == ["A"] and cohort.without_predictions == ["C"]
    assert cohort.table["has_clinical"].to_dict() == {"A": False, "B": True}
    assert cohort.table.loc["B", "age"] == 60


# --- statistics on simulated cohorts -----------------------------------------------------------------------------


def _simulated_cohort(seed: int, log_hr_per_10pp: float, patients: int = 300) -> pd.DataFrame:
    """Random tissue mixes and clinical rows; the hazard rises by exp(log_hr_per_10pp) per 10 points of stroma."""
    rng = np.random.default_rng(seed)
    fractions = rng.dirichlet(np.ones(len(CLASS_NAMES)), size=patients)
    table = pd.DataFrame(fractions, columns=FRACTIONS, index=[f"S{i:04d}" for i in range(patients)])
    hazard = np.exp(log_hr_per_10pp * table["frac_STR"] / 0.1) / 60
    death = rng.exponential(1 / hazard)
    follow_up = rng.uniform(24, 120, size=patients)
    return table.assign(
        os_months=np.minimum(death, follow_up),
        os_event=(death <= follow_up).astype(int),
        age=rng.integers(35, 85, size=patients),
        sex=rng.choice(["male", "female"], size=patients),
        tnm_stage=rng.choice(["I", "IIA", "IIIB", "IVA"], size=patients),
    )


def _cox(table: pd.DataFrame) -> pd.DataFrame:
    design, covariates, _, _ = cox_design(table, cox_classes(None, "TUM"))
    result = fit_cox(design, covariates)
    assert result.penalizer == 0.0  # enough events per covariate for an unpenalised fit
    return result.table.set_index("covariate")


def test_rising_hazard_with_stroma_is_found() -> None:
    table = _simulated_cohort(seed=1, log_hr_per_10pp=0.7)
    split = split_by_fraction(table, "STR", "median")
    assert split.p_value < 0.001
    high, low = split.groups.values()
    assert high["os_event"].mean() > low["os_event"].mean()
    stroma = _cox(table).loc["frac_STR"]
    assert stroma["hazard_ratio"] > 1.5 and stroma["hr_lower_95"] > 1 and stroma["p_value"] < 0.001


def test_no_effect_is_not_significant() -> None:
    table = _simulated_cohort(seed=2, log_hr_per_10pp=0.0)
    assert split_by_fraction(table, "STR", "median").p_value > 0.05
    stroma = _cox(table).loc["frac_STR"]
    assert stroma["hr_lower_95"] < 1 < stroma["hr_upper_95"] and stroma["p_value"] > 0.05


def test_cox_design_scales_encodes_and_drops_what_it_cannot_use() -> None:
    table = pd.DataFrame(
        {
            "frac_STR": [0.1, 0.2, 0.3, 0.4],
            "frac_LYM": [0.5, 0.1, 0.2, 0.0],
            "age": pd.array([60, None, 70, 85], dtype="Int32"),
            "sex": ["male", "female", "male", "male"],
            "tnm_stage": ["I", "IIIB", "IVA", "IIA"],
            "os_months": [10.0, 20.0, 30.0, 40.0],
            "os_event": [1, 0, 1, 0],
        },
        index=["A", "B", "C", "D"],
    )
    design, covariates, dropped, dropped_patients = cox_design(table, ["STR", "LYM"])
    # B has no age; without B everyone is male, so sex cannot be estimated.
    assert dropped_patients == ["B"] and list(dropped) == ["sex_male"]
    assert [c.name for c in covariates] == ["frac_STR", "frac_LYM", "age", "stage_group"]
    assert "in place of ADI, DEB, MUC, MUS, NORM, TUM" in covariates[0].unit
    assert design.loc["A"].tolist() == pytest.approx([1.0, 5.0, 6.0, 1.0, 10.0, 1.0])
    assert design["stage_group"].tolist() == [1.0, 4.0, 2.0]
    assert [stage_group(s) for s in ("0", "I", "IIC", "III", "IVB", None, "V")] == pytest.approx(
        [0, 1, 2, 3, 4, np.nan, np.nan], nan_ok=True
    )


# --- end to end ---------------------------------------------------------------------------------------------------


def _check_outputs(out: Path, split_by: str = "STR") -> dict:
    summary = json.loads((out / "summary.json").read_text())
    composition = pd.read_csv(out / "composition.csv", index_col="patient_id")
    assert composition[FRACTIONS].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)
    cox = pd.read_csv(out / "cox.csv")
    assert {"covariate", "hazard_ratio", "hr_lower_95", "hr_upper_95", "p_value"} <= set(cox.columns)
    assert (cox["hr_lower_95"] <= cox["hazard_ratio"]).all() and (cox["hazard_ratio"] <= cox["hr_upper_95"]).all()
    logrank = json.loads((out / f"logrank_{split_by}.json").read_text())
    assert 0 <= logrank["p_value"] <= 1 and sum(g["patients"] for g in logrank["groups"].values()) > 1
    for picture in (f"km_{split_by}.png", "cox_forest.png"):
        with Image.open(out / picture) as image:
            assert image.format == "PNG" and image.width > 300
    assert 0 <= summary["cox"]["concordance"] <= 1
    return summary


def test_survival_end_to_end_on_the_demo_models_predictions(
    trained_demo: tuple[Path, dict],
    sample_release: Path,
    prepared_sample: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, _ = trained_demo
    predictions = tmp_path / "predictions.csv"
    folders = [str(sample_release / name) for name in CLASS_NAMES]
    assert main(["predict", "--model", str(model), *folders, "--output", str(predictions), "--num-workers", "0"]) == 0
    out = tmp_path / "survival"
    args = ["--predictions", str(predictions), "--clinical", str(prepared_sample), "--output-dir", str(out)]
    assert main(["survival", *args]) == 0

    summary = _check_outputs(out)
    assert summary["counts"]["tiles"] == 8 * 24 and summary["counts"]["patients_analysed"] == 12
    assert summary["synthetic"] is True and "SYNTHETIC DATA" in summary["caution"][0]
    assert load_clinical(prepared_sample).synthetic  # the prepared card alone says so
    assert any("too few" in caution for caution in summary["caution"])
    printed = capsys.readouterr().out
    assert "CAUTION: SYNTHETIC DATA" in printed and str(out / "summary.json") in printed


def test_survival_from_the_clinical_csv_lists_the_unmatched(sample_release: Path, tmp_path: Path) -> None:
    predictions = _oracle_predictions(sample_release, tmp_path / "predictions.csv", drop="P0012_", extra=3)
    options = SurvivalOptions(
        predictions=(predictions,),
        clinical=sample_release / CLINICAL_CSV_NAME,
        output_dir=tmp_path / "out",
        split_by="tum",
        threshold=0.2,
    )
    report = run_survival(options)
    summary = _check_outputs(report.output_dir, "TUM")
    assert summary["patients_without_clinical_row"] == ["P9999"]
    assert summary["clinical_rows_without_predictions"] == ["P0012"]
    assert summary["counts"]["patients_analysed"] == 11
    assert summary["kaplan_meier"]["threshold"] == 0.2 and summary["synthetic"] is True
    unmatched = pd.read_csv(report.files["unmatched"])
    assert dict(zip(unmatched["patient_id"], unmatched["reason"], strict=True)) == {
        "P9999": "predictions but no clinical row",
        "P0012": "clinical row but no predicted tiles",
    }
    composition = pd.read_csv(report.files["composition"], index_col="patient_id")
    assert not composition.loc["P9999", "has_clinical"] and composition.loc["P9999", "frac_TUM"] == 1.0


# --- bad input ---------------------------------------------------------------------------------------------------


def test_predictions_without_the_needed_columns(tmp_path: Path) -> None:
    no_class = _write_csv(tmp_path / "a.csv", ["file", "class"], [["TUM/P1_TUM_0.png", "TUM"]])
    with pytest.raises(ValueError, match=r"a\.csv: expected a 'predicted' column or the columns prob_ADI"):
        read_predictions([no_class], patient_pattern=DEFAULT_PATIENT_PATTERN)
    no_tile = _write_csv(tmp_path / "b.csv", ["label", "predicted"], [["TUM", "TUM"]])
    with pytest.raises(ValueError, match=r"b\.csv: expected a patient_id column or a tile path"):
        read_predictions([no_tile], patient_pattern=DEFAULT_PATIENT_PATTERN)
    odd_class = _write_csv(tmp_path / "c.csv", ["file", "predicted"], [["TUM/P1_TUM_0.png", "BACK"]])
    with pytest.raises(ValueError, match=r"c\.csv:2 \('BACK'\)"):
        read_predictions([odd_class], patient_pattern=DEFAULT_PATIENT_PATTERN)
    class_as_patient = _write_csv(tmp_path / "d.csv", ["file", "predicted"], [["TUM/TUM_0001.png", "TUM"]])
    with pytest.raises(ValueError, match=r"found none \(or a class code\) for 1 tile\(s\): .*d\.csv:2"):
        read_predictions([class_as_patient], patient_pattern=DEFAULT_PATIENT_PATTERN)


def test_patients_matching_no_clinical_row(sample_release: Path, tmp_path: Path) -> None:
    predictions = _write_csv(tmp_path / "p.csv", ["file", "predicted"], [["x/Z01_TUM_0.png", "TUM"]])
    options = SurvivalOptions((predictions,), sample_release / CLINICAL_CSV_NAME, tmp_path / "out")
    with pytest.raises(ValueError, match=r"no patient with predictions has a clinical row: .* Z01 .* P0001"):
        run_survival(options)


def test_split_class_must_be_one_of_the_eight(
    sample_release: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match=r"split_by: expected one of the tissue classes ADI, .*, found 'BACK'"):
        SurvivalOptions((tmp_path / "p.csv",), tmp_path, split_by="BACK")
    with pytest.raises(ValueError, match="cox_classes: expected at most seven classes"):
        SurvivalOptions((tmp_path / "p.csv",), tmp_path, cox_classes=CLASS_NAMES)
    with pytest.raises(ValueError, match="threshold: expected 'median' or a fraction from 0 to 1"):
        SurvivalOptions((tmp_path / "p.csv",), tmp_path, threshold="1.5")
    predictions = _oracle_predictions(sample_release, tmp_path / "p.csv")
    args = ["--predictions", str(predictions), "--clinical", str(sample_release), "--output-dir", str(tmp_path)]
    assert main(["survival", *args, "--split-by", "XYZ"]) == 2
    assert "found 'XYZ'" in caplog.text


def test_a_split_with_an_empty_group_and_a_cox_model_without_events_are_refused() -> None:
    table = _simulated_cohort(seed=4, log_hr_per_10pp=0.0, patients=20)
    with pytest.raises(ValueError, match=r"expected patients on both sides, found all 20 in the low"):
        split_by_fraction(table, "STR", 1.0)
    design, covariates, _, _ = cox_design(table.assign(os_event=0), ["STR"], ())
    with pytest.raises(ValueError, match=r"Cox model: expected at least one death .* found 0 death"):
        fit_cox(design, covariates)
