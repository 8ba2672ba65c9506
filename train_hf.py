"""Fine-tune a tissue classifier on HMU-CRC-Hist550K with transformers.Trainer.

    python train_hf.py --config configs/vit_base.yaml [--learning_rate 1e-4 ...]
    accelerate launch --num_processes 4 --multi_gpu train_hf.py --config configs/resnet50.yaml

The YAML gives defaults, the command line overrides them, and the resolved configuration is saved beside the
outputs. Running the same command again continues from the last checkpoint in `output_dir`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import transformers
from transformers import EarlyStoppingCallback
from transformers.trainer_utils import get_last_checkpoint

from hmu_crc.evaluation import evaluate_split
from hmu_crc.hub import claim_trainer_push, push_model
from hmu_crc.training import (
    TissueTrainer,
    build_model,
    load_external_sets,
    load_tile_splits,
    parse_arguments,
    processor_geometry,
    save_resolved_config,
    trainer_metrics,
)
from hmu_crc.transforms import PixelPreprocessor, TileCollator

logger = logging.getLogger("train_hf")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, evaluate on the validation split and the external sets, and return every metric."""
    # Arguments: YAML defaults, command-line overrides.
    model_args, data_args, training_args = parse_arguments(argv)
    # NOTE: the collator needs the image bytes, which Trainer would drop as "unused" by the model.
    training_args.remove_unused_columns = False
    setup_logging(training_args)
    # Hub: --push_to_hub is ours, not Trainer's; repository id and token are checked now, the push comes last.
    hub_repo = claim_trainer_push(training_args)
    logger.info("processes: %d, device: %s", training_args.world_size, training_args.device)

    # A checkpoint left by an interrupted run of this command is where we continue.
    checkpoint = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
    if checkpoint:
        logger.info("resuming from %s", checkpoint)

    # Data: tiles with their bytes undecoded; decoding happens in the DataLoader workers.
    with training_args.main_process_first(desc="loading the dataset"):
        splits = load_tile_splits(data_args)
        external = load_external_sets(data_args)
    train_set, eval_set = splits[data_args.train_split], splits.get(data_args.eval_split)

    # Model and its normalisation, applied to whole batches on the device.
    model, processor = build_model(model_args)
    mean, std, size = processor_geometry(processor, model_args.image_size)
    preprocessor = PixelPreprocessor(mean, std, size, data_args.stain_jitter, model_args.channels_last)

    trainer = TissueTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=TileCollator(),
        train_collator=TileCollator(augment=data_args.augment),
        compute_metrics=trainer_metrics(),
        processing_class=processor,
        callbacks=early_stopping(data_args.early_stopping_patience),
        preprocessor=preprocessor,
        class_balanced=data_args.class_balanced,
    )
    if trainer.is_world_process_zero():
        save_resolved_config(training_args.output_dir, model_args, data_args, training_args)

    # Train, then keep the final (or best) model beside its processor.
    results: dict[str, Any] = {}
    if training_args.do_train:
        outcome = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        trainer.save_state()
        results["train"] = outcome.metrics

    # Evaluate every tile of the validation split and of each external set exactly once.
    output_dir = Path(training_args.output_dir)
    evaluated = ({data_args.eval_split: eval_set} if eval_set is not None else {}) | external
    for name, dataset in evaluated.items():
        results[name] = evaluate_split(trainer, dataset, name, output_dir)

    if trainer.is_world_process_zero():
        (output_dir / "all_results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        logger.info("metrics, predictions and pictures are in %s", output_dir)
        if hub_repo:  # one commit: weights, card, metrics, pictures; see hmu_crc.hub.MODEL_FILES
            private = training_args.hub_private_repo is not False
            push_model(output_dir, hub_repo, private=private, token=training_args.hub_token)
    return results


def setup_logging(training_args: transformers.TrainingArguments) -> None:
    """INFO from our loggers on the main process, warnings elsewhere; the libraries stay at their own level
    unless `--log_level` says otherwise."""
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    for name in ("train_hf", "hmu_crc"):
        logging.getLogger(name).setLevel(level)
    if training_args.log_level != "passive":
        datasets.utils.logging.set_verbosity(training_args.get_process_log_level())
        transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


def early_stopping(patience: int) -> list[EarlyStoppingCallback]:
    return [EarlyStoppingCallback(early_stopping_patience=patience)] if patience > 0 else []


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
