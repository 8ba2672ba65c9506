"""Time and quality of the patient-grouped split on a release-sized table, against scikit-learn's group splitters.

Run: python benchmarks/bench_splits.py [--patients 500] [--repeats 5]

Quality is the largest gap, over classes and splits, between a split's class proportion and the whole's
(percentage points), and the validation share of tiles against the 30% asked for.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from hmu_crc.splits import SplitSpec, assign_splits, check_no_leakage


def release_like(patients: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """About 1,100 tiles per patient, uneven sizes and class mixes: roughly the real release's shape."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(300, 1_900, patients)
    ids, labels = [], []
    for patient, size in enumerate(sizes):
        counts = rng.multinomial(size, rng.dirichlet(np.full(8, 0.7)))
        ids.append(np.repeat(f"P{patient:04d}", size))
        labels.append(np.repeat(np.arange(8), counts))
    return np.concatenate(ids), np.concatenate(labels)


def quality(labels: np.ndarray, validation: np.ndarray) -> tuple[float, float]:
    whole = np.bincount(labels, minlength=8) / len(labels)
    gaps = [
        np.abs(np.bincount(labels[chosen], minlength=8) / chosen.sum() - whole).max()
        for chosen in (validation, ~validation)
    ]
    return round(100 * max(gaps), 2), round(100 * validation.mean(), 2)


def ours(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    split_of = assign_splits(ids, labels, SplitSpec(validation_size=0.3))
    splits = pd.Series(ids).map(split_of).to_numpy()
    check_no_leakage(ids, splits)
    return splits == "validation"


def group_shuffle(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    _, validation = next(GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0).split(ids, labels, ids))
    chosen = np.zeros(len(ids), dtype=bool)
    chosen[validation] = True
    return chosen


def stratified_group_kfold(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # Three folds give one third, the nearest that k-fold gets to 30%.
    splitter = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)
    _, validation = next(splitter.split(ids, labels, ids))
    chosen = np.zeros(len(ids), dtype=bool)
    chosen[validation] = True
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ids, labels = release_like(args.patients)
    result: dict[str, object] = {"tiles": len(ids), "patients": args.patients}
    for name, split in (
        ("hmu_crc", ours),
        ("GroupShuffleSplit", group_shuffle),
        ("StratifiedGroupKFold", stratified_group_kfold),
    ):
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            validation = split(ids, labels)
            seconds.append(time.perf_counter() - start)
        gap, share = quality(labels, validation)
        result[name] = {
            "seconds_median": round(statistics.median(seconds), 3),
            "max_class_gap_pp": gap,
            "validation_pct": share,
        }
    result["speed_ratio_vs_StratifiedGroupKFold"] = round(
        result["StratifiedGroupKFold"]["seconds_median"] / result["hmu_crc"]["seconds_median"], 2
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
