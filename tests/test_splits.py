"""Splits: grouped by patient, stratified by class, seeded, and k folds that partition the patients."""

from __future__ import annotations

import numpy as np
import pytest

from hmu_crc.splits import LeakageError, SplitSpec, assign_folds, assign_splits, check_no_leakage

PROPORTION_TOLERANCE = 0.03
"""With 200 patients, every split's class proportions stay within 3 points of the whole's (README, Splits)."""


def synthetic_tiles(patients: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Patients of very different sizes and class mixes, as in a real release."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for patient in range(patients):
        counts = rng.multinomial(rng.integers(50, 600), rng.dirichlet(np.full(8, 0.7)))
        for label, count in enumerate(counts):
            ids += [f"P{patient:04d}"] * count
            labels += [label] * count
    return np.array(ids), np.array(labels)


def tile_splits(ids: np.ndarray, labels: np.ndarray, spec: SplitSpec) -> np.ndarray:
    split_of = assign_splits(ids, labels, spec)
    return np.array([split_of[patient] for patient in ids])


@pytest.mark.parametrize(
    "spec",
    [SplitSpec(), SplitSpec(validation_size=0.2, test_size=0.1), *(SplitSpec(num_folds=5, fold=f) for f in range(5))],
)
def test_no_patient_in_two_splits(spec: SplitSpec) -> None:
    ids, labels = synthetic_tiles()
    splits = tile_splits(ids, labels, spec)
    check_no_leakage(ids.tolist(), splits.tolist())
    for patient in np.unique(ids):
        assert len(set(splits[ids == patient])) == 1


@pytest.mark.parametrize("spec", [SplitSpec(), SplitSpec(validation_size=0.2, test_size=0.15)])
def test_class_proportions_and_sizes_follow_the_whole(spec: SplitSpec) -> None:
    ids, labels = synthetic_tiles()
    splits = tile_splits(ids, labels, spec)
    whole = np.bincount(labels, minlength=8) / len(labels)
    wanted = {"train": 1 - spec.validation_size - spec.test_size, "validation": spec.validation_size}
    wanted["test"] = spec.test_size
    for split, share in wanted.items():
        chosen = splits == split
        if share == 0:
            assert not chosen.any()
            continue
        assert abs(chosen.mean() - share) < PROPORTION_TOLERANCE
        proportions = np.bincount(labels[chosen], minlength=8) / chosen.sum()
        assert np.abs(proportions - whole).max() < PROPORTION_TOLERANCE


def test_same_seed_same_split_other_seed_other_split() -> None:
    ids, labels = synthetic_tiles()
    first = assign_splits(ids, labels, SplitSpec(seed=1))
    assert assign_splits(ids, labels, SplitSpec(seed=1)) == first
    assert assign_splits(ids, labels, SplitSpec(seed=2)) != first


def test_split_does_not_depend_on_tile_order() -> None:
    ids, labels = synthetic_tiles(patients=50)
    order = np.random.default_rng(3).permutation(len(ids))
    assert assign_splits(ids[order], labels[order], SplitSpec()) == assign_splits(ids, labels, SplitSpec())


def test_folds_partition_the_patients() -> None:
    ids, labels = synthetic_tiles(patients=100)
    validation_sets = []
    for fold in range(10):
        split_of = assign_splits(ids, labels, SplitSpec(num_folds=10, fold=fold))
        validation_sets.append({p for p, s in split_of.items() if s == "validation"})
        assert set(split_of.values()) == {"train", "validation"}
    every = set().union(*validation_sets)
    assert every == set(np.unique(ids))
    assert sum(len(s) for s in validation_sets) == len(every)
    fold_of = assign_folds(ids, labels, 10, seed=42)
    assert all(fold_of[p] == fold for fold, members in enumerate(validation_sets) for p in members)


def test_folds_keep_test_patients_out() -> None:
    ids, labels = synthetic_tiles(patients=100)
    test = {p for p, s in assign_splits(ids, labels, SplitSpec(num_folds=5, test_size=0.2)).items() if s == "test"}
    assert test
    for fold in range(5):
        split_of = assign_splits(ids, labels, SplitSpec(num_folds=5, fold=fold, test_size=0.2))
        assert {p for p, s in split_of.items() if s == "test"} == test


def test_leakage_is_refused_loudly() -> None:
    with pytest.raises(LeakageError, match="P2 in train\\+validation"):
        check_no_leakage(["P1", "P2", "P2"], ["train", "train", "validation"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"validation_size": 1.2}, "validation_size must be in"),
        ({"validation_size": 0.6, "test_size": 0.5}, "must leave patients for training"),
        ({"num_folds": 1}, "at least 2"),
        ({"num_folds": 5, "fold": 5}, "fold must be in"),
    ],
)
def test_bad_specs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SplitSpec(**kwargs)


def test_too_few_patients_for_the_folds() -> None:
    with pytest.raises(ValueError, match="cannot cut 3 patient"):
        assign_splits(["a", "b", "c"], np.zeros(3, dtype=int), SplitSpec(num_folds=5))
