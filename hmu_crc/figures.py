"""Pictures of an evaluated split: one-vs-rest ROC curves, the confusion matrix and per-class scores, as PNG.

Figures are built with `matplotlib.figure.Figure` and saved through the Agg canvas, never through
`pyplot`, so nothing here touches global plotting state and the functions are safe in worker processes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

logger = logging.getLogger(__name__)

DPI = 150
"""Resolution of every PNG written here."""

SCORE_NAMES = ("precision", "recall", "f1")
"""The per-class metrics drawn as bars, in bar order; each is read from the key `<score>_<CLASS>`."""

SCORE_LABELS = MappingProxyType({"precision": "precision", "recall": "recall", "f1": "F1"})
"""Legend text of each score."""

SCORE_COLORS = MappingProxyType({"precision": "#4c72b0", "recall": "#dd8452", "f1": "#55a868"})
"""Bar colour of each score."""

ZOOM_FPR = 0.2
"""Width of the inset that magnifies the ROC plot's top-left corner: false positive rates in [0, ZOOM_FPR]."""

_PROBABILITY_TOLERANCE = 1e-3
"""How far a row of float32 probabilities may sum from one."""


class RocCurve(NamedTuple):
    """One class's one-vs-rest ROC curve."""

    fpr: np.ndarray
    """False positive rates, increasing from 0 to 1."""
    tpr: np.ndarray
    """True positive rates at the same thresholds."""
    auc: float
    """Area under the curve, as `sklearn.metrics.roc_auc_score` computes it."""


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    """Returns the names as a list; raises if there are fewer than two or some repeat."""
    names = [str(name) for name in class_names]
    if len(names) < 2 or len(set(names)) != len(names):
        msg = (
            f"class_names: expected two or more distinct names in class-id order, found {names}; "
            f"pass hmu_crc.labels.CLASS_NAMES or the model's id2label values."
        )
        raise ValueError(msg)
    return names


def _check_labels(labels: np.ndarray | Sequence[int], num_classes: int) -> np.ndarray:
    """Returns the labels as int64 of shape (n,); raises on another shape, non-integers or ids out of range."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        msg = f"labels: expected a non-empty 1-D array of class ids, found shape {array.shape}."
        raise ValueError(msg)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_)):
        msg = f"labels: expected integer class ids, found dtype {array.dtype}; pass the reference ids, not scores."
        raise ValueError(msg)
    array = array.astype(np.int64)
    outside = array[(array < 0) | (array >= num_classes)]
    if outside.size:
        msg = (
            f"labels: expected class ids in [0, {num_classes}) (one per class name), "
            f"found {sorted(set(outside.tolist()))[:10]}; check the label mapping and class_names."
        )
        raise ValueError(msg)
    return array


def _check_probabilities(probabilities: np.ndarray, num_examples: int, num_classes: int) -> np.ndarray:
    """Returns the probabilities as float64 of shape (n, K); raises unless they are n rows of K probabilities."""
    array = _as_float_array(probabilities, "probabilities")
    if array.shape != (num_examples, num_classes):
        msg = (
            f"probabilities: expected shape ({num_examples}, {num_classes}) (one row per label, "
            f"one column per class name), found {array.shape}."
        )
        raise ValueError(msg)
    if not np.isfinite(array).all():
        msg = "probabilities: expected finite values, found NaN or infinity; check the model outputs."
        raise ValueError(msg)
    sums = array.sum(axis=1)
    if array.min() < 0.0 or array.max() > 1.0 or np.abs(sums - 1.0).max() > _PROBABILITY_TOLERANCE:
        msg = (
            f"probabilities: expected rows in [0, 1] that sum to 1, found values in "
            f"[{array.min():.3g}, {array.max():.3g}] and row sums in [{sums.min():.3g}, {sums.max():.3g}]; "
            f"apply a softmax to the logits first (scipy.special.softmax(logits, axis=1))."
        )
        raise ValueError(msg)
    return array


def _as_float_array(values: object, what: str) -> np.ndarray:
    """Converts nested sequences to a float64 array; raises a clear error on ragged rows or non-numbers."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        msg = f"{what}: expected a rectangular array of numbers, found rows of unequal length or non-numbers."
        raise ValueError(msg) from error


def _check_matrix(matrix: object, num_classes: int) -> np.ndarray:
    """Returns the confusion matrix as int64 of shape (K, K); raises unless it is K x K non-negative counts."""
    array = _as_float_array(matrix, "confusion matrix")
    if array.shape != (num_classes, num_classes):
        msg = (
            f"confusion matrix: expected shape ({num_classes}, {num_classes}) (one row and one column per "
            f"class name), found {array.shape}; pass the metrics' `confusion_matrix` with the same class_names."
        )
        raise ValueError(msg)
    if not np.isfinite(array).all() or (array < 0).any() or (array != np.round(array)).any():
        msg = "confusion matrix: expected non-negative integer counts, found other values; pass counts, not rates."
        raise ValueError(msg)
    return array.astype(np.int64)


def _check_png_path(path: Path) -> Path:
    """Returns the path with its folder created; raises unless it ends in `.png`."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        msg = f"figure path: expected a file name ending in .png, found {path.name!r}; figures are written as PNG."
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(figure: Figure, path: Path) -> Path:
    """Writes the figure as a PNG and frees its artists."""
    figure.savefig(path, format="png", dpi=DPI)
    figure.clear()
    logger.debug("wrote %s", path)
    return path


def undefined_roc_reason(labels: np.ndarray, class_id: int) -> str | None:
    """Says why a one-vs-rest ROC curve cannot be drawn for a class, or returns None if it can.

    Args:
        labels: True class ids of shape (n,).
        class_id: The class whose curve is wanted.

    Returns:
        "absent" when no label is the class, "only class" when every label is, else None.
    """
    positives = int(np.count_nonzero(labels == class_id))
    if positives == 0:
        return "absent"
    if positives == labels.size:
        return "only class"
    return None


def roc_curve_data(
    labels: np.ndarray | Sequence[int],
    probabilities: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, RocCurve]:
    """Computes each class's one-vs-rest ROC curve and AUC with scikit-learn.

    A curve needs positives and negatives, so classes absent from `labels` (or the only class there)
    are left out of the result; `undefined_roc_reason` says why.

    Args:
        labels: True class ids of shape (n,), each in [0, K).
        probabilities: Class probabilities of shape (n, K), e.g. the softmax of a model's logits.
        class_names: K distinct names in class-id order, e.g. `hmu_crc.labels.CLASS_NAMES`.

    Returns:
        A curve per drawable class, keyed by name, in class-id order.

    Raises:
        ValueError: If the shapes disagree, labels fall outside [0, K) or rows are not probabilities.
    """
    names = _check_class_names(class_names)
    references = _check_labels(labels, len(names))
    scores = _check_probabilities(probabilities, references.size, len(names))
    curves: dict[str, RocCurve] = {}
    for k, name in enumerate(names):
        if undefined_roc_reason(references, k) is not None:
            continue
        positives = references == k
        fpr, tpr, _ = roc_curve(positives, scores[:, k])
        auc = float(roc_auc_score(positives, scores[:, k]))
        curves[name] = RocCurve(fpr=fpr, tpr=tpr, auc=auc)
    return curves


def roc_figure(
    labels: np.ndarray | Sequence[int],
    probabilities: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
) -> Figure:
    """Builds the ROC figure that `plot_roc_curves` saves; see there for its content.

    Returns:
        The figure, not yet saved, for callers that want to inspect or restyle it.
    """
    names = _check_class_names(class_names)
    references = _check_labels(labels, len(names))
    curves = roc_curve_data(references, probabilities, names)

    figure = Figure(figsize=(6.5, 6.0), layout="constrained")
    axes = figure.add_subplot()
    # NOTE: good tissue classifiers hug the top-left corner, where the curves cannot be told apart;
    # the inset magnifies that corner.
    zoom = axes.inset_axes((0.26, 0.42, 0.36, 0.36))
    colors = _class_colors(len(names))
    for k, name in enumerate(names):
        curve = curves.get(name)
        if curve is None:
            reason = undefined_roc_reason(references, k)
            logger.info("%s: no ROC curve for %s (%s in the labels)", title, name, reason)
            axes.plot([], [], linestyle="none", label=f"{name} ({reason})")
            continue
        label = f"{name} (AUC {curve.auc:.3f})"
        axes.plot(curve.fpr, curve.tpr, color=colors[k], linewidth=1.5, label=label)
        zoom.plot(curve.fpr, curve.tpr, color=colors[k], linewidth=1.2)
    axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1.0, label="chance")

    macro = np.mean([curve.auc for curve in curves.values()]) if curves else float("nan")
    axes.legend(loc="lower right", fontsize=8, title=f"macro AUC {macro:.3f}", title_fontsize=8)
    axes.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(f"{title}\nROC curves, one class vs rest", fontsize=10)
    axes.grid(alpha=0.3)
    _style_zoom(zoom)
    return figure


def _style_zoom(zoom: Axes) -> None:
    """Limits the inset to the top-left corner of the ROC plot, with small ticks."""
    zoom.set(xlim=(0.0, ZOOM_FPR), ylim=(1.0 - ZOOM_FPR, 1.0))
    zoom.set_xticks(np.linspace(0.0, ZOOM_FPR, 5))
    zoom.set_yticks(np.linspace(1.0 - ZOOM_FPR, 1.0, 5))
    zoom.set_title("top-left corner", fontsize=8)
    zoom.tick_params(labelsize=7)
    zoom.grid(alpha=0.3)


def plot_roc_curves(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    *,
    title: str,
) -> Path:
    """Draws every class's one-vs-rest ROC curve in one axes and writes it as a PNG.

    Each legend entry reads like "ADI (AUC 0.987)"; the legend title gives the macro AUC over the drawn
    classes, a dashed diagonal marks chance, and an inset magnifies the top-left corner. A class without
    a curve (absent from `labels`, or the only class there) keeps its legend entry, "MUC (absent)" or
    "TUM (only class)", with no line.

    Args:
        labels: True class ids of shape (n,), each in [0, K).
        probabilities: Class probabilities of shape (n, K).
        class_names: K distinct names in class-id order.
        path: Where to write the PNG; its folder is created.
        title: Names the split and the model, e.g. "ViT-B/16, HMU test split".

    Returns:
        `path`.

    Raises:
        ValueError: If the shapes disagree, labels fall outside [0, K), rows are not probabilities
            or `path` does not end in `.png`.
    """
    path = _check_png_path(path)
    return _save(roc_figure(labels, probabilities, class_names, title=title), path)


def normalize_rows(matrix: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Divides each row of a confusion matrix by its total, so that row i holds where class i went.

    Args:
        matrix: Counts of shape (K, K), rows = true class.

    Returns:
        Float fractions of the same shape; a row with no examples is all zeros (no NaN).
    """
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_matrix_figure(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
    normalize: bool = True,
) -> Figure:
    """Builds the heat map that `plot_confusion_matrix` saves; see there for its content.

    Returns:
        The figure, not yet saved.
    """
    names = _check_class_names(class_names)
    counts = _check_matrix(matrix, len(names))
    fractions = normalize_rows(counts)
    shade = fractions if normalize else counts.astype(np.float64)
    top = 1.0 if normalize else max(float(counts.max()), 1.0)

    size = 1.2 + 0.75 * len(names)
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shade, cmap="Blues", vmin=0.0, vmax=top)
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8)
    colorbar.set_label("fraction of the true class" if normalize else "examples")
    _annotate_cells(axes, counts, fractions, shade / top)

    ticks = np.arange(len(names))
    axes.set_xticks(ticks, labels=names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, labels=names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"{title}\nconfusion matrix, {int(counts.sum()):,} examples", fontsize=10)
    return figure


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: Path,
    *,
    title: str,
    normalize: bool = True,
) -> Path:
    """Draws the confusion matrix as a heat map and writes it as a PNG.

    Rows are the true class, columns the predicted one. Each cell shows its fraction of the row and,
    below it, its count; a row without examples shows fractions of 0.00.

    Args:
        matrix: Counts of shape (K, K), as the `confusion_matrix` of `hmu_crc.metrics`.
        class_names: K distinct names in class-id order.
        path: Where to write the PNG; its folder is created.
        title: Names the split and the model.
        normalize: Colour cells by their fraction of the true class (True), or by raw count (False).

    Returns:
        `path`.

    Raises:
        ValueError: If the matrix is not K x K non-negative integer counts or `path` does not end in `.png`.
    """
    path = _check_png_path(path)
    return _save(confusion_matrix_figure(matrix, class_names, title=title, normalize=normalize), path)


def _annotate_cells(axes: Axes, counts: np.ndarray, fractions: np.ndarray, darkness: np.ndarray) -> None:
    """Writes "fraction\\ncount" in every cell, white on dark cells and black on light ones."""
    size = 8 if counts.shape[0] <= 10 else 6
    for (row, column), count in np.ndenumerate(counts):
        color = "white" if darkness[row, column] > 0.55 else "black"
        text = f"{fractions[row, column]:.2f}\n{count:,}"
        axes.text(column, row, text, ha="center", va="center", color=color, fontsize=size)


def _class_colors(num_classes: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class, the same in every figure."""
    palette = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [palette(k % palette.N) for k in range(num_classes)]


def per_class_scores(metrics: Mapping[str, object], class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Reads precision, recall and F1 per class from the flat metrics dictionary.

    Args:
        metrics: The output of `hmu_crc.metrics.compute_from_logits` or the tissue metric.
        class_names: K distinct names in class-id order.

    Returns:
        For each of `SCORE_NAMES`, the K scores in class-id order.

    Raises:
        KeyError: If a key `<score>_<CLASS>` is missing.
        ValueError: If a score is not a number in [0, 1].
    """
    names = _check_class_names(class_names)
    scores: dict[str, np.ndarray] = {}
    for score in SCORE_NAMES:
        values = []
        for name in names:
            key = f"{score}_{name}"
            if key not in metrics:
                msg = (
                    f"metrics: expected the key {key!r}, found keys {sorted(metrics)[:12]}; "
                    f"the metrics must come from hmu_crc.metrics, computed with these class_names."
                )
                raise KeyError(msg)
            value = metrics[key]
            if not isinstance(value, int | float | np.number) or not 0.0 <= float(value) <= 1.0:
                msg = f"metrics: expected {key!r} to be a number in [0, 1], found {value!r}."
                raise ValueError(msg)
            values.append(float(value))
        scores[score] = np.asarray(values)
    return scores


def per_class_figure(metrics: Mapping[str, object], class_names: Sequence[str], *, title: str) -> Figure:
    """Builds the bar chart that `plot_per_class_scores` saves; see there for its content.

    Returns:
        The figure, not yet saved.
    """
    names = _check_class_names(class_names)
    scores = per_class_scores(metrics, names)

    figure = Figure(figsize=(max(7.0, 1.0 * len(names) + 1.5), 4.5), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    width = 0.8 / len(SCORE_NAMES)
    for i, score in enumerate(SCORE_NAMES):
        offsets = positions + (i - (len(SCORE_NAMES) - 1) / 2) * width
        label = SCORE_LABELS[score]
        bars = axes.bar(offsets, scores[score], width, label=label, color=SCORE_COLORS[score])
        axes.bar_label(bars, fmt="%.2f", padding=2, rotation=90, fontsize=7)

    axes.set_xticks(positions, labels=[_tick_label(metrics, name) for name in names])
    # NOTE: the axis stops a little above 1 to leave room for the values printed over full bars.
    axes.set_ylim(0.0, 1.15)
    axes.set_yticks(np.linspace(0.0, 1.0, 6))
    axes.set_ylabel("score")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_title(f"{title}\nper-class precision, recall and F1", fontsize=10)
    figure.legend(loc="outside lower center", ncols=len(SCORE_NAMES), fontsize=8, frameon=False)
    return figure


def plot_per_class_scores(
    metrics: Mapping[str, object],
    class_names: Sequence[str],
    path: Path,
    *,
    title: str,
) -> Path:
    """Draws grouped bars of precision, recall and F1 for each class and writes them as a PNG.

    The y axis runs from 0 to 1, each value is printed above its bar, and where `support_<CLASS>` is
    in `metrics` the number of examples appears under the class name.

    Args:
        metrics: The flat dictionary of `hmu_crc.metrics`, with `precision_<CLASS>`, `recall_<CLASS>`
            and `f1_<CLASS>` for every class.
        class_names: K distinct names in class-id order.
        path: Where to write the PNG; its folder is created.
        title: Names the split and the model.

    Returns:
        `path`.

    Raises:
        KeyError: If a per-class key is missing.
        ValueError: If a score is not in [0, 1] or `path` does not end in `.png`.
    """
    path = _check_png_path(path)
    return _save(per_class_figure(metrics, class_names, title=title), path)


def _tick_label(metrics: Mapping[str, object], name: str) -> str:
    """The class name, with its support on a second line when the metrics hold it."""
    support = metrics.get(f"support_{name}")
    if isinstance(support, int | np.integer):
        return f"{name}\nn={int(support):,}"
    return name


def write_figures(
    labels: np.ndarray,
    probabilities: np.ndarray,
    metrics: Mapping[str, object],
    class_names: Sequence[str],
    output_dir: Path,
    *,
    prefix: str,
    title: str | None = None,
) -> dict[str, Path]:
    """Writes the ROC, confusion-matrix and per-class figures of one evaluated split.

    The files are `<prefix>_roc.png`, `<prefix>_confusion_matrix.png` and `<prefix>_per_class.png`.

    Args:
        labels: True class ids of shape (n,), each in [0, K).
        probabilities: Class probabilities of shape (n, K), the softmax of the logits the metrics scored.
        metrics: The flat dictionary of `hmu_crc.metrics` for the same examples.
        class_names: K distinct names in class-id order.
        output_dir: Folder for the PNGs; created if missing.
        prefix: Stem of the file names, e.g. "vit_base_test".
        title: Names the split and the model in every figure, e.g. "ViT-B/16, HMU test split";
            defaults to `prefix` with spaces for underscores.

    Returns:
        The written paths under the keys "roc", "confusion_matrix" and "per_class".

    Raises:
        KeyError: If `metrics` lacks `confusion_matrix` or a per-class score.
        ValueError: If the inputs disagree in shape, or the confusion matrix counts another number of
            examples than `labels` holds.
    """
    if not prefix or Path(prefix).name != prefix:
        msg = f"prefix: expected a plain file-name stem such as 'vit_base_test', found {prefix!r}."
        raise ValueError(msg)
    if "confusion_matrix" not in metrics:
        msg = "metrics: expected the key 'confusion_matrix'; the metrics must come from hmu_crc.metrics."
        raise KeyError(msg)
    names = _check_class_names(class_names)
    references = _check_labels(labels, len(names))
    matrix = _check_matrix(metrics["confusion_matrix"], len(names))
    if int(matrix.sum()) != references.size:
        msg = (
            f"metrics: the confusion matrix counts {int(matrix.sum())} examples but labels holds "
            f"{references.size}; pass the metrics computed on these labels."
        )
        raise ValueError(msg)

    output_dir = Path(output_dir)
    title = title or prefix.replace("_", " ")
    paths = {
        "roc": plot_roc_curves(references, probabilities, names, output_dir / f"{prefix}_roc.png", title=title),
        "confusion_matrix": plot_confusion_matrix(
            matrix, names, output_dir / f"{prefix}_confusion_matrix.png", title=title
        ),
        "per_class": plot_per_class_scores(metrics, names, output_dir / f"{prefix}_per_class.png", title=title),
    }
    logger.info("wrote figures %s", ", ".join(str(path) for path in paths.values()))
    return paths
