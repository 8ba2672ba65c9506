"""Model cards for trained tissue classifiers: Hub metadata with a model-index, rendered from `model_cards/`."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCardData

from hmu_crc.labels import CLASS_DESCRIPTIONS, CLASS_NAMES
from hmu_crc.provenance import CITATION, KATHER_CITATION, LICENSE

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent.parent / "model_cards" / "tissue_classifier.md"
"""The card's text with `$name` placeholders (`string.Template`: no template engine needed, and Markdown's
braces stay as they are)."""
RESOLVED_CONFIG = "resolved_config.yaml"
"""Written by train_hf.py beside the model; the same name as `hmu_crc.training.RESOLVED_CONFIG`."""
OWN_SPLITS = ("train", "validation", "test")
"""Evaluated sets named after a split are the release's own tiles; any other name is an external config."""
CARD_METRICS = (
    ("accuracy", "accuracy", "Accuracy", None),
    ("balanced_accuracy", "balanced_accuracy", "Balanced accuracy", None),
    ("f1_macro", "f1", "F1 (macro)", "macro"),
    ("roc_auc_macro", "roc_auc", "ROC AUC (macro, one-vs-rest)", "macro"),
)
"""(key in `<set>_metrics.json`, model-index metric type, display name, metric config) for each card metric."""
FIGURES = (("roc", "ROC curves"), ("confusion_matrix", "Confusion matrix"), ("per_class", "Per-class scores"))
"""The pictures evaluation writes per set, `<set>_<suffix>.png`, with their captions."""
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""`namespace/name` as the Hub spells repository ids."""
SYNTHETIC_MARK = "prepared from the bundled synthetic sample"
"""A phrase of the dataset card of a folder prepared from `hmu-crc sample`."""


@dataclass(frozen=True)
class EvaluatedSet:
    """One `<name>_metrics.json` beside the model, with the dataset config and split it scored."""

    name: str
    config: str
    split: str
    metrics: dict[str, Any]


def read_run_config(model_dir: Path) -> dict[str, Any]:
    """The run's resolved configuration, or an empty dict (with a warning) for a model trained elsewhere."""
    path = model_dir / RESOLVED_CONFIG
    if not path.is_file():
        logger.warning("%s has no %s: the model card cannot state the training recipe", model_dir, RESOLVED_CONFIG)
        return {}
    return yaml.safe_load(path.read_text()) or {}


def evaluated_sets(model_dir: Path, tiles_config: str = "tiles") -> list[EvaluatedSet]:
    """Every `<set>_metrics.json` in `model_dir` (not in its subfolders): the release's own splits first, then
    the external sets by name."""
    found = []
    for path in sorted(model_dir.glob("*_metrics.json")):
        name = path.name.removesuffix("_metrics.json")
        config, split = (tiles_config, name) if name in OWN_SPLITS else (name, "test")
        found.append(EvaluatedSet(name, config, split, json.loads(path.read_text())))
    return sorted(found, key=lambda s: (s.name not in OWN_SPLITS, s.name))


def looks_like_repo_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub id (`namespace/name`) rather than a local path."""
    return bool(name) and REPO_ID.match(name) is not None and not Path(name).exists()


def card_dataset_id(run: dict[str, Any], dataset_id: str | None) -> str:
    """The dataset named in the card: the one given, else the run's when it is a Hub id, else the folder's name."""
    if dataset_id:
        return dataset_id
    trained_on = str(run.get("dataset") or "hmu_crc_hist550k")
    if looks_like_repo_id(trained_on):
        return trained_on
    name = Path(trained_on).name
    logger.warning(
        "the model was trained on the local folder %s; the card names the dataset %r; pass --dataset-id ORG/NAME "
        "to link the dataset as published on the Hub",
        trained_on,
        name,
    )
    return name


def card_metadata(model_name: str, dataset_id: str, sets: list[EvaluatedSet], base_model: str | None) -> ModelCardData:
    """The card's YAML: licence, library, task, tags, dataset, base model, and one model-index result per set."""
    results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_id,
            dataset_name=dataset_id,
            dataset_config=evaluated.config,
            dataset_split=evaluated.split,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_config=metric_config,
            metric_value=round(float(evaluated.metrics[key]), 4),
        )
        for evaluated in sets
        for key, metric_type, metric_name, metric_config in CARD_METRICS
        if evaluated.metrics.get(key) is not None  # a set missing a class has no macro ROC AUC
    ]
    return ModelCardData(
        license=LICENSE,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["histopathology", "colorectal-cancer", "pathology", "medical", "image-classification"],
        datasets=[dataset_id],
        base_model=base_model,
        metrics=[metric_type for _, metric_type, _, _ in CARD_METRICS],
        model_name=model_name,
        eval_results=results or None,
    )


def render_model_card(
    model_dir: str | Path, repo_id: str, *, dataset_id: str | None = None, template: Path = TEMPLATE
) -> str:
    """The README.md of a trained model's repository.

    Args:
        model_dir: The folder train_hf.py wrote: config.json, `resolved_config.yaml`, `<set>_metrics.json`,
            and the pictures.
        repo_id: Where the model is published; the card's examples load it from there.
        dataset_id: The dataset named in the metadata and the model-index (default: the run's `dataset` when it
            is a Hub id, else the prepared folder's name).
        template: The card's text with `$name` placeholders.

    Returns:
        The card: YAML metadata that `huggingface_hub.ModelCard` parses, then the text.
    """
    if not template.is_file():
        msg = (
            f"model card template {template} not found: expected the repository's model_cards/ folder beside the "
            "hmu_crc package; install from a clone with `pip install -e .`"
        )
        raise FileNotFoundError(msg)
    model_dir = Path(model_dir)
    run = read_run_config(model_dir)
    model_config = json.loads((model_dir / "config.json").read_text())
    dataset = card_dataset_id(run, dataset_id)
    sets = evaluated_sets(model_dir, str(run.get("dataset_config") or "tiles"))
    checkpoint = run.get("model_name_or_path")
    base_model = checkpoint if looks_like_repo_id(checkpoint) else None
    data = card_metadata(repo_id.split("/")[-1], dataset, sets, base_model)
    if checkpoint:
        origin = f"fine-tuned from `{checkpoint}`"
        base_licence = f"The base checkpoint `{checkpoint}` has its own licence, which applies as well."
    else:
        origin = "trained from scratch (random initialisation from a config, no pretrained weights)"
        base_licence = ""
    fields = {
        "metadata": data.to_yaml(),
        "title": f"{repo_id.split('/')[-1]}: colorectal tissue classifier",
        "synthetic_note": _synthetic_note(run),
        "architecture": (model_config.get("architectures") or ["?"])[0],
        "model_type": model_config.get("model_type", "?"),
        "origin": origin,
        "dataset_id": dataset,
        "dataset_link": f"https://huggingface.co/datasets/{dataset}" if looks_like_repo_id(dataset) else "#training",
        "classes_table": "\n".join(f"| {i} | {c} | {CLASS_DESCRIPTIONS[c]} |" for i, c in enumerate(CLASS_NAMES)),
        "results_table": _results_table(sets),
        "figures": _figures(model_dir, sets),
        "recipe": _recipe(run, checkpoint, model_config),
        "repo_id": repo_id,
        "image_size": str(run.get("image_size") or model_config.get("image_size") or 224),
        "license": LICENSE,
        "base_licence": base_licence,
        "citation": (CITATION + ("\n" + KATHER_CITATION if any(s.config != s.name for s in sets) else "")).strip(),
    }
    return Template(template.read_text()).substitute(fields)


def _synthetic_note(run: dict[str, Any]) -> str:
    card = Path(str(run.get("dataset") or "")) / "README.md"
    if card.is_file() and SYNTHETIC_MARK in card.read_text():
        return (
            "> **Trained on the bundled SYNTHETIC sample**: every tile was drawn by a program and carries no patient "
            "data. The numbers below say nothing about real tissue; this model is a test of the pipeline."
        )
    return ""


def _results_table(sets: list[EvaluatedSet]) -> str:
    if not sets:
        return "No `<set>_metrics.json` was found beside the model: it has not been evaluated."
    header = "| set | config | split | tiles | " + " | ".join(name for _, _, name, _ in CARD_METRICS) + " |"
    lines = [header, "|---" * (4 + len(CARD_METRICS)) + "|"]
    for s in sets:
        values = [s.metrics.get(key) for key, _, _, _ in CARD_METRICS]
        shown = " | ".join("n/a" if v is None else f"{v:.4f}" for v in values)
        lines.append(f"| {s.name} | {s.config} | {s.split} | {s.metrics.get('num_examples', '?')} | {shown} |")
    return "\n".join(lines)


def _figures(model_dir: Path, sets: list[EvaluatedSet]) -> str:
    blocks = []
    for s in sets:
        pictures = [(f"{s.name}_{suffix}.png", caption) for suffix, caption in FIGURES]
        shown = [f"![{caption}, {s.name}]({name})" for name, caption in pictures if (model_dir / name).is_file()]
        if shown:
            blocks.append(f"### {s.name}\n\n" + "\n".join(shown))
    return "\n\n".join(blocks)


def _recipe(run: dict[str, Any], checkpoint: str | None, model_config: dict[str, Any]) -> str:
    if not run:
        return f"The training recipe was not recorded (no `{RESOLVED_CONFIG}` beside the model)."
    start = (
        f"`{checkpoint}`" if checkpoint else f"trained from scratch from a `{model_config.get('model_type')}` config"
    )
    if run.get("num_folds"):
        split = f"fold {run.get('fold')} of {run['num_folds']} patient-grouped folds, seed {run.get('split_seed')}"
    else:
        split = f"`{run.get('train_split', 'train')}` / `{run.get('eval_split', 'validation')}` split by patient"
    steps = run.get("max_steps") or 0
    length = f"{steps} steps" if steps > 0 else f"{run.get('num_train_epochs')} epochs"
    precision = "bf16" if run.get("bf16") else "fp16" if run.get("fp16") else "fp32"
    rows = [
        ("base checkpoint", start),
        ("dataset", f"`{run.get('dataset')}`, config `{run.get('dataset_config', 'tiles')}`"),
        ("split", split),
        ("optimizer", f"`{run.get('optim')}`"),
        ("learning rate", run.get("learning_rate")),
        ("weight decay", run.get("weight_decay")),
        ("scheduler", f"`{run.get('lr_scheduler_type')}`, warmup {run.get('warmup_steps') or 0}"),
        ("length", length),
        ("batch size per device", run.get("per_device_train_batch_size")),
        ("gradient accumulation", run.get("gradient_accumulation_steps")),
        ("precision", precision),
        ("input size", run.get("image_size") or "the checkpoint's own"),
        ("augmentation", f"flips and quarter turns: {run.get('augment')}; HED stain jitter {run.get('stain_jitter')}"),
        ("class-balanced sampling", run.get("class_balanced")),
        ("seed", run.get("seed")),
    ]
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)
