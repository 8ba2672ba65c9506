"""Evaluating a classifier on a split: metrics JSON, every prediction as CSV, and the paper's pictures."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, Trainer, TrainingArguments

from hmu_crc.figures import write_figures
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.metrics import compute_from_logits
from hmu_crc.training import TissueTrainer, processor_geometry
from hmu_crc.transforms import PixelPreprocessor, TileCollator

logger = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def check_labels(model: PreTrainedModel) -> None:
    """Refuse a model whose labels are not our eight tissue classes in our order."""
    found = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    if found != list(CLASS_NAMES):
        msg = (
            f"model labels {found} do not match the tissue classes {list(CLASS_NAMES)} in that order; "
            "pass a model trained with train_hf.py, or fine-tune yours with it first"
        )
        raise ValueError(msg)


def evaluate_split(trainer: Trainer, dataset: datasets.Dataset, name: str, output_dir: Path) -> dict[str, Any]:
    """Predict every tile of `dataset` once, then write `{name}_metrics.json`, `{name}_predictions.csv` and the
    figures (ROC curves, confusion matrix, per-class scores) into `output_dir` on the main process.

    Returns:
        The metrics, with `num_examples` and the confusion matrix.
    """
    output = trainer.predict(dataset, metric_key_prefix=name)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    labels = np.asarray(output.label_ids)
    metrics = compute_from_logits(logits, labels, CLASS_NAMES)
    metrics["num_examples"] = len(labels)
    if not trainer.is_world_process_zero():
        return metrics
    output_dir.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    (output_dir / f"{name}_metrics.json").write_text(json.dumps(clean, indent=2) + "\n")
    probabilities = softmax(logits.astype(np.float64))
    table = pd.DataFrame(probabilities, columns=[f"prob_{c}" for c in CLASS_NAMES])
    table.insert(0, "predicted", [CLASS_NAMES[i] for i in probabilities.argmax(axis=1)])
    table.insert(0, "label", [CLASS_NAMES[i] for i in labels])
    if "file_name" in dataset.column_names:
        table.insert(0, "file_name", dataset["file_name"])
    table.to_csv(output_dir / f"{name}_predictions.csv", index=False, float_format="%.6f")
    title = f"{name} ({len(labels)} tiles)"
    write_figures(labels, probabilities, metrics, CLASS_NAMES, output_dir, prefix=name, title=title)
    logger.info(
        "%s: accuracy %.4f, macro F1 %.4f, %d tiles", name, metrics["accuracy"], metrics["f1_macro"], len(labels)
    )
    return metrics


def evaluation_trainer(model: PreTrainedModel, processor: Any, output_dir: Path, batch_size: int = 64) -> Trainer:
    """A Trainer that only predicts, with the same data path as training (no augmentation)."""
    mean, std, size = processor_geometry(processor, None)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_eval_batch_size=batch_size,
        dataloader_num_workers=min(8, os.cpu_count() or 1),
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=False,
        report_to="none",
    )
    return TissueTrainer(
        model=model,
        args=args,
        data_collator=TileCollator(augment=False),
        processing_class=processor,
        preprocessor=PixelPreprocessor(mean, std, size),
    )
