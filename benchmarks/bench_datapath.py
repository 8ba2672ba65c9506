"""Tiles/s per core that our data path delivers to the model, against the transformers image-classification example's
torchvision pipeline, on the same tiles in the same run.

Run: python benchmarks/bench_datapath.py [--tiles 1024] [--repeats 7] [--batch-size 64]

Per core means one process, one torch thread, and a DataLoader with no workers, so each figure is what one
DataLoader worker delivers. Both sides decode, augment, normalise and collate the same PNG bytes:

- ours: `image` cast to `Image(decode=False)`, `TileCollator(augment=True)` (libspng decode, flips and quarter
  turns, uint8 batch), then `PixelPreprocessor(stain_jitter=0.05)` on the batch. In training that last step runs on
  the model's device, once per batch; here it runs on the CPU and its cost is counted.
- the example's (`run_image_classification.py`, training transforms): `datasets` decodes each tile to a PIL image,
  `with_transform` applies RandomResizedCrop, RandomHorizontalFlip, ToTensor and Normalize, and the collate stacks
  `pixel_values` and `labels`.

The sides alternate in every repeat. Our pass also times, on the same batches, the loader alone (what a worker
delivers when the preprocessor runs on a GPU) and the preprocessor without stain jitter (the example has none).
The decode alone (Pillow as `datasets` calls it, against libspng) is timed on the same bytes, and its share of each
pipeline's time is reported.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import datasets
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop, ToTensor

from hmu_crc.training import IMAGENET_MEAN, IMAGENET_STD
from hmu_crc.transforms import PixelPreprocessor, TileCollator, decode_tile

sys.path.insert(0, str(Path(__file__).parent))
from _tiles import prepare_sample, repeat_to


def example_loader(tiles: datasets.Dataset, size: int, batch_size: int) -> DataLoader:
    """The example's training pipeline: PIL images from `datasets`, torchvision transforms, a stacking collate."""
    train_transforms = Compose(
        [RandomResizedCrop((size, size)), RandomHorizontalFlip(), ToTensor(), Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )

    def transform(batch: dict) -> dict:
        batch["pixel_values"] = [train_transforms(image.convert("RGB")) for image in batch["image"]]
        return batch

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        return {"pixel_values": pixel_values, "labels": torch.tensor([example["label"] for example in examples])}

    return DataLoader(tiles.with_transform(transform), batch_size=batch_size, collate_fn=collate)


def example_pass(loader: DataLoader) -> tuple[int, float]:
    """Tiles delivered and seconds taken by one pass of the example's loader."""
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch["labels"])
    return count, time.perf_counter() - start


def our_pass(loader: DataLoader, preprocessors: dict[str, PixelPreprocessor]) -> tuple[int, float, dict[str, float]]:
    """Tiles, seconds in the loader (the workers' share), and seconds in each preprocessor (the device's share in
    training), all on the same batches."""
    count, in_loader, on_device = 0, 0.0, dict.fromkeys(preprocessors, 0.0)
    start = time.perf_counter()
    for batch in loader:
        in_loader += time.perf_counter() - start
        for name, preprocess in preprocessors.items():
            before = time.perf_counter()
            preprocess(batch["pixel_values"], train=True)
            on_device[name] += time.perf_counter() - before
        count += len(batch["labels"])
        start = time.perf_counter()
    return count, in_loader, on_device


def pillow_decode(data: bytes) -> Image.Image:
    """What `datasets.Image` does before the example's transforms see the tile."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def ms_per_tile(decode: Callable[[bytes], object], blobs: Iterable[bytes], count: int) -> float:
    start = time.perf_counter()
    for data in blobs:
        decode(data)
    return (time.perf_counter() - start) / count * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="a prepared folder; default: write and prepare a sample")
    parser.add_argument("--tiles", type=int, default=1024, help="tiles per pass (the sample is cycled if smaller)")
    parser.add_argument("--tiles-per-class", type=int, default=100, help="size of the sample written")
    parser.add_argument("--patients", type=int, default=20, help="patients in the sample written")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224, help="input size of the model")
    parser.add_argument("--stain-jitter", type=float, default=0.05, help="train_hf.py's default")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.dataset or prepare_sample(
            Path(scratch), patients=args.patients, tiles_per_class=args.tiles_per_class
        )
        tiles = repeat_to(datasets.load_dataset(str(folder), "tiles", split="train"), args.tiles)
        raw = tiles.cast_column("image", datasets.Image(decode=False))
        blobs = [image["bytes"] for image in raw["image"]]

        theirs_loader = example_loader(tiles, args.size, args.batch_size)
        ours_loader = DataLoader(raw, batch_size=args.batch_size, collate_fn=TileCollator(augment=True))
        preprocessors = {
            "jitter": PixelPreprocessor(IMAGENET_MEAN, IMAGENET_STD, args.size, stain_jitter=args.stain_jitter),
            "plain": PixelPreprocessor(IMAGENET_MEAN, IMAGENET_STD, args.size),
        }
        example_pass(theirs_loader), our_pass(ours_loader, preprocessors)  # warm up both

        runs: dict[str, list[float]] = {name: [] for name in ("ours", "example", "worker", "plain", "pillow", "spng")}
        for repeat in range(args.repeats):
            for side in ("ours", "example") if repeat % 2 == 0 else ("example", "ours"):
                if side == "ours":
                    count, in_loader, on_device = our_pass(ours_loader, preprocessors)
                    runs["ours"].append(count / (in_loader + on_device["jitter"]))
                    runs["plain"].append(count / (in_loader + on_device["plain"]))
                    runs["worker"].append(count / in_loader)
                    runs["spng"].append(ms_per_tile(decode_tile, blobs, len(blobs)))
                else:
                    count, seconds = example_pass(theirs_loader)
                    runs["example"].append(count / seconds)
                    runs["pillow"].append(ms_per_tile(pillow_decode, blobs, len(blobs)))

    rate = {name: statistics.median(values) for name, values in runs.items()}
    result = {
        "tiles": len(blobs),
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "mean_png_kib": round(sum(map(len, blobs)) / len(blobs) / 1024, 1),
        "ours_tiles_per_s_per_core": round(rate["ours"], 1),
        "example_tiles_per_s_per_core": round(rate["example"], 1),
        "speedup": round(rate["ours"] / rate["example"], 2),
        "ours_without_stain_jitter_tiles_per_s_per_core": round(rate["plain"], 1),
        "speedup_without_stain_jitter": round(rate["plain"] / rate["example"], 2),
        "ours_worker_side_tiles_per_s_per_core": round(rate["worker"], 1),
        "speedup_worker_side": round(rate["worker"] / rate["example"], 2),
        "decode_ms_per_tile": {"pillow": round(rate["pillow"], 3), "pyspng": round(rate["spng"], 3)},
        "decode_speedup": round(rate["pillow"] / rate["spng"], 2),
        "decode_share": {
            "ours": round(rate["spng"] * rate["ours"] / 1e3, 3),
            "ours_worker_side": round(rate["spng"] * rate["worker"] / 1e3, 3),
            "example": round(rate["pillow"] * rate["example"] / 1e3, 3),
        },
        "note": (
            "ours counts PixelPreprocessor (float, HED stain jitter, normalise) on one CPU core; train_hf.py runs it "
            "on the model's device, so on a GPU each DataLoader worker delivers ours_worker_side. The example has "
            "no stain jitter: ours_without_stain_jitter is the like-for-like augmentation"
        ),
        "runs": {
            name: [round(x, 3 if name in ("pillow", "spng") else 1) for x in values] for name, values in runs.items()
        },
        "command": " ".join(["python", *sys.argv]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
