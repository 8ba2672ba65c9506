"""The pieces of `train_hf.py`: arguments, YAML configs, data, model, and a Trainer that normalises on the device."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import yaml
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    ViTImageProcessor,
)

from hmu_crc.labels import CLASS_NAMES, ID2LABEL, LABEL2ID
from hmu_crc.splits import SplitSpec, assign_splits
from hmu_crc.transforms import PixelPreprocessor

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESOLVED_CONFIG = "resolved_config.yaml"
"""Written beside the outputs: every argument of the run, so that it can be repeated and cited in a card."""
EXTERNAL_SETS = ("crc_val_he_7k", "nct_crc_he_100k")


@dataclass
class ModelArguments:
    """Which model to fine-tune."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or folder of a checkpoint; leave empty to build from model_config."}
    )
    model_config: dict | None = field(
        default=None,
        metadata={"help": "Build a randomly initialised model from these config fields (YAML only), e.g. the demo."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Input size; defaults to the checkpoint's own (224 for every config here)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run code from the checkpoint's repository; only for repositories you trust."}
    )
    channels_last: bool = field(default=False, metadata={"help": "channels_last memory format (faster CNNs on GPU)."})

    def __post_init__(self) -> None:
        if (self.model_name_or_path is None) == (self.model_config is None):
            raise ValueError("give exactly one of model_name_or_path (a checkpoint) and model_config (random init)")


@dataclass
class DataArguments:
    """Which data to train and evaluate on, and how to feed it."""

    dataset: str = field(
        default="hmu_crc_hist550k",
        metadata={"help": "Prepared folder, Hub id, or the raw release folder (read through the builder)."},
    )
    dataset_config: str = field(default="tiles", metadata={"help": "Config of the dataset: tiles or tiles_clinical."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str = field(default="validation", metadata={"help": "Split to evaluate on during and after training."})
    external_eval: list[str] = field(
        default_factory=lambda: list(EXTERNAL_SETS),
        metadata={"help": "External test sets evaluated after training, when the dataset has them ('none': skip)."},
    )
    num_folds: int = field(
        default=0, metadata={"help": "Re-split train+validation into this many patient-grouped folds (0: keep)."}
    )
    fold: int = field(default=0, metadata={"help": "The fold used as validation when num_folds is set."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the patient-grouped split or folds."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N tiles (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N tiles (debugging)."})
    augment: bool = field(default=True, metadata={"help": "Random flips and quarter turns of training tiles."})
    stain_jitter: float = field(default=0.05, metadata={"help": "HED stain jitter strength while training (0: off)."})
    class_balanced: bool = field(default=False, metadata={"help": "Sample training tiles with equal class weight."})
    early_stopping_patience: int = field(
        default=0, metadata={"help": "Stop after this many evaluations without improvement (0: never)."}
    )

    def __post_init__(self) -> None:
        if self.external_eval == ["none"]:
            self.external_eval = []
        if self.num_folds:
            SplitSpec(num_folds=self.num_folds, fold=self.fold)  # validates the pair
        if not 0 <= self.stain_jitter < 1:
            raise ValueError(f"stain_jitter must be in [0, 1), found {self.stain_jitter}; 0.05 is a mild default")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments)


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Read `--config FILE.yaml` as defaults, then let every other flag on the command line override it."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", type=Path)
    known, rest = first.parse_known_args(argv)
    defaults = load_config(known.config) if known.config else {}
    for name, value in run_defaults().items():
        if name not in defaults and not _on_command_line(name, rest):
            defaults[name] = value
    _drop_worker_options_without_workers(defaults, rest)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.set_defaults(**defaults)
    # HfArgumentParser marks fields without defaults as required even when the YAML gives them.
    for action in parser._actions:
        if action.dest in defaults:
            action.required = False
    return parser.parse_args_into_dataclasses(args=rest)


def _on_command_line(name: str, argv: Sequence[str]) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in argv)


def _drop_worker_options_without_workers(defaults: dict[str, Any], argv: Sequence[str]) -> None:
    """`--dataloader_num_workers 0` (decoding in the main process, as one does to debug the data path) over a
    YAML that sets prefetching or persistent workers: those two only apply to workers, and TrainingArguments
    refuses them without any, so the YAML's values are dropped; given on the command line, they stay."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dataloader_num_workers", type=int)
    workers = parser.parse_known_args(argv)[0].dataloader_num_workers
    if (defaults.get("dataloader_num_workers") if workers is None else workers) != 0:
        return
    for name in ("dataloader_prefetch_factor", "dataloader_persistent_workers"):
        if name in defaults and not _on_command_line(name, argv):
            logger.info("no DataLoader workers: the config's %s=%s does not apply", name, defaults.pop(name))


def load_config(path: Path) -> dict[str, Any]:
    """A YAML config as a flat dict of argument names; an unknown key is an error that names the file."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values, found {type(config).__name__}")
    known = {f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{path}: unknown argument(s) {unknown}; see `python train_hf.py --help` for the names")
    return config


def run_defaults() -> dict[str, Any]:
    """Where this script's defaults differ from TrainingArguments': it trains unless told not to, feeds the GPU
    from worker processes, and logs to the trackers that are installed."""
    return {
        "do_train": True,
        "dataloader_num_workers": min(8, os.cpu_count() or 1),
        "dataloader_pin_memory": torch.cuda.is_available(),
        "report_to": installed_trackers(),
    }


def installed_trackers() -> list[str]:
    """TensorBoard and trackio, where installed; logging stays local either way."""
    return [name for name in ("tensorboard", "trackio") if importlib.util.find_spec(name) is not None] or ["none"]


def save_resolved_config(
    output_dir: str | Path, model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments
) -> Path:
    """Write every argument of the run as YAML beside its outputs; tokens are never written."""
    resolved: dict[str, Any] = {}
    for arguments in (model_args, data_args):
        resolved.update(dataclasses.asdict(arguments))
    resolved.update(training_args.to_dict())
    resolved = {k: v for k, v in resolved.items() if "token" not in k}
    path = Path(output_dir) / RESOLVED_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(resolved, sort_keys=True))
    return path


def load_tile_splits(data_args: DataArguments) -> datasets.DatasetDict:
    """The tiles to train and evaluate on, with image bytes left undecoded for the DataLoader workers."""
    splits = load_config_splits(data_args.dataset, data_args.dataset_config)
    if data_args.num_folds:
        splits = refold(
            splits, SplitSpec(num_folds=data_args.num_folds, fold=data_args.fold, seed=data_args.split_seed)
        )
    for name, limit in (
        (data_args.train_split, data_args.max_train_samples),
        (data_args.eval_split, data_args.max_eval_samples),
    ):
        if limit is not None and name in splits:
            splits[name] = splits[name].select(range(min(limit, len(splits[name]))))
    for name, split in splits.items():
        check_label_names(split, f"{data_args.dataset} ({data_args.dataset_config}, {name})")
    return splits.cast_column("image", datasets.Image(decode=False))


def check_label_names(dataset: datasets.Dataset, where: str) -> None:
    """Refuse a dataset whose `label` is not a ClassLabel of our eight tissue classes in our order: its label ids
    would be read as other classes without a sound.

    Raises:
        ValueError: Naming the dataset, the labels found and the fix.
    """
    feature = dataset.features.get("label")
    found = list(feature.names) if isinstance(feature, datasets.ClassLabel) else feature
    if found != list(CLASS_NAMES):
        msg = (
            f"{where}: expected a ClassLabel column 'label' with the names {list(CLASS_NAMES)} in that order, found "
            f"{found}; prepare the data with `hmu-crc prepare`, or reorder its labels with "
            "Dataset.align_labels_with_mapping(dict(LABEL2ID), 'label') (LABEL2ID from hmu_crc.labels) and save it"
        )
        raise ValueError(msg)


def load_config_splits(dataset: str, config: str) -> datasets.DatasetDict:
    """Load one config from a prepared folder or the Hub, or build it from a raw release with the builder."""
    if is_raw_release(dataset):
        from hmu_crc_hist550k import HmuCrcHist550k

        builder = HmuCrcHist550k(config_name=config, data_dir=dataset)
        builder.download_and_prepare()
        return builder.as_dataset()
    return datasets.load_dataset(dataset, config)


def is_raw_release(dataset: str) -> bool:
    """A local folder with class folders or archives but no dataset card is a release as published."""
    folder = Path(dataset)
    if not folder.is_dir() or (folder / "README.md").exists():
        return False
    return any((folder / name).is_dir() for name in CLASS_NAMES) or any(folder.glob("*.zip"))


def refold(splits: datasets.DatasetDict, spec: SplitSpec) -> datasets.DatasetDict:
    """Re-cut train + validation into patient-grouped folds; `test` (if any) is left as it was."""
    pool = datasets.concatenate_datasets([splits[name] for name in ("train", "validation") if name in splits])
    split_of = assign_splits(pool["patient_id"], np.asarray(pool["label"]), spec)
    chosen = np.array([split_of[patient] for patient in pool["patient_id"]])
    result = datasets.DatasetDict(
        {name: pool.select(np.flatnonzero(chosen == name)) for name in ("train", "validation")}
    )
    if "test" in splits:
        result["test"] = splits["test"]
    return result


def load_external_sets(data_args: DataArguments) -> dict[str, datasets.Dataset]:
    """Kather's sets found in the dataset (prepared folder or Hub id); absent ones are skipped with a note."""
    if is_raw_release(data_args.dataset):
        logger.info("external sets are evaluated from a prepared folder or Hub id, not from a raw release")
        return {}
    return load_evaluation_sets(data_args.dataset, [(name, "test") for name in data_args.external_eval])


def load_evaluation_sets(dataset: str, wanted: Sequence[tuple[str, str | None]]) -> dict[str, datasets.Dataset]:
    """Load each (config, split) that the dataset has, named `<split>` for the release's own tiles and
    `<config>` for the external sets; split None means validation, or test for a config that has only that."""
    available = set(datasets.get_dataset_config_names(dataset))
    found = {}
    for config, split in wanted:
        if config not in available:
            logger.info("%s is not a config of %s; skipped", config, dataset)
            continue
        parts = datasets.load_dataset(dataset, config)
        chosen = split or ("validation" if "validation" in parts else next(iter(parts)))
        name = chosen if config in ("tiles", "tiles_clinical") else config
        check_label_names(parts[chosen], f"{dataset} ({config}, {chosen})")
        found[name] = parts[chosen].cast_column("image", datasets.Image(decode=False))
    return found


def build_model(model_args: ModelArguments) -> tuple[PreTrainedModel, Any]:
    """The classifier with our eight labels, and the image processor whose normalisation it expects."""
    labels = {"num_labels": len(CLASS_NAMES), "id2label": dict(ID2LABEL), "label2id": dict(LABEL2ID)}
    if model_args.model_config is not None:
        fields = dict(model_args.model_config)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields, **labels)
        model = AutoModelForImageClassification.from_config(config)
        size = model_args.image_size or getattr(config, "image_size", 224)
        processor = ViTImageProcessor(
            size={"height": size, "width": size}, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)
        )
        return model, processor
    name, remote = model_args.model_name_or_path, model_args.trust_remote_code
    model = AutoModelForImageClassification.from_pretrained(
        name, **labels, ignore_mismatched_sizes=True, trust_remote_code=remote
    )
    processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=remote)
    return model, processor


def processor_geometry(processor: Any, image_size: int | None) -> tuple[list[float], list[float], int]:
    """Mean, std and input size from any image processor, timm's included."""
    config = getattr(processor, "data_config", None)
    if config:  # timm wrapper
        return list(config["mean"]), list(config["std"]), image_size or int(config["input_size"][-1])
    size = getattr(processor, "crop_size", None) or processor.size
    if isinstance(size, int):
        side = size
    else:  # a dict, or the fast processors' SizeDict
        fields = size if isinstance(size, dict) else vars(size)
        side = fields.get("height") or fields.get("shortest_edge")
    return list(processor.image_mean), list(processor.image_std), int(image_size or side or 224)


class TissueTrainer(Trainer):
    """A Trainer whose batches arrive as uint8 and are normalised (and stain-jittered when training) on the
    device, with optional class-balanced sampling.

    `train_collator`, when given, builds the training batches (with the random flips and quarter turns), while
    evaluation and prediction keep `data_collator`: Trainer itself uses one collator for every loader, which would
    score the validation split on randomly turned tiles, differently at each evaluation.
    """

    def __init__(
        self,
        *args: Any,
        preprocessor: PixelPreprocessor,
        train_collator: Callable[[Sequence[dict]], dict[str, torch.Tensor]] | None = None,
        class_balanced: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.preprocessor = preprocessor
        self.train_collator = train_collator
        self.class_balanced = class_balanced

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        if self.train_collator is None:
            return super().get_train_dataloader()
        # NOTE: Trainer builds every loader from `self.data_collator`, so the training collator stands in for it
        # while the training loader is made.
        shared, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = shared

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        inputs = super()._prepare_inputs(inputs)
        pixels = inputs.get("pixel_values")
        if pixels is not None and pixels.dtype == torch.uint8:
            inputs["pixel_values"] = self.preprocessor(pixels, train=self.model.training)
        return inputs

    def _get_train_sampler(self, train_dataset: datasets.Dataset | None = None) -> torch.utils.data.Sampler | None:
        if not self.class_balanced:
            return super()._get_train_sampler(train_dataset)
        labels = np.asarray((train_dataset or self.train_dataset)["label"])
        weights = 1.0 / np.bincount(labels, minlength=len(CLASS_NAMES))[labels]
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(weights, len(labels), replacement=True, generator=generator)


def trainer_metrics(class_names: Sequence[str] = CLASS_NAMES) -> Any:
    """`compute_metrics` for Trainer: every scalar of the tissue metric (the confusion matrix goes to JSON later)."""
    from hmu_crc.metrics import compute_from_logits

    def compute(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        scores = compute_from_logits(logits, prediction.label_ids, class_names)
        return {k: v for k, v in scores.items() if k != "confusion_matrix"}

    return compute
