"""Training images/s of each config's architecture at full size, fed by the real data path against batches already
in memory, and the data path's cost in percent.

Run: python benchmarks/bench_train_step.py [--models vit_base resnet50] [--steps 3] [--repeats 2]
     python benchmarks/bench_train_step.py --device cuda --bf16 --batch-size 256 --steps 50  # on a GPU machine

Each model is built from its transformers (or timm) config with random weights, so nothing downloads, and trained
with the step of train_hf.py: its argument parsing over `configs/<model>.yaml` (optimizer, learning rate,
channels_last, workers), `build_model`, `PixelPreprocessor` and `TissueTrainer.train()`. Only the feed differs:

- end to end: DataLoader workers decode the PNG bytes with `TileCollator(augment=True)`, as in training;
- in memory: the same collated uint8 batches, made once before timing, handed out by the main process.

The preprocessor (float, stain jitter, normalisation) runs in the training step on both sides. Each step after the
warm-up is timed from one optimizer step's end to the next; images/s is the batch over the median step of all
repeats. The sides alternate in every repeat and each run starts from the same weights.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import yaml
from torch.utils.data import DataLoader
from transformers import PrinterCallback, TrainerCallback, TrainingArguments

from hmu_crc.training import (
    DataArguments,
    ModelArguments,
    TissueTrainer,
    build_model,
    load_config,
    load_tile_splits,
    parse_arguments,
    processor_geometry,
)
from hmu_crc.transforms import PixelPreprocessor, TileCollator

sys.path.insert(0, str(Path(__file__).parent))
from _tiles import prepare_sample, repeat_to

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "vit_base": {"model_type": "vit"},  # the defaults are ViT-B/16 at 224
    "resnet50": {"model_type": "resnet"},  # the defaults are ResNet-50
    # NOTE: EfficientNetConfig's defaults are B7 at 600 px; these are B0's coefficients.
    "efficientnet_b0": {
        "model_type": "efficientnet",
        "width_coefficient": 1.0,
        "depth_coefficient": 1.0,
        "image_size": 224,
        "dropout_rate": 0.2,
        "hidden_dim": 1280,
    },
    "swin_tiny": {"model_type": "swin"},  # the defaults are Swin-T: embed_dim 96, depths 2-2-6-2, window 7
    "r50_vit_hybrid": {"model_type": "timm_wrapper", "architecture": "vit_base_r50_s16_224"},
}
"""Each config's architecture as a random-init `model_config`, keyed by the config's file name."""


class StepTimer(TrainerCallback):
    """Seconds from one optimizer step's end to the next, after the warm-up.

    The device is synchronised only at the first and the last mark, so that the timed loop overlaps work as
    training does (Trainer itself waits for each step's loss when it checks it for NaN).
    """

    def __init__(self, warmup: int, synchronize: Callable[[], None]):
        self.warmup, self.synchronize, self.marks = warmup, synchronize, []

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step < self.warmup:
            return
        if state.global_step in (self.warmup, state.max_steps):
            self.synchronize()
        self.marks.append(time.perf_counter())

    def step_seconds(self) -> list[float]:
        return [end - start for start, end in itertools.pairwise(self.marks)]


class BatchesInMemory:
    """A collator that ignores its examples and hands out ready batches in turn: the feed without a data path."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self.batches, self.calls = batches, 0

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        self.calls += 1
        return self.batches[(self.calls - 1) % len(self.batches)]


def run_arguments(
    name: str, dataset: Path, scratch: Path, args: argparse.Namespace
) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """train_hf.py's arguments for `configs/<name>.yaml`, with the random-init model and the benchmark's overrides."""
    config = load_config(CONFIGS / f"{name}.yaml")
    config.pop("model_name_or_path", None)
    config.update(model_config=ARCHITECTURES[name], dataset=str(dataset))
    config_file = scratch / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    workers = args.num_workers if args.num_workers is not None else min(config["dataloader_num_workers"], cpus())
    bf16 = args.bf16 if args.bf16 is not None else args.device == "cuda" and config.get("bf16", False)
    overrides = {
        "output_dir": scratch / name,
        "per_device_train_batch_size": args.batch_size or (config["per_device_train_batch_size"] if gpu(args) else 8),
        "dataloader_num_workers": workers,
        "bf16": bf16,
        "use_cpu": not gpu(args),
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_strategy": "no",
        "load_best_model_at_end": False,
        "report_to": "none",
        "disable_tqdm": True,
    }
    argv = ["--config", str(config_file)]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    model_args, data_args, training_args = parse_arguments(argv)
    training_args.remove_unused_columns = False  # as train_hf.py: the collator needs the image bytes
    training_args.max_steps = warmup_steps(args, training_args) + args.steps
    return model_args, data_args, training_args


def warmup_steps(args: argparse.Namespace, training_args: TrainingArguments) -> int:
    """Untimed steps: as asked, else 1 on a CPU, else enough to drain what the workers prefetched.

    NOTE: the workers fill their queues while the model warms up; timing those batches would hide the data path's
    cost wherever it is the bottleneck (on a GPU). On a CPU a step takes far longer than decoding its batch.
    """
    if args.warmup is not None:
        return args.warmup
    if not gpu(args):
        return 1
    return training_args.dataloader_num_workers * (training_args.dataloader_prefetch_factor or 2) + 2


def in_memory_arguments(training_args: TrainingArguments) -> TrainingArguments:
    """The same arguments with the batches handed out by the main process."""
    return dataclasses.replace(
        training_args, dataloader_num_workers=0, dataloader_persistent_workers=False, dataloader_prefetch_factor=None
    )


def collated_batches(tiles: datasets.Dataset, collator: TileCollator, batch_size: int, count: int) -> list[dict]:
    loader = DataLoader(tiles, batch_size=batch_size, shuffle=True, collate_fn=collator, drop_last=True)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def timed_run(
    model: torch.nn.Module,
    training_args: TrainingArguments,
    train_set: datasets.Dataset,
    collator: Callable,
    preprocessor: PixelPreprocessor,
    processor: Any,
    args: argparse.Namespace,
) -> list[float]:
    """Seconds of each of `TissueTrainer.train()`'s steps after the warm-up."""
    timer = StepTimer(training_args.max_steps - args.steps, torch.cuda.synchronize if gpu(args) else lambda: None)
    trainer = TissueTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        data_collator=collator,
        processing_class=processor,
        callbacks=[timer],
        preprocessor=preprocessor,
    )
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics to stdout, where our JSON goes
    trainer.train()
    del trainer
    return timer.step_seconds()


def bench_model(name: str, dataset: Path, scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    model_args, data_args, training_args = run_arguments(name, dataset, scratch, args)
    batch_size = training_args.per_device_train_batch_size
    tiles = repeat_to(load_tile_splits(data_args)[data_args.train_split], batch_size * training_args.max_steps)
    pristine, processor = build_model(model_args)
    mean, std, size = processor_geometry(processor, model_args.image_size)
    preprocessor = PixelPreprocessor(mean, std, size, data_args.stain_jitter, model_args.channels_last)
    collator = TileCollator(augment=data_args.augment)
    feeds = {
        "end_to_end": (training_args, tiles, collator),
        "in_memory": (
            in_memory_arguments(training_args),
            datasets.Dataset.from_dict({"label": [0] * len(tiles)}),
            BatchesInMemory(collated_batches(tiles, collator, batch_size, min(8, training_args.max_steps))),
        ),
    }

    runs: dict[str, list[float]] = {side: [] for side in feeds}
    for repeat in range(args.repeats):
        for side in list(feeds) if repeat % 2 == 0 else list(feeds)[::-1]:
            model = copy.deepcopy(pristine)
            runs[side] += timed_run(model, *feeds[side], preprocessor, processor, args)
            del model
            release_memory(args)

    # Images/s of the median step: a step slowed by someone else's work on the machine moves it least.
    end_to_end, in_memory = (batch_size / statistics.median(runs[side]) for side in feeds)
    return {
        "parameters_m": round(sum(p.numel() for p in pristine.parameters()) / 1e6, 1),
        "batch_size": batch_size,
        "bf16": training_args.bf16,
        "optim": training_args.optim,
        "channels_last": model_args.channels_last,
        "dataloader_num_workers": training_args.dataloader_num_workers,
        "warmup_steps": training_args.max_steps - args.steps,
        "end_to_end_images_per_s": round(end_to_end, 2),
        "in_memory_images_per_s": round(in_memory, 2),
        "data_path_cost_percent": round(100 * (1 - end_to_end / in_memory), 1),
        "step_seconds": {side: [round(x, 3) for x in values] for side, values in runs.items()},
    }


def release_memory(args: argparse.Namespace) -> None:
    gc.collect()
    if gpu(args):
        torch.cuda.empty_cache()


def gpu(args: argparse.Namespace) -> bool:
    return args.device == "cuda"


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per run (default: 3 on CPU, 50 on GPU)")
    parser.add_argument(
        "--warmup", type=int, help="untimed steps first (default: 1 on CPU; on GPU workers x prefetch_factor + 2)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs per side and model; the median is reported")
    parser.add_argument("--batch-size", type=int, help="default: 8 on CPU, the config's on GPU")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers (default: the config's, up to the CPUs)")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        help="bf16 autocast (default: the config's on GPU, off on CPU)",
    )
    parser.add_argument("--dataset", type=Path, help="a prepared folder; default: write and prepare a sample")
    parser.add_argument("--tiles-per-class", type=int, default=100, help="size of the sample written")
    parser.add_argument("--patients", type=int, default=20, help="patients in the sample written")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch finds no CUDA device here; use --device cpu")
    args.steps = args.steps or (50 if gpu(args) else 3)
    if (args.warmup is not None and args.warmup < 1) or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    logging.disable(logging.WARNING)
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        dataset = args.dataset or prepare_sample(root, patients=args.patients, tiles_per_class=args.tiles_per_class)
        for name in args.models:
            results[name] = bench_model(name, dataset, root, args)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if gpu(args) else f"cpu ({cpus()} cores)",
                "torch_threads": torch.get_num_threads(),
                "steps": args.steps,
                "repeats": args.repeats,
                "models": results,
                "command": " ".join(["python", *sys.argv]),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
