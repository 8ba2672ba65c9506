"""Tissue classification metrics for `evaluate`, computed from one row of logits per example.

`evaluate.load(<this folder>)` copies this file into its modules cache and imports it alone,
so it stays self-contained: numpy, scikit-learn, datasets and evaluate, no relative imports.

Output layout: one flat dictionary, so that `transformers.Trainer` can log every value but
the confusion matrix as a scalar. With K classes, each named `c` below (`class_names`, or
"0" .. "K-1" by default):

- `accuracy`: fraction of examples whose argmax is the reference.
- `balanced_accuracy`: mean recall over the classes present in the references
  (scikit-learn's definition).
- `precision_macro`, `recall_macro`, `f1_macro`: unweighted means over all K classes.
- `roc_auc_macro`: mean one-vs-rest ROC AUC over the classes where it is defined;
  NaN if it is defined for none.
- `precision_<c>`, `recall_<c>`, `f1_<c>`: per class; 0.0 where a ratio divides by zero.
- `support_<c>`: number of references of class `c`, an int.
- `roc_auc_<c>`: one-vs-rest ROC AUC of the class probability. NaN when the references hold
  no example of the class, or nothing else: a ROC curve needs positives and negatives.
- `confusion_matrix`: K lists of K ints; row i counts references of class i, column j
  predictions of class j.
"""

import logging
from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Scores a K-class classifier from its logits or probabilities: accuracy, balanced accuracy,
precision, recall, F1 and support (macro and per class), one-vs-rest ROC AUC (macro and per
class) and the confusion matrix. Built for the eight tissue classes of HMU-CRC-Hist550K
(ADI DEB LYM MUC MUS NORM STR TUM); any K >= 2 works. The result is a flat dictionary of
scalars, with keys such as `f1_ADI`, plus `confusion_matrix`, so that Trainer can log it.
"""

_CITATION = ""
_SKLEARN_URL = "https://scikit-learn.org/stable/modules/model_evaluation.html"

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row per example, one score per class;
        logits, or probabilities with `from_logits=False`. All rows have the same width
        K >= 2. Stored as float32.
    references (`list` of `int`): the true class id of each example, in [0, K).
    class_names (`list` of `str`, *optional*): K distinct names, in class-id order, used in
        the per-class keys. Defaults to "0" .. "K-1".
    from_logits (`bool`, defaults to `True`): apply a softmax to each row before ROC AUC.
        With `False`, the rows are used as given as class scores.

Returns:
    `dict`: `accuracy`, `balanced_accuracy`, `precision_macro`, `recall_macro`, `f1_macro`,
    `roc_auc_macro`; for each class `precision_<name>`, `recall_<name>`, `f1_<name>`,
    `support_<name>`, `roc_auc_<name>`; and `confusion_matrix` (rows: references, columns:
    predictions). `roc_auc_<name>` is NaN when the references hold no example of the class,
    or nothing else; `roc_auc_macro` then averages the other classes.

Examples:
    >>> metric = evaluate.load("path/to/tissue_classification")
    >>> logits = [[2.0, 0.1, -1.0], [0.3, 1.5, 0.2], [0.0, 0.2, 3.1], [1.2, 0.9, 0.1]]
    >>> names = ["ADI", "DEB", "LYM"]
    >>> results = metric.compute(predictions=logits, references=[0, 1, 2, 1], class_names=names)
    >>> results["accuracy"], results["recall_DEB"]
    (0.75, 0.5)
"""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Turns each row of logits into probabilities without overflow.

    Args:
        logits: Finite scores of shape (examples, classes).

    Returns:
        Probabilities of the same shape; each row sums to one.
    """
    # NOTE: shifting a row by its maximum keeps its softmax and makes every exponent <= 0.
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _as_arrays(
    predictions: Sequence[Sequence[float]],
    references: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Checks the inputs; returns float64 scores of shape (N, K) and int64 labels of shape (N,)."""
    if len(predictions) == 0:
        msg = "no predictions to score: pass rows of logits to compute() or add_batch()."
        raise ValueError(msg)
    widths = sorted({len(row) for row in predictions})
    if len(widths) > 1:
        msg = f"predictions: expected rows of one width (a score per class), found {widths}."
        raise ValueError(msg)
    if widths[0] < 2:
        msg = f"predictions: expected 2 or more scores per row (one per class), found {widths[0]}."
        raise ValueError(msg)
    scores = np.asarray(predictions, dtype=np.float64)
    if not np.isfinite(scores).all():
        msg = "predictions: expected finite scores, found NaN or infinity; check the model outputs."
        raise ValueError(msg)
    labels = np.asarray(references, dtype=np.int64)
    outside = labels[(labels < 0) | (labels >= scores.shape[1])]
    if outside.size:
        msg = (
            f"references: expected class ids in [0, {scores.shape[1]}) to match the prediction "
            f"width, found {sorted(set(outside.tolist()))}; fix the label mapping."
        )
        raise ValueError(msg)
    return scores, labels


def _resolve_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """Returns the class names to use in the keys, "0" .. "K-1" when none are given."""
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = list(class_names)
    if len(names) != num_classes:
        msg = (
            f"class_names: expected {num_classes} names (one per prediction column), "
            f"found {len(names)}: {names}; pass one name per class, in class-id order."
        )
        raise ValueError(msg)
    if len(set(names)) != len(names):
        msg = f"class_names: expected distinct names (they form the metric keys), found {names}."
        raise ValueError(msg)
    return [str(name) for name in names]


def one_vs_rest_roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each class against the rest; NaN where labels lack positives or negatives.

    Args:
        probabilities: Class scores of shape (examples, classes).
        labels: True class ids of shape (examples,).

    Returns:
        One AUC per class.
    """
    aucs = np.full(probabilities.shape[1], np.nan)
    for k in range(probabilities.shape[1]):
        positives = labels == k
        if positives.any() and not positives.all():
            aucs[k] = roc_auc_score(positives, probabilities[:, k])
    return aucs


def classification_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    from_logits: bool = True,
) -> dict[str, float | int | list[list[int]]]:
    """Computes every value of the layout in the module docstring.

    Args:
        scores: Finite logits or probabilities of shape (examples, classes).
        labels: True class ids of shape (examples,), each in [0, classes).
        names: One name per class, used in the per-class keys.
        from_logits: Whether `scores` are logits, to be turned into probabilities for ROC AUC.

    Returns:
        The flat dictionary described in the module docstring.
    """
    class_ids = list(range(scores.shape[1]))
    # NOTE: np.argmax breaks ties towards the lower class id.
    predicted = scores.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=class_ids, average=None, zero_division=0
    )
    probabilities = softmax(scores) if from_logits else scores
    aucs = one_vs_rest_roc_auc(probabilities, labels)
    defined = aucs[~np.isnan(aucs)]
    undefined = [name for name, auc in zip(names, aucs, strict=True) if np.isnan(auc)]
    if undefined:
        logger.warning(
            "ROC AUC is undefined for %s: the references need examples of the class and of "
            "others. Those classes are NaN and roc_auc_macro averages the rest.",
            undefined,
        )

    results: dict[str, float | int | list[list[int]]] = {
        "accuracy": float(accuracy_score(labels, predicted)),
        # Balanced accuracy is the mean recall over the classes that occur in the references.
        "balanced_accuracy": float(recall[support > 0].mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "roc_auc_macro": float(np.mean(defined)) if defined.size else float("nan"),
    }
    for k, name in enumerate(names):
        results[f"precision_{name}"] = float(precision[k])
        results[f"recall_{name}"] = float(recall[k])
        results[f"f1_{name}"] = float(f1[k])
        results[f"support_{name}"] = int(support[k])
        results[f"roc_auc_{name}"] = float(aucs[k])
    results["confusion_matrix"] = confusion_matrix(labels, predicted, labels=class_ids).tolist()
    return results


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TissueClassification(evaluate.Metric):
    """Accuracy, precision, recall, F1, ROC AUC and confusion matrix from logits."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=[_SKLEARN_URL],
        )

    def _compute(
        self,
        predictions: Sequence[Sequence[float]],
        references: Sequence[int],
        class_names: Sequence[str] | None = None,
        from_logits: bool = True,
    ) -> dict[str, float | int | list[list[int]]]:
        scores, labels = _as_arrays(predictions, references)
        names = _resolve_names(class_names, scores.shape[1])
        return classification_scores(scores, labels, names, from_logits=from_logits)
