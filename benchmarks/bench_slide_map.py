"""Tiles/s of `hmu-crc slide-map` on a synthetic slide, against the bare forward pass of the same model on the same
tiles, in the same run.

Run: python benchmarks/bench_slide_map.py [--rows 16] [--columns 20] [--repeats 5] [--batch-size 64]

- slide-map: `map_slide` end to end with the model already loaded: open the slide, read the thumbnail, find tissue,
  read the tissue tiles in threads, classify them, stream the Parquet file, write the JSON and the PNG.
- bare: `predict_batch` (the model's own resize and normalisation, then the forward pass) on the very tiles
  slide-map classifies, read into memory beforehand, in batches of the same size.

The sides alternate in every repeat; the figures are medians. The model is built from a config with random weights
(`--architecture demo`, the default, or `resnet50`; nothing downloads) unless `--model` names a trained folder. The
overhead is what reading, tissue finding and writing add: slide-map's time over the bare pass's, minus one. It is
a fixed part (thumbnail, tissue mask, PNG: about 0.3 s) and a part a tile, mostly decoding the slide's tiles (about
a millisecond of CPU a tile for these deflate tiles; `--compression none` leaves it out), so it shrinks as the model
grows. Where the machine is shared, run more repeats.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from hmu_crc import tissue
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.predict import load_classifier, predict_batch
from hmu_crc.sample import TILE_SIZE
from hmu_crc.slide_map import Classifier, map_slide
from hmu_crc.slides import open_slide
from hmu_crc.synthetic_slide import render_layout, write_pyramid_tiff
from hmu_crc.training import ModelArguments, build_model

ROOT = Path(__file__).resolve().parents[1]


ARCHITECTURES = {
    "demo": "configs/demo.yaml's model_config and image_size",
    "resnet50": "transformers' ResNetConfig defaults (ResNet-50, as configs/resnet50.yaml fine-tunes) at 224 px",
}


def build_architecture(name: str, folder: Path) -> Path:
    """A model of `ARCHITECTURES` with random weights, saved as train_hf.py saves one; nothing downloads."""
    if name == "demo":
        config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
        arguments = ModelArguments(model_config=config["model_config"], image_size=config["image_size"])
    else:
        arguments = ModelArguments(model_config={"model_type": "resnet"}, image_size=224)
    model, processor = build_model(arguments)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def synthetic_slide(path: Path, rows: int, columns: int, glass: float, scale: int, compression: str) -> Path:
    """A slide of random classes with a share of glass tiles, at 0.5/scale µm/px."""
    rng = np.random.default_rng(0)
    codes = [*CLASS_NAMES, None]
    weights = [(1 - glass) / len(CLASS_NAMES)] * len(CLASS_NAMES) + [glass]
    layout = [[codes[i] for i in rng.choice(len(codes), size=columns, p=weights)] for _ in range(rows)]
    pixels = render_layout(layout, rng, scale=scale)
    return write_pyramid_tiff(path, pixels, 0.5 / scale, compression=compression)


def tissue_tiles(slide_path: Path, mpp: float) -> list[np.ndarray]:
    """The tiles slide-map classifies, read in its order."""
    with open_slide(slide_path) as slide:
        found = tissue.find_tissue(slide, round(TILE_SIZE * mpp / slide.mpp), TILE_SIZE)
        return [found.grid.read(slide, row, column) for row, column in found.cells]


def bare_pass(classifier: Classifier, tiles: list[np.ndarray], batch_size: int) -> float:
    start = time.perf_counter()
    for first in range(0, len(tiles), batch_size):
        predict_batch(*classifier, tiles[first : first + batch_size])
    return time.perf_counter() - start


def map_pass(slide: Path, model: Path, out: Path, classifier: Classifier, args: argparse.Namespace) -> float:
    start = time.perf_counter()
    map_slide(
        slide,
        model,
        out,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        classifier=classifier,
        mpp=args.mpp,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a trained model folder, instead of --architecture")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default="demo", help="random-weight model")
    parser.add_argument("--rows", type=int, default=16, help="tile rows of the synthetic slide")
    parser.add_argument("--columns", type=int, default=20, help="tile columns of the synthetic slide")
    parser.add_argument("--glass", type=float, default=0.2, help="share of glass tiles in the slide")
    parser.add_argument("--scale", type=int, default=1, help="write the slide at 0.5/scale µm/px")
    parser.add_argument("--compression", choices=["zlib", "none"], default="zlib", help="of the slide's TIFF tiles")
    parser.add_argument("--mpp", type=float, default=0.5, help="µm/px of the tiles classified")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2, help="slide-map's reading threads")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = args.model or build_architecture(args.architecture, root / "model")
        slide = synthetic_slide(root / "slide.tif", args.rows, args.columns, args.glass, args.scale, args.compression)
        classifier = load_classifier(model)
        tiles = tissue_tiles(slide, args.mpp)
        # Warm up both sides once: first calls pay for allocations and lazy imports.
        bare_pass(classifier, tiles, args.batch_size), map_pass(slide, model, root / "out", classifier, args)

        seconds: dict[str, list[float]] = {"slide_map": [], "bare": []}
        for repeat in range(args.repeats):
            for side in ("slide_map", "bare") if repeat % 2 == 0 else ("bare", "slide_map"):
                if side == "bare":
                    seconds["bare"].append(bare_pass(classifier, tiles, args.batch_size))
                else:
                    seconds["slide_map"].append(map_pass(slide, model, root / "out", classifier, args))

    median = {side: statistics.median(values) for side, values in seconds.items()}
    result = {
        "model": str(args.model) if args.model else f"{ARCHITECTURES[args.architecture]}, random weights",
        "slide_tiles": args.rows * args.columns,
        "tissue_tiles": len(tiles),
        "slide_mpp": 0.5 / args.scale,
        "compression": args.compression,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "slide_map_tiles_per_s": round(len(tiles) / median["slide_map"], 1),
        "bare_forward_tiles_per_s": round(len(tiles) / median["bare"], 1),
        "ratio": round(median["slide_map"] / median["bare"], 3),
        "overhead_percent": round(100 * (median["slide_map"] / median["bare"] - 1), 1),
        "seconds": {side: [round(value, 3) for value in values] for side, values in seconds.items()},
        "command": " ".join(["python", *sys.argv]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
