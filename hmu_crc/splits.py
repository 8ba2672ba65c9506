"""Patient-grouped, class-stratified, seeded splits and k folds, as pure functions over per-tile arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")


class LeakageError(RuntimeError):
    """Raised when one patient's tiles sit in more than one split."""


@dataclass(frozen=True)
class SplitSpec:
    """How to cut a release into splits.

    With `num_folds` > 1, the patients left after the test hold-out are cut into `num_folds` folds; fold `fold`
    becomes `validation` and the others `train`, and `validation_size` is ignored.
    """

    validation_size: float = 0.3
    test_size: float = 0.0
    num_folds: int = 0
    fold: int = 0
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("validation_size", "test_size"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), found {value}; pass a fraction of patients such as 0.3")
        if self.num_folds <= 1 and self.validation_size + self.test_size >= 1.0:
            msg = (
                f"validation_size + test_size must leave patients for training, found "
                f"{self.validation_size} + {self.test_size}; lower one of them"
            )
            raise ValueError(msg)
        if self.num_folds < 0 or self.num_folds == 1:
            raise ValueError(f"num_folds must be 0 (no folds) or at least 2, found {self.num_folds}")
        if self.num_folds and not 0 <= self.fold < self.num_folds:
            raise ValueError(f"fold must be in [0, {self.num_folds}), found {self.fold}")


def class_counts(groups: np.ndarray, labels: np.ndarray, num_groups: int, num_classes: int) -> np.ndarray:
    """Count tiles per (group, class).

    Args:
        groups: Group index of each tile, in `[0, num_groups)`.
        labels: Class index of each tile, in `[0, num_classes)`.
        num_groups: Number of groups (patients).
        num_classes: Number of classes.

    Returns:
        An integer matrix of shape `(num_groups, num_classes)`.
    """
    flat = np.bincount(groups * num_classes + labels, minlength=num_groups * num_classes)
    return flat.reshape(num_groups, num_classes)


def stratified_group_partition(counts: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Give each group a part so that every part holds its fraction of every class.

    Groups are visited in a seeded random order; each goes to the part that keeps the running per-class totals
    closest to the target fractions (squared error, each class weighted by its inverse total so that rare classes
    count as much as common ones).

    Args:
        counts: Tiles per (group, class), as from `class_counts`.
        fractions: Target fraction of tiles for each part; they are normalised to sum to one.
        seed: Seed of the visiting order.

    Returns:
        The part index of each group.
    """
    num_groups, num_classes = counts.shape
    num_parts = len(fractions)
    if num_groups < num_parts:
        raise ValueError(f"cannot cut {num_groups} patient(s) into {num_parts} parts; lower the number of splits")
    target = np.asarray(fractions, dtype=np.float64)
    target = target / target.sum()
    weight = 1.0 / np.maximum(counts.sum(axis=0), 1)
    order = np.random.default_rng(seed).permutation(num_groups)

    totals = np.zeros((num_parts, num_classes))
    assigned = np.zeros(num_classes)
    part_of = np.empty(num_groups, dtype=np.int64)
    candidates = np.eye(num_parts)[:, :, None]  # (choice, part, 1)
    for group in order:
        row = counts[group]
        assigned += row
        trial = totals[None] + candidates * row  # (choice, part, class)
        error = ((trial - target[None, :, None] * assigned) ** 2 * weight).sum(axis=(1, 2))
        best = int(np.argmin(error))
        part_of[group] = best
        totals[best] += row
    return part_of


def _patient_class_counts(
    patient_ids: Sequence[str] | np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique patient ids and their tiles per class."""
    # Hashing (factorize) rather than sorting every tile's id; only the few distinct ids are sorted.
    groups, patients = pd.factorize(pd.Series(patient_ids, dtype=str), sort=True)
    labels = np.asarray(labels, dtype=np.int64)
    return patients.to_numpy(), class_counts(groups, labels, len(patients), int(labels.max(initial=0)) + 1)


def assign_splits(patient_ids: Sequence[str] | np.ndarray, labels: np.ndarray, spec: SplitSpec) -> dict[str, str]:
    """Assign every patient to `train`, `validation` or `test`.

    The result depends only on the set of (patient, label) pairs and the spec, not on tile order.

    Args:
        patient_ids: Patient id of each tile.
        labels: Class index of each tile.
        spec: Split sizes, folds and seed.

    Returns:
        A mapping from patient id to split name.
    """
    patients, counts = _patient_class_counts(patient_ids, labels)
    split_of = np.full(len(patients), "train", dtype=object)

    rest = np.arange(len(patients))
    if spec.test_size > 0:
        part = stratified_group_partition(counts, [1 - spec.test_size, spec.test_size], spec.seed)
        split_of[part == 1] = "test"
        rest = np.flatnonzero(part == 0)

    if spec.num_folds > 1:
        folds = stratified_group_partition(counts[rest], [1.0] * spec.num_folds, spec.seed + 1)
        split_of[rest[folds == spec.fold]] = "validation"
    elif spec.validation_size > 0:
        share = spec.validation_size / (1 - spec.test_size)
        part = stratified_group_partition(counts[rest], [1 - share, share], spec.seed + 1)
        split_of[rest[part == 1]] = "validation"
    return dict(zip(patients.tolist(), split_of.tolist(), strict=True))


def assign_folds(
    patient_ids: Sequence[str] | np.ndarray, labels: np.ndarray, num_folds: int, seed: int
) -> dict[str, int]:
    """Cut all patients into `num_folds` stratified folds, for cross-validation drivers and tests."""
    patients, counts = _patient_class_counts(patient_ids, labels)
    folds = stratified_group_partition(counts, [1.0] * num_folds, seed + 1)
    return dict(zip(patients.tolist(), folds.tolist(), strict=True))


def check_no_leakage(patient_ids: Sequence[str], splits: Sequence[str]) -> None:
    """Fail loudly if any patient has tiles in two splits.

    Raises:
        LeakageError: Names up to ten leaking patients and the splits they span.
    """
    pairs = pd.DataFrame({"patient": patient_ids, "split": splits}, dtype="category").drop_duplicates()
    counts = pairs["patient"].value_counts(sort=False)
    doubled = pairs[pairs["patient"].isin(counts.index[counts > 1])]
    leaking = doubled.groupby("patient", observed=True)["split"].agg(lambda s: sorted(map(str, s))).to_dict()
    if leaking:
        shown = ", ".join(f"{patient} in {'+'.join(names)}" for patient, names in list(leaking.items())[:10])
        msg = (
            f"{len(leaking)} patient(s) have tiles in more than one split ({shown}); "
            "expected every patient in exactly one split. Split by patient (the default), or pass "
            "split_by='tile' only if leakage is intended."
        )
        raise LeakageError(msg)
