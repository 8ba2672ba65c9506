"""Tests for the result figures: curve data against scikit-learn, normalisation, input checks, PNG output."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.special import softmax
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from hmu_crc.figures import (
    confusion_matrix_figure,
    normalize_rows,
    per_class_figure,
    per_class_scores,
    plot_confusion_matrix,
    plot_per_class_scores,
    plot_roc_curves,
    roc_curve_data,
    roc_figure,
    undefined_roc_reason,
    write_figures,
)
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.metrics.tissue_classification.tissue_classification import classification_scores

NUM_CLASSES = len(CLASS_NAMES)


def predictions(seed: int = 0, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Labels holding every class, and softmax probabilities that lean towards them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=rows)
    labels[:NUM_CLASSES] = np.arange(NUM_CLASSES)
    logits = rng.normal(scale=2.0, size=(rows, NUM_CLASSES))
    logits[np.arange(rows), labels] += 2.0
    return labels, softmax(logits, axis=1)


def metrics_for(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, object]:
    """The flat metrics dictionary of `hmu_crc.metrics`, computed without `evaluate`'s module cache."""
    return dict(classification_scores(probabilities, labels, CLASS_NAMES, from_logits=False))


def assert_png(path: Path, min_size: int = 400) -> None:
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert min_size <= width <= 4000
    assert min_size <= height <= 4000


# roc_curve_data


def test_roc_curve_data_matches_sklearn() -> None:
    labels, probabilities = predictions(seed=1)
    curves = roc_curve_data(labels, probabilities, CLASS_NAMES)
    assert list(curves) == list(CLASS_NAMES)
    for k, name in enumerate(CLASS_NAMES):
        fpr, tpr, _ = roc_curve(labels == k, probabilities[:, k])
        np.testing.assert_allclose(curves[name].fpr, fpr)
        np.testing.assert_allclose(curves[name].tpr, tpr)
        assert curves[name].auc == pytest.approx(roc_auc_score(labels == k, probabilities[:, k]))


def test_roc_curve_data_auc_agrees_with_the_metric() -> None:
    labels, probabilities = predictions(seed=2)
    metrics = metrics_for(labels, probabilities)
    curves = roc_curve_data(labels, probabilities, CLASS_NAMES)
    for name in CLASS_NAMES:
        assert curves[name].auc == pytest.approx(metrics[f"roc_auc_{name}"])


def test_roc_curve_data_skips_absent_and_only_classes() -> None:
    labels, probabilities = predictions()
    present = labels != 3
    curves = roc_curve_data(labels[present], probabilities[present], CLASS_NAMES)
    assert "MUC" not in curves
    assert len(curves) == NUM_CLASSES - 1
    assert undefined_roc_reason(labels[present], 3) == "absent"
    only = np.full(5, 2)
    assert undefined_roc_reason(only, 2) == "only class"
    assert undefined_roc_reason(labels, 2) is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda labels, probs: (labels, probs[:, :-1]), r"expected shape \(400, 8\)"),
        (lambda labels, probs: (labels[:-1], probs), r"expected shape \(399, 8\)"),
        (lambda labels, probs: (labels + 1, probs), r"class ids in \[0, 8\).*found \[8\]"),
        (lambda labels, probs: (labels.astype(float) + 0.5, probs), "integer class ids"),
        (lambda labels, probs: (labels, np.log(probs)), "apply a softmax"),
        (lambda labels, probs: (labels, np.where(probs > 0.5, np.nan, probs)), "finite"),
        (lambda labels, probs: (labels.reshape(20, 20), probs), "1-D array"),
    ],
)
def test_roc_curve_data_rejects_bad_inputs(change, match: str) -> None:
    labels, probabilities = change(*predictions())
    with pytest.raises(ValueError, match=match):
        roc_curve_data(labels, probabilities, CLASS_NAMES)


def test_class_names_must_be_distinct() -> None:
    labels, probabilities = predictions()
    with pytest.raises(ValueError, match="distinct names"):
        roc_curve_data(labels, probabilities, ["ADI"] * NUM_CLASSES)


# normalize_rows


def test_normalize_rows_divides_by_row_totals() -> None:
    matrix = np.array([[3, 1], [2, 6]])
    np.testing.assert_allclose(normalize_rows(matrix), [[0.75, 0.25], [0.25, 0.75]])


def test_normalize_rows_leaves_empty_rows_at_zero() -> None:
    fractions = normalize_rows([[0, 0, 0], [1, 1, 2], [0, 5, 0]])
    assert not np.isnan(fractions).any()
    np.testing.assert_allclose(fractions[0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(fractions[1], [0.25, 0.25, 0.5])
    np.testing.assert_allclose(fractions.sum(axis=1), [0.0, 1.0, 1.0])


def test_normalize_rows_matches_sklearn() -> None:
    labels, probabilities = predictions(seed=3)
    predicted = probabilities.argmax(axis=1)
    counts = confusion_matrix(labels, predicted)
    expected = confusion_matrix(labels, predicted, normalize="true")
    np.testing.assert_allclose(normalize_rows(counts), expected)


# per_class_scores


def test_per_class_scores_reads_the_flat_keys() -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels, probabilities)
    scores = per_class_scores(metrics, CLASS_NAMES)
    assert list(scores) == ["precision", "recall", "f1"]
    assert scores["f1"][CLASS_NAMES.index("TUM")] == metrics["f1_TUM"]
    assert scores["recall"].shape == (NUM_CLASSES,)


def test_per_class_scores_names_a_missing_key() -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels, probabilities)
    del metrics["precision_NORM"]
    with pytest.raises(KeyError, match=r"'precision_NORM'.*hmu_crc\.metrics"):
        per_class_scores(metrics, CLASS_NAMES)


def test_per_class_scores_rejects_values_outside_unit_interval() -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels, probabilities)
    metrics["recall_LYM"] = 84.0
    with pytest.raises(ValueError, match=r"'recall_LYM'.*\[0, 1\]"):
        per_class_scores(metrics, CLASS_NAMES)


# figure content


def test_roc_legend_shows_sklearn_auc_per_class() -> None:
    labels, probabilities = predictions(seed=4)
    figure = roc_figure(labels, probabilities, CLASS_NAMES, title="ViT-B/16, HMU test split")
    axes = figure.axes[0]
    texts = [text.get_text() for text in axes.get_legend().get_texts()]
    expected = [
        f"{name} (AUC {roc_auc_score(labels == k, probabilities[:, k]):.3f})" for k, name in enumerate(CLASS_NAMES)
    ]
    assert texts == [*expected, "chance"]
    assert "ViT-B/16, HMU test split" in axes.get_title()
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("false positive rate", "true positive rate")


def test_roc_legend_marks_absent_class_without_a_line() -> None:
    labels, probabilities = predictions()
    present = labels != CLASS_NAMES.index("MUC")
    axes = roc_figure(labels[present], probabilities[present], CLASS_NAMES, title="t").axes[0]
    texts = [text.get_text() for text in axes.get_legend().get_texts()]
    assert texts[CLASS_NAMES.index("MUC")] == "MUC (absent)"
    drawn = [line for line in axes.get_lines() if len(line.get_xdata()) > 0]
    assert len(drawn) == NUM_CLASSES - 1 + 1  # seven curves and the chance diagonal


def test_confusion_matrix_cells_show_fraction_and_count() -> None:
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    matrix[0, 0], matrix[0, 1] = 3, 1
    matrix[7, 7] = 1234
    axes = confusion_matrix_figure(matrix, CLASS_NAMES, title="t").axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in axes.texts}
    assert len(cells) == NUM_CLASSES**2
    assert cells[(0, 0)] == "0.75\n3"
    assert cells[(0, 1)] == "0.25\n1"
    assert cells[(7, 7)] == "1.00\n1,234"
    assert cells[(3, 3)] == "0.00\n0"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted class", "true class")
    assert [label.get_text() for label in axes.get_yticklabels()] == list(CLASS_NAMES)


def test_per_class_bars_follow_the_metrics() -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels, probabilities)
    axes = per_class_figure(metrics, CLASS_NAMES, title="t").axes[0]
    heights = [patch.get_height() for patch in axes.patches]
    expected = [metrics[f"{score}_{name}"] for score in ("precision", "recall", "f1") for name in CLASS_NAMES]
    np.testing.assert_allclose(heights, expected)
    assert axes.get_ylim()[0] == 0.0
    assert axes.get_yticks().max() == pytest.approx(1.0)
    ticks = [label.get_text() for label in axes.get_xticklabels()]
    assert ticks[0] == f"ADI\nn={metrics['support_ADI']:,}"


# plots written to disk


def test_plot_roc_curves_writes_png(tmp_path: Path) -> None:
    labels, probabilities = predictions()
    path = plot_roc_curves(labels, probabilities, CLASS_NAMES, tmp_path / "deep" / "roc.png", title="vit, test")
    assert path == tmp_path / "deep" / "roc.png"
    assert_png(path)


def test_plot_roc_curves_draws_with_an_absent_class(tmp_path: Path) -> None:
    labels, probabilities = predictions()
    present = labels != 0
    path = plot_roc_curves(labels[present], probabilities[present], CLASS_NAMES, tmp_path / "r.png", title="t")
    assert_png(path)


def test_plot_rejects_other_suffixes(tmp_path: Path) -> None:
    labels, probabilities = predictions()
    with pytest.raises(ValueError, match=r"\.png"):
        plot_roc_curves(labels, probabilities, CLASS_NAMES, tmp_path / "roc.pdf", title="t")
    assert not (tmp_path / "roc.pdf").exists()


@pytest.mark.parametrize("normalize", [True, False])
def test_plot_confusion_matrix_writes_png(tmp_path: Path, normalize: bool) -> None:
    matrix = np.arange(NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)
    matrix[2] = 0
    path = plot_confusion_matrix(matrix, CLASS_NAMES, tmp_path / "cm.png", title="t", normalize=normalize)
    assert_png(path)


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        (np.ones((NUM_CLASSES, NUM_CLASSES - 1), dtype=int), r"expected shape \(8, 8\).*found \(8, 7\)"),
        (-np.ones((NUM_CLASSES, NUM_CLASSES), dtype=int), "non-negative integer counts"),
        (np.full((NUM_CLASSES, NUM_CLASSES), 0.5), "non-negative integer counts"),
        ([[1, 2], [3]], "rectangular"),
    ],
)
def test_plot_confusion_matrix_rejects_bad_matrices(tmp_path: Path, matrix: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plot_confusion_matrix(matrix, CLASS_NAMES, tmp_path / "cm.png", title="t")


def test_plot_per_class_scores_writes_png(tmp_path: Path) -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels, probabilities)
    path = plot_per_class_scores(metrics, CLASS_NAMES, tmp_path / "bars.png", title="t")
    assert_png(path, min_size=300)


# write_figures


def test_write_figures_writes_three_prefixed_pngs(tmp_path: Path) -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels, probabilities)
    output_dir = tmp_path / "figures"
    paths = write_figures(labels, probabilities, metrics, CLASS_NAMES, output_dir, prefix="vit_test")
    assert paths == {
        "roc": output_dir / "vit_test_roc.png",
        "confusion_matrix": output_dir / "vit_test_confusion_matrix.png",
        "per_class": output_dir / "vit_test_per_class.png",
    }
    assert sorted(p.name for p in output_dir.iterdir()) == sorted(p.name for p in paths.values())
    for path in paths.values():
        assert_png(path, min_size=300)


def test_write_figures_requires_the_confusion_matrix(tmp_path: Path) -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels, probabilities)
    del metrics["confusion_matrix"]
    with pytest.raises(KeyError, match="confusion_matrix"):
        write_figures(labels, probabilities, metrics, CLASS_NAMES, tmp_path, prefix="p")


def test_write_figures_rejects_metrics_of_other_examples(tmp_path: Path) -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels[:100], probabilities[:100])
    with pytest.raises(ValueError, match="counts 100 examples but labels holds 400"):
        write_figures(labels, probabilities, metrics, CLASS_NAMES, tmp_path, prefix="p")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("prefix", ["", "runs/vit", "../vit"])
def test_write_figures_rejects_path_like_prefixes(tmp_path: Path, prefix: str) -> None:
    labels, probabilities = predictions()
    metrics = metrics_for(labels, probabilities)
    with pytest.raises(ValueError, match="prefix"):
        write_figures(labels, probabilities, metrics, CLASS_NAMES, tmp_path, prefix=prefix)


def test_roc_macro_over_drawn_classes_matches_the_metric() -> None:
    labels, probabilities = predictions()
    present = labels != 5
    curves = roc_curve_data(labels[present], probabilities[present], CLASS_NAMES)
    macro = np.mean([curve.auc for curve in curves.values()])
    metrics = metrics_for(labels[present], probabilities[present])
    assert math.isnan(metrics["roc_auc_NORM"])
    assert macro == pytest.approx(metrics["roc_auc_macro"])
