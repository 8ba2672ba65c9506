"""Overall survival against per-patient tissue composition: Kaplan-Meier with a log-rank test, and a Cox model."""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from hmu_crc.composition import (
    Cohort,
    join_clinical,
    load_clinical,
    patient_composition,
    read_patient_map,
    read_predictions,
)
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.release import DEFAULT_PATIENT_PATTERN

if TYPE_CHECKING:
    from lifelines import CoxPHFitter, KaplanMeierFitter

logger = logging.getLogger(__name__)

ClinicalCovariate = Literal["age", "sex", "stage"]
CLINICAL_COVARIATES: tuple[ClinicalCovariate, ...] = ("age", "sex", "stage")
"""Clinical covariates the Cox model can take beside the tissue fractions."""

DEFAULT_SPLIT_CLASS = "STR"
"""Split by stroma: a high stroma share (a low tumour-stroma ratio) is the best-known composition marker in CRC."""

DEFAULT_REFERENCE_CLASS = "TUM"
"""Left out of the Cox model, so each fraction's hazard ratio compares that tissue against tumour epithelium."""

FRACTION_STEP = 0.1
"""Cox hazard ratios of a fraction are per this much of the patient's tiles (10 percentage points)."""

AGE_STEP = 10
"""Cox hazard ratios of age are per this many years."""

STAGE_GROUPS = MappingProxyType({"0": 0, "I": 1, "II": 2, "III": 3, "IV": 4})
"""TNM stage group (its letter dropped) -> the ordinal number the Cox model takes."""

EVENTS_PER_COVARIATE = 10
"""Below this many events per Cox covariate the estimates are unstable; it also switches the auto penalizer on."""

AUTO_PENALIZER = 0.1
"""The ridge penalizer `penalizer="auto"` uses when events are fewer than EVENTS_PER_COVARIATE per covariate."""

MIN_PATIENTS = 50
"""Below this many analysed patients a caution says the cohort is too small for any conclusion."""

NOTES: tuple[str, ...] = (
    "Tissue fractions come from a classifier's tile predictions, so its errors carry into every number here.",
    "p-values are not adjusted for trying several classes, thresholds or covariate sets.",
    "The Cox concordance is measured on the patients the model was fitted on, so it is optimistic.",
)
"""Said in every summary, whatever the data."""

_SYNTHETIC_CAUTION = (
    "SYNTHETIC DATA: the clinical rows and tiles come from the bundled synthetic sample (`hmu-crc sample`). "
    "Its survival times were drawn from the stage alone and its tissue mix at random, so these curves, "
    "p-values and hazard ratios mean nothing; they only show that the pipeline runs."
)


@dataclass(frozen=True)
class SurvivalOptions:
    """What `run_survival` reads, how it groups and models, and where it writes."""

    predictions: tuple[Path, ...]
    """Prediction CSVs (`hmu-crc predict`, `<set>_predictions.csv`), per-slide Parquet files, or their folders."""
    clinical: Path
    """A prepared folder, a release folder, or the clinical CSV."""
    output_dir: Path = Path("survival")
    split_by: str = DEFAULT_SPLIT_CLASS
    """The class whose fraction splits patients into high and low groups for Kaplan-Meier."""
    threshold: float | Literal["median"] = "median"
    """Fractions above it are "high"; "median" takes the median over the analysed patients."""
    patient_pattern: str = DEFAULT_PATIENT_PATTERN
    patient_map: Path | None = None
    """CSV of patient_id with file_name and/or slide; replaces the pattern and slide names."""
    reference_class: str = DEFAULT_REFERENCE_CLASS
    cox_classes: tuple[str, ...] | None = None
    """Fractions in the Cox model; default every class but `reference_class`."""
    clinical_covariates: tuple[ClinicalCovariate, ...] = CLINICAL_COVARIATES
    penalizer: float | Literal["auto"] = "auto"
    """Ridge penalizer of the Cox fit; "auto" is 0 with enough events per covariate, else AUTO_PENALIZER."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "split_by", check_class(self.split_by, "split_by"))
        object.__setattr__(self, "reference_class", check_class(self.reference_class, "reference_class"))
        object.__setattr__(self, "threshold", parse_threshold(str(self.threshold)))
        object.__setattr__(self, "cox_classes", tuple(cox_classes(self.cox_classes, self.reference_class)))
        unknown = [c for c in self.clinical_covariates if c not in CLINICAL_COVARIATES]
        if unknown:
            msg = f"clinical_covariates: expected some of {', '.join(CLINICAL_COVARIATES)}, found {unknown}"
            raise ValueError(msg)
        if self.penalizer != "auto" and not (isinstance(self.penalizer, int | float) and self.penalizer >= 0):
            msg = f"penalizer: expected 'auto' or a number of 0 or more, found {self.penalizer!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class Covariate:
    """One column of the Cox model."""

    name: str
    unit: str
    """What a hazard ratio of this covariate compares, in words."""
    label: str
    """A short name for plots."""


@dataclass
class SplitResult:
    """Kaplan-Meier curves of the high and low groups of one class's fraction, and their log-rank test."""

    class_name: str
    threshold: float
    threshold_rule: str
    groups: dict[str, pd.DataFrame]
    """Group label -> its patients' os_months and os_event."""
    fitters: dict[str, KaplanMeierFitter]
    """Group label -> its fitted lifelines KaplanMeierFitter."""
    test_statistic: float
    p_value: float

    def as_dict(self) -> dict[str, object]:
        groups = {}
        for label, frame in self.groups.items():
            median = float(self.fitters[label].median_survival_time_)
            groups[label] = {
                "patients": len(frame),
                "events": int(frame["os_event"].sum()),
                "median_os_months": median if math.isfinite(median) else None,
            }
        return {
            "split_by": self.class_name,
            "fraction": f"frac_{self.class_name}",
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "groups": groups,
            "test": "log-rank (lifelines.statistics.logrank_test), high vs low",
            "test_statistic": self.test_statistic,
            "degrees_of_freedom": 1,
            "p_value": self.p_value,
        }


@dataclass
class CoxResult:
    """A fitted Cox model, its table of hazard ratios, and how it was set up."""

    fitter: CoxPHFitter
    covariates: list[Covariate]
    table: pd.DataFrame
    """One row per covariate: unit, hazard_ratio, hr_lower_95, hr_upper_95, p_value, coef, se_coef."""
    penalizer: float
    penalizer_reason: str
    patients: int
    events: int
    concordance: float
    dropped_covariates: dict[str, str] = field(default_factory=dict)
    """Covariate -> why it was left out of the model."""
    dropped_patients: list[str] = field(default_factory=list)
    """Patients left out for a missing covariate."""
    warnings: list[str] = field(default_factory=list)
    """What lifelines warned about while fitting."""

    def as_dict(self) -> dict[str, object]:
        return {
            "model": "Cox proportional hazards (lifelines.CoxPHFitter), overall survival in months",
            "covariates": [{"name": c.name, "unit": c.unit} for c in self.covariates],
            "patients": self.patients,
            "events": self.events,
            "penalizer": self.penalizer,
            "penalizer_reason": self.penalizer_reason,
            "concordance": self.concordance,
            "dropped_covariates": self.dropped_covariates,
            "patients_dropped_for_missing_covariates": self.dropped_patients,
            "fit_warnings": self.warnings,
        }


@dataclass
class SurvivalReport:
    """What `run_survival` wrote, and the cautions that go with it."""

    output_dir: Path
    files: dict[str, Path]
    cautions: list[str]
    summary: dict[str, object]


def check_class(name: str, what: str) -> str:
    """The class code `name` names (in any case).

    Raises:
        ValueError: If it is not one of the eight tissue classes.
    """
    found = next((code for code in CLASS_NAMES if code.casefold() == str(name).strip().casefold()), None)
    if found is None:
        msg = f"{what}: expected one of the tissue classes {', '.join(CLASS_NAMES)}, found {name!r}; pass one of them"
        raise ValueError(msg)
    return found


def cox_classes(classes: tuple[str, ...] | None, reference: str) -> list[str]:
    """The classes whose fractions enter the Cox model: all but `reference` unless chosen.

    Raises:
        ValueError: For an unknown class, a repeat, or all eight (their fractions sum to one).
    """
    if classes is None:
        return [name for name in CLASS_NAMES if name != reference]
    chosen = [check_class(name, "cox_classes") for name in classes]
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"cox_classes: expected each class once, found {chosen}; remove the repeats")
    if len(chosen) == len(CLASS_NAMES):
        msg = (
            "cox_classes: expected at most seven classes, found all eight; their fractions sum to one, so the model "
            "cannot tell them apart; leave at least one class out as the reference"
        )
        raise ValueError(msg)
    return [name for name in CLASS_NAMES if name in chosen]


def parse_threshold(text: str) -> float | Literal["median"]:
    """Read `--threshold`: "median", or a fraction from 0 to 1.

    Raises:
        ValueError: For anything else.
    """
    if text.strip().casefold() == "median":
        return "median"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        msg = f"threshold: expected 'median' or a fraction from 0 to 1 (e.g. 0.25), found {text!r}"
        raise ValueError(msg)
    return value


def survival_table(cohort: Cohort) -> tuple[pd.DataFrame, list[str]]:
    """The patients with a clinical row, a survival time and an event flag, with those two as float and int.

    Returns:
        The table, and the patients with a clinical row left out for a missing time or event.

    Raises:
        ValueError: If the clinical rows have no survival columns, or fewer than two patients can be analysed.
    """
    table = cohort.table.loc[cohort.table["has_clinical"]]
    missing = [name for name in ("os_months", "os_event") if name not in table.columns or table[name].isna().all()]
    if missing:
        msg = (
            f"clinical rows: expected overall survival in months and an event flag (os_months, os_event), found no "
            f"values for {missing}; give the clinical CSV columns such as 'Survival Time (months)' and "
            "'Survival Status'"
        )
        raise ValueError(msg)
    # NOTE: rounded because a prepared folder stores months as float32 (33.9 reads back as 33.900001525878906).
    months = pd.to_numeric(table["os_months"], errors="coerce").astype(float).round(4)
    events = pd.to_numeric(table["os_event"], errors="coerce").astype(float)
    usable = months.notna() & events.notna()
    dropped = sorted(table.index[~usable])
    if dropped:
        logger.warning("%d patient(s) have no survival time or event and are left out: %s", len(dropped), dropped[:5])
    table = table.loc[usable].assign(os_months=months[usable], os_event=events[usable].astype(int))
    if len(table) < 2:
        msg = f"survival: expected at least two patients with predictions and survival data, found {len(table)}"
        raise ValueError(msg)
    return table, dropped


def split_by_fraction(table: pd.DataFrame, class_name: str, threshold: float | Literal["median"]) -> SplitResult:
    """Kaplan-Meier curves of patients above and at-or-below a threshold of one class's fraction, with a log-rank test.

    Raises:
        ValueError: If the class is unknown, or every patient falls on one side of the threshold.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    class_name = check_class(class_name, "split_by")
    fraction = table[f"frac_{class_name}"]
    cut = float(fraction.median()) if threshold == "median" else float(threshold)
    rule = "median over the analysed patients" if threshold == "median" else "given"
    high = fraction > cut
    if high.all() or not high.any():
        side = "high (above)" if high.all() else "low (at or below)"
        msg = (
            f"split_by {class_name} at threshold {cut:.4g} ({rule}): expected patients on both sides, found all "
            f"{len(table)} in the {side} group (frac_{class_name} from {fraction.min():.4g} to {fraction.max():.4g}); "
            "pass a --threshold inside that range or another --split-by class"
        )
        raise ValueError(msg)
    labels = {f"{class_name} high (> {cut:.3g})": high, f"{class_name} low (≤ {cut:.3g})": ~high}
    groups = {label: table.loc[mask, ["os_months", "os_event"]] for label, mask in labels.items()}
    fitters = {
        label: KaplanMeierFitter(label=label).fit(frame["os_months"], frame["os_event"])
        for label, frame in groups.items()
    }
    (high_frame, low_frame) = groups.values()
    test = logrank_test(high_frame["os_months"], low_frame["os_months"], high_frame["os_event"], low_frame["os_event"])
    logger.info(
        "log-rank test of %s high vs low: statistic %.3f, p = %.4g", class_name, test.test_statistic, test.p_value
    )
    return SplitResult(class_name, cut, rule, groups, fitters, float(test.test_statistic), float(test.p_value))


def stage_group(stage: object) -> float:
    """A TNM stage group as its ordinal number ("IIIB" -> 3, "0" -> 0); NaN when missing or unknown."""
    if stage is None or stage is pd.NA or (isinstance(stage, float) and math.isnan(stage)):
        return math.nan
    return float(STAGE_GROUPS.get(re.sub(r"[A-C]$", "", str(stage).strip().upper()), math.nan))


def cox_design(
    table: pd.DataFrame,
    classes: list[str],
    clinical_covariates: tuple[ClinicalCovariate, ...] = CLINICAL_COVARIATES,
) -> tuple[pd.DataFrame, list[Covariate], dict[str, str], list[str]]:
    """The Cox model's columns: scaled fractions of `classes`, then age, sex and stage as chosen.

    A fraction is counted in steps of FRACTION_STEP, age in steps of AGE_STEP years, sex as 1 for male and 0 for
    female, and stage as its ordinal group (0, I, II, III, IV; the letter dropped). A clinical covariate with no
    value for anyone is left out; so is any covariate with one value for everyone, which the model cannot use.
    Patients missing a kept covariate are left out.

    Returns:
        The design (covariates, os_months, os_event), the covariates, the dropped covariates with the reason,
        and the patients dropped for a missing value.
    """
    reference = ", ".join(name for name in CLASS_NAMES if name not in classes)
    step = round(FRACTION_STEP * 100)
    columns: dict[str, pd.Series] = {}
    covariates: list[Covariate] = []
    for name in classes:
        columns[f"frac_{name}"] = table[f"frac_{name}"].astype(float) / FRACTION_STEP
        unit = f"+{step} percentage points of the patient's tiles predicted {name}, in place of {reference}"
        covariates.append(Covariate(f"frac_{name}", unit, f"{name} (+{step} pp)"))
    encoders = {
        "age": (
            Covariate("age", f"+{AGE_STEP} years of age", f"age (+{AGE_STEP} y)"),
            lambda s: pd.to_numeric(s, errors="coerce") / AGE_STEP,
        ),
        "sex": (
            Covariate("sex_male", "male vs female", "male"),
            lambda s: s.map({"male": 1.0, "female": 0.0}).astype(float),
        ),
        "stage": (
            Covariate("stage_group", "+1 TNM stage group (0, I, II, III, IV)", "stage (+1 group)"),
            lambda s: s.map(stage_group).astype(float),
        ),
    }
    source = {"age": "age", "sex": "sex", "stage": "tnm_stage"}
    dropped: dict[str, str] = {}
    for key in clinical_covariates:
        covariate, encode = encoders[key]
        values = encode(table[source[key]].astype(object)) if source[key] in table.columns else None
        if values is None or values.isna().all():
            dropped[covariate.name] = f"no {source[key]} value for any patient"
            continue
        columns[covariate.name] = values
        covariates.append(covariate)
    design = pd.DataFrame(columns, index=table.index)
    complete = design.notna().all(axis=1)
    dropped_patients = sorted(design.index[~complete])
    design = design.loc[complete]
    kept = []
    for covariate in covariates:
        if design[covariate.name].nunique() < 2:
            dropped[covariate.name] = "the same value for every patient, so the model cannot estimate it"
        else:
            kept.append(covariate)
    for name, reason in dropped.items():
        logger.warning("Cox model: left out %s (%s)", name, reason)
    if dropped_patients:
        logger.warning(
            "Cox model: %d patient(s) left out for a missing covariate: %s",
            len(dropped_patients),
            dropped_patients[:5],
        )
    design = design[[c.name for c in kept]].assign(
        os_months=table.loc[design.index, "os_months"], os_event=table.loc[design.index, "os_event"]
    )
    return design, kept, dropped, dropped_patients


def choose_penalizer(penalizer: float | Literal["auto"], events: int, covariates: int) -> tuple[float, str]:
    """The penalizer to fit with, and why."""
    if penalizer != "auto":
        return float(penalizer), "given"
    per_covariate = events / max(covariates, 1)
    if per_covariate >= EVENTS_PER_COVARIATE:
        return 0.0, f"auto: {per_covariate:.1f} events per covariate, enough for an unpenalised fit"
    reason = (
        f"auto: {per_covariate:.1f} events per covariate (under {EVENTS_PER_COVARIATE}), so a small ridge "
        "penalty keeps the fit finite"
    )
    return AUTO_PENALIZER, reason


def fit_cox(
    design: pd.DataFrame,
    covariates: list[Covariate],
    penalizer: float | Literal["auto"] = "auto",
) -> CoxResult:
    """Fit a Cox proportional hazards model of os_months and os_event on the design's covariates.

    Raises:
        ValueError: If there are no covariates, no events, or the fit does not converge.
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    patients, events = len(design), int(design["os_event"].sum())
    fix = "add patients, drop covariates with --cox-classes or --clinical-covariates, or raise --penalizer"
    if not covariates:
        raise ValueError(f"Cox model: expected at least one covariate that varies between patients, found none; {fix}")
    if events == 0 or patients < 3:
        msg = (
            "Cox model: expected at least one death among three or more patients, "
            f"found {events} death(s) among {patients}; {fix}"
        )
        raise ValueError(msg)
    strength, reason = choose_penalizer(penalizer, events, len(covariates))
    fitter = CoxPHFitter(penalizer=strength)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fitter.fit(design, duration_col="os_months", event_col="os_event")
        except (ConvergenceError, np.linalg.LinAlgError, ZeroDivisionError) as error:
            msg = (
                f"Cox model: the fit of {len(covariates)} covariate(s) on {patients} patients with {events} events "
                f"did not converge (penalizer {strength}): {str(error).splitlines()[0]}; {fix}"
            )
            raise ValueError(msg) from error
    if not np.isfinite(fitter.params_.to_numpy()).all():
        msg = f"Cox model: the fit gave infinite coefficients on {patients} patients with {events} events; {fix}"
        raise ValueError(msg)
    notes = sorted({str(w.message).strip().splitlines()[0] for w in caught if _from_lifelines(w)})
    for note in notes:
        logger.warning("Cox model: %s", note)
    summary = fitter.summary
    table = pd.DataFrame(
        {
            "covariate": [c.name for c in covariates],
            "unit": [c.unit for c in covariates],
            "hazard_ratio": summary["exp(coef)"].to_numpy(),
            "hr_lower_95": summary["exp(coef) lower 95%"].to_numpy(),
            "hr_upper_95": summary["exp(coef) upper 95%"].to_numpy(),
            "p_value": summary["p"].to_numpy(),
            "coef": summary["coef"].to_numpy(),
            "se_coef": summary["se(coef)"].to_numpy(),
        }
    )
    concordance = float(fitter.concordance_index_)
    logger.info("Cox model on %d patients, %d events: concordance %.3f", patients, events, concordance)
    return CoxResult(fitter, covariates, table, strength, reason, patients, events, concordance, warnings=notes)


def _from_lifelines(caught: warnings.WarningMessage) -> bool:
    """Whether a warning came from lifelines: one of its own kinds, or raised in its code."""
    return caught.category.__module__.startswith("lifelines") or "lifelines" in (caught.filename or "")


def cautions(synthetic: bool, patients: int, events: int, covariates: int, penalizer: float) -> list[str]:
    """What a reader must know before reading any number of this run."""
    found = [_SYNTHETIC_CAUTION] if synthetic else []
    if patients < MIN_PATIENTS:
        found.append(
            f"Only {patients} patients were analysed (under {MIN_PATIENTS}): far too few for any survival conclusion."
        )
    if events < EVENTS_PER_COVARIATE * covariates:
        found.append(
            f"{events} events for {covariates} Cox covariate(s) (under {EVENTS_PER_COVARIATE} per covariate): the "
            "hazard ratios are unstable and their confidence intervals and p-values unreliable."
        )
    if penalizer > 0:
        found.append(
            f"The Cox model is ridge-penalised (penalizer {penalizer:g}): hazard ratios are shrunk towards 1 and "
            "their confidence intervals and p-values are approximate."
        )
    return found


def _write_json(path: Path, data: dict[str, object]) -> Path:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def _write_unmatched(path: Path, cohort: Cohort, without_survival: list[str]) -> Path:
    reasons = (
        (cohort.without_clinical, "predictions but no clinical row"),
        (cohort.without_predictions, "clinical row but no predicted tiles"),
        (without_survival, "clinical row without survival time or event"),
    )
    rows = [(patient, reason) for patients, reason in reasons for patient in patients]
    pd.DataFrame(rows, columns=["patient_id", "reason"]).to_csv(path, index=False)
    return path


def run_survival(options: SurvivalOptions) -> SurvivalReport:
    """Composition, Kaplan-Meier with a log-rank test, and a Cox model, written to `options.output_dir`.

    Writes composition.csv, unmatched_patients.csv, km_<CLASS>.png, logrank_<CLASS>.json, cox.csv,
    cox_forest.png and summary.json (inputs, options, counts, results, cautions).

    Raises:
        ValueError: For unreadable or unmatched inputs, a split with an empty group, or a Cox model that cannot
            be fitted (the composition and Kaplan-Meier files are written by then).
    """
    from hmu_crc.survival_figures import forest_figure, km_figure, save_png

    patient_map = read_patient_map(options.patient_map) if options.patient_map else None
    tiles = read_predictions(options.predictions, patient_pattern=options.patient_pattern, patient_map=patient_map)
    clinical = load_clinical(options.clinical)
    cohort = join_clinical(patient_composition(tiles.frame), clinical.frame)
    synthetic = clinical.synthetic or tiles.synthetic
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"composition": out / "composition.csv"}
    cohort.table.to_csv(files["composition"], float_format="%.6f")
    table, without_survival = survival_table(cohort)
    files["unmatched"] = _write_unmatched(out / "unmatched_patients.csv", cohort, without_survival)
    if synthetic:
        logger.warning("%s", _SYNTHETIC_CAUTION)

    # Kaplan-Meier by one class's fraction, with its log-rank test.
    split = split_by_fraction(table, options.split_by, options.threshold)
    files["kaplan_meier"] = save_png(km_figure(split, synthetic=synthetic), out / f"km_{split.class_name}.png")
    files["logrank"] = _write_json(out / f"logrank_{split.class_name}.json", split.as_dict())

    # Cox model of the fractions and the clinical covariates.
    design, covariates, dropped, dropped_patients = cox_design(
        table, list(options.cox_classes or ()), options.clinical_covariates
    )
    events = int(design["os_event"].sum())
    strength, _ = choose_penalizer(options.penalizer, events, len(covariates))
    found = cautions(synthetic, len(table), events, len(covariates), strength)
    for caution in found[1 if synthetic else 0 :]:
        logger.warning("%s", caution)
    cox = fit_cox(design, covariates, options.penalizer)
    cox.dropped_covariates, cox.dropped_patients = dropped, dropped_patients
    found += [f"The Cox fit warned, so its estimates may be meaningless: {note}" for note in cox.warnings]
    files["cox"] = out / "cox.csv"
    cox.table.to_csv(files["cox"], index=False, float_format="%.6g")
    files["cox_forest"] = save_png(forest_figure(cox, synthetic=synthetic), out / "cox_forest.png")

    files["summary"] = out / "summary.json"
    summary = {
        "caution": found,
        "synthetic": synthetic,
        "notes": list(NOTES),
        "inputs": {
            "predictions": [str(path) for path in tiles.files],
            "clinical": clinical.description,
        },
        "options": {
            "split_by": options.split_by,
            "threshold": options.threshold,
            "reference_class": options.reference_class,
            "cox_classes": list(options.cox_classes or ()),
            "clinical_covariates": list(options.clinical_covariates),
            "penalizer": options.penalizer,
            "patient_pattern": None if options.patient_map else options.patient_pattern,
            "patient_map": str(options.patient_map) if options.patient_map else None,
            "output_dir": str(out),
        },
        "composition": (
            "frac_<CLASS> = the patient's tiles predicted as CLASS / all the patient's predicted tiles "
            "(count_<CLASS> and n_tiles are the counts)"
        ),
        "counts": {
            "tiles": len(tiles.frame),
            "repeated_tiles_counted_once": tiles.duplicates,
            "patients_with_predictions": len(cohort.table),
            "clinical_rows": len(clinical.frame),
            "patients_without_clinical_row": len(cohort.without_clinical),
            "clinical_rows_without_predictions": len(cohort.without_predictions),
            "patients_without_survival_data": len(without_survival),
            "patients_analysed": len(table),
            "events": int(table["os_event"].sum()),
        },
        "patients_without_clinical_row": cohort.without_clinical,
        "clinical_rows_without_predictions": cohort.without_predictions,
        "patients_without_survival_data": without_survival,
        "kaplan_meier": split.as_dict(),
        "cox": cox.as_dict(),
        "files": {name: path.name for name, path in files.items()},
    }
    _write_json(files["summary"], summary)
    logger.info("survival analysis of %d patients written to %s", len(table), out)
    return SurvivalReport(out, files, found, summary)
