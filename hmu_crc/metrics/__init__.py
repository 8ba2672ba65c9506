"""The tissue classification metric, loaded by path through `evaluate` so it works offline."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import evaluate
import numpy as np

from hmu_crc.labels import CLASS_NAMES

METRIC_PATH = Path(__file__).resolve().parent / "tissue_classification"
"""Folder of the `evaluate` metric; `evaluate.load` expects the script to share its name."""


def load_tissue_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """Loads the tissue classification metric from this package, without the network.

    Args:
        **kwargs: Passed on to `evaluate.load`, e.g. `keep_in_memory=True`, or `experiment_id`,
            `process_id` and `num_process` for evaluation spread over several processes.

    Returns:
        The metric; see the module docstring of `tissue_classification.py` for its output keys.
    """
    return evaluate.load(str(METRIC_PATH), **kwargs)


def compute_from_logits(
    logits: np.ndarray | Sequence[Sequence[float]],
    labels: np.ndarray | Sequence[int],
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Scores a classifier's logits, for `Trainer`'s `compute_metrics` or a standalone evaluation.

    Args:
        logits: One row of logits per example, shape (examples, classes).
        labels: The true class id of each example, shape (examples,).
        class_names: One name per logit column, used in the per-class keys.

    Returns:
        Flat scalars such as `accuracy`, `f1_macro`, `f1_ADI`, `roc_auc_TUM`, and
        `confusion_matrix` as a list of lists (rows: references, columns: predictions).

    Raises:
        ValueError: If `logits` is not 2-D, `labels` not 1-D, or the metric rejects them.
    """
    scores = np.asarray(logits, dtype=np.float32)
    references = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or references.ndim != 1:
        msg = (
            f"expected logits of shape (examples, classes) and labels of shape (examples,), "
            f"found {scores.shape} and {references.shape}; pass the logits, not argmax ids."
        )
        raise ValueError(msg)
    metric = load_tissue_metric(keep_in_memory=True)
    names = list(class_names)
    return metric.compute(predictions=scores, references=references, class_names=names)
