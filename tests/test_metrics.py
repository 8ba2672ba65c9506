"""Tests for the tissue metric: agreement with scikit-learn, edge cases, offline loading."""

import json
import math
import socket
import warnings
from pathlib import Path
from typing import Any

import evaluate
import numpy as np
import pytest
from scipy.special import softmax
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from hmu_crc.labels import CLASS_NAMES
from hmu_crc.metrics import compute_from_logits, load_tissue_metric

NUM_CLASSES = len(CLASS_NAMES)
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def metric() -> evaluate.EvaluationModule:
    return load_tissue_metric(keep_in_memory=True)


def random_logits(seed: int, scale: float = 3.0, rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Float32 logits leaning towards the true class; labels hold every class at least once."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=rows)
    labels[:NUM_CLASSES] = np.arange(NUM_CLASSES)
    logits = rng.normal(scale=scale, size=(rows, NUM_CLASSES))
    logits[np.arange(rows), labels] += scale
    return logits.astype(np.float32), labels


def sklearn_reference(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The expected results, from scikit-learn on the same float32 logits."""
    probabilities = softmax(logits.astype(np.float64), axis=1)
    predicted = logits.argmax(axis=1)
    ids = list(range(NUM_CLASSES))
    per_class = precision_recall_fscore_support(labels, predicted, labels=ids, zero_division=0)
    macro = precision_recall_fscore_support(labels, predicted, labels=ids, average="macro", zero_division=0)
    with warnings.catch_warnings():
        # scikit-learn warns when a predicted class is absent from the references.
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(labels, predicted)
    expected = {
        "accuracy": accuracy_score(labels, predicted),
        "balanced_accuracy": balanced,
        "precision_macro": macro[0],
        "recall_macro": macro[1],
        "f1_macro": macro[2],
        "confusion_matrix": confusion_matrix(labels, predicted, labels=ids).tolist(),
    }
    aucs = []
    for k, name in enumerate(CLASS_NAMES):
        for key, values in zip(["precision", "recall", "f1", "support"], per_class, strict=True):
            expected[f"{key}_{name}"] = values[k]
        positives = labels == k
        defined = 0 < positives.sum() < len(labels)
        aucs.append(roc_auc_score(positives, probabilities[:, k]) if defined else float("nan"))
        expected[f"roc_auc_{name}"] = aucs[-1]
    if not np.isnan(aucs).any():
        expected["roc_auc_macro"] = roc_auc_score(labels, probabilities, multi_class="ovr", labels=ids)
    else:
        # scikit-learn's multi-class mode needs every class; the metric averages the rest.
        expected["roc_auc_macro"] = np.nanmean(aucs) if not np.isnan(aucs).all() else float("nan")
    return expected


def assert_same_results(found: dict[str, Any], expected: dict[str, Any], abs_tol: float = 1e-12) -> None:
    """Same keys and confusion matrix; numbers equal to rounding, NaN only where expected."""
    assert sorted(found) == sorted(expected)
    assert found["confusion_matrix"] == expected["confusion_matrix"]
    for key, value in expected.items():
        if key == "confusion_matrix":
            continue
        if math.isnan(value):
            assert math.isnan(found[key]), key
        else:
            assert found[key] == pytest.approx(value, rel=1e-9, abs=abs_tol), key


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", [3.0, 1e3])
def test_agrees_with_sklearn(metric: evaluate.EvaluationModule, seed: int, scale: float) -> None:
    # Logits of magnitude 1e3 overflow a naive softmax (exp(1000) is inf).
    logits, labels = random_logits(seed, scale=scale)
    found = metric.compute(predictions=logits, references=labels, class_names=CLASS_NAMES)
    assert_same_results(found, sklearn_reference(logits, labels))


def test_default_class_names_are_ids(metric: evaluate.EvaluationModule) -> None:
    logits, labels = random_logits(seed=3, rows=60)
    found = metric.compute(predictions=logits, references=labels)
    assert {f"f1_{k}" for k in range(NUM_CLASSES)} <= set(found)
    assert found["f1_7"] == compute_from_logits(logits, labels)["f1_TUM"]


def test_probabilities_give_the_same_results_as_logits(metric: evaluate.EvaluationModule) -> None:
    logits, labels = random_logits(seed=4)
    probabilities = softmax(logits.astype(np.float64), axis=1)
    from_logits = metric.compute(predictions=logits, references=labels, class_names=CLASS_NAMES)
    from_probabilities = metric.compute(
        predictions=probabilities, references=labels, class_names=CLASS_NAMES, from_logits=False
    )
    # NOTE: probabilities are stored as float32; near-ties may collapse and move ROC AUC.
    assert_same_results(from_probabilities, from_logits, abs_tol=1e-3)


def test_perfect_classifier_scores_one(metric: evaluate.EvaluationModule) -> None:
    labels = np.arange(200) % NUM_CLASSES
    logits = 10.0 * np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    found = metric.compute(predictions=logits, references=labels, class_names=CLASS_NAMES)
    supports = [found[f"support_{name}"] for name in CLASS_NAMES]
    assert found["confusion_matrix"] == np.diag(supports).tolist()
    assert sum(supports) == len(labels)
    for key, value in found.items():
        if key != "confusion_matrix" and not key.startswith("support_"):
            assert value == 1.0, key


def test_missing_class_has_nan_auc_and_macro_over_the_others(metric: evaluate.EvaluationModule) -> None:
    logits, labels = random_logits(seed=5)
    missing = CLASS_NAMES.index("MUC")
    labels[labels == missing] = CLASS_NAMES.index("TUM")
    found = metric.compute(predictions=logits, references=labels, class_names=CLASS_NAMES)
    assert math.isnan(found["roc_auc_MUC"])
    others = [found[f"roc_auc_{name}"] for name in CLASS_NAMES if name != "MUC"]
    assert not any(math.isnan(auc) for auc in others)
    assert found["roc_auc_macro"] == pytest.approx(np.mean(others), rel=1e-12)
    assert found["support_MUC"] == 0
    assert found["recall_MUC"] == 0.0
    assert_same_results(found, sklearn_reference(logits, labels))


def test_macro_auc_is_nan_when_no_class_is_defined(metric: evaluate.EvaluationModule) -> None:
    logits, _ = random_logits(seed=6, rows=40)
    labels = np.full(len(logits), CLASS_NAMES.index("STR"))
    with warnings.catch_warnings():
        # The metric skips undefined classes itself, without scikit-learn's warning.
        warnings.simplefilter("error", UndefinedMetricWarning)
        found = metric.compute(predictions=logits, references=labels, class_names=CLASS_NAMES)
    assert math.isnan(found["roc_auc_macro"])
    assert all(math.isnan(found[f"roc_auc_{name}"]) for name in CLASS_NAMES)
    assert found["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))


def test_wrong_number_of_class_names_is_explained(metric: evaluate.EvaluationModule) -> None:
    logits, labels = random_logits(seed=7, rows=20)
    with pytest.raises(ValueError, match=r"expected 8 names .* found 7"):
        metric.compute(predictions=logits, references=labels, class_names=CLASS_NAMES[:-1])


@pytest.mark.parametrize(
    ("predictions", "references", "class_names", "message"),
    [
        ([[0.1, 0.2], [0.3, 0.4, 0.5]], [0, 1], None, r"rows of one width .* found \[2, 3\]"),
        ([[0.1], [0.3]], [0, 0], None, "2 or more scores per row"),
        ([[0.1, float("nan")], [0.3, 0.4]], [0, 1], None, "expected finite scores"),
        ([[0.1, 0.2], [0.3, 0.4]], [0, 2], None, r"class ids in \[0, 2\) .* found \[2\]"),
        ([[0.1, 0.2], [0.3, 0.4]], [0, 1], ["ADI", "ADI"], "expected distinct names"),
    ],
)
def test_bad_inputs_are_explained(
    metric: evaluate.EvaluationModule,
    predictions: list[list[float]],
    references: list[int],
    class_names: list[str] | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        metric.compute(predictions=predictions, references=references, class_names=class_names)


def test_compute_from_logits_is_flat_and_json_friendly() -> None:
    logits, labels = random_logits(seed=8)
    labels[labels == CLASS_NAMES.index("DEB")] = 0  # a NaN AUC must still serialise
    results = compute_from_logits(logits, labels, CLASS_NAMES)
    json.loads(json.dumps(results, allow_nan=True))
    per_class = ["precision", "recall", "f1", "support", "roc_auc"]
    expected_keys = {"accuracy", "balanced_accuracy", "confusion_matrix"}
    expected_keys |= {f"{key}_macro" for key in ["precision", "recall", "f1", "roc_auc"]}
    expected_keys |= {f"{key}_{name}" for key in per_class for name in CLASS_NAMES}
    assert set(results) == expected_keys
    for key, value in results.items():
        if key == "confusion_matrix":
            assert all(type(count) is int for row in value for count in row)
        else:
            # Plain Python numbers, not numpy scalars or containers: Trainer logs only scalars.
            assert type(value) in (int, float), key


def test_compute_from_logits_rejects_label_ids_as_logits() -> None:
    with pytest.raises(ValueError, match=r"shape \(examples, classes\).*found \(4,\)"):
        compute_from_logits(np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]))


def test_batches_give_the_same_results_as_one_compute(metric: evaluate.EvaluationModule) -> None:
    logits, labels = random_logits(seed=9, rows=250)
    whole = metric.compute(predictions=logits, references=labels, class_names=CLASS_NAMES)
    for start, stop in [(0, 1), (1, 64), (64, 200), (200, 250)]:
        metric.add_batch(predictions=logits[start:stop], references=labels[start:stop])
    batched = metric.compute(class_names=CLASS_NAMES)
    assert_same_results(batched, whole)
    assert_same_results(batched, sklearn_reference(logits, labels))


def test_loads_offline_from_another_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The libraries read these variables when imported; the blocked sockets prove that loading
    # needs no network, and the new working directory that the metric path is absolute.
    for variable in ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"]:
        monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("the metric tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(tmp_path)
    loaded = load_tissue_metric(keep_in_memory=True)
    logits = [[2.0, 0.0], [0.0, 2.0]]
    results = loaded.compute(predictions=logits, references=[0, 1], class_names=["ADI", "DEB"])
    assert results["accuracy"] == 1.0
    assert results["roc_auc_DEB"] == 1.0
