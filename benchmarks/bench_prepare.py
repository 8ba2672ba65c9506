"""Tiles/s of `hmu-crc prepare` against imagefolder + a Parquet export with embedded images, and prepare's peak RSS.

Run: python benchmarks/bench_prepare.py [--tiles-per-class 500] [--repeats 3] [--num-proc 2]

Both sides read the same synthetic release in the same run. `prepare` does more work than the baseline (it
checks every tile, hashes it for duplicates, splits by patient and writes the `tiles`, `tiles_clinical` and
`clinical` configs, so every image is written twice); the baseline writes one Parquet file of the tiles.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PREPARE = """
import resource, sys, time, logging
from pathlib import Path
from hmu_crc.export import export_release
from hmu_crc.manifest import ReleaseOptions
import datasets
datasets.disable_progress_bars()
logging.disable(logging.WARNING)
start = time.perf_counter()
export_release(ReleaseOptions(data_dir=Path(sys.argv[1]), num_proc=int(sys.argv[3])), sys.argv[2])
seconds = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(seconds, own, children)
"""

IMAGEFOLDER = """
import sys, time
import datasets
from datasets.table import embed_table_storage
datasets.disable_progress_bars()
start = time.perf_counter()
tiles = datasets.load_dataset("imagefolder", data_dir=sys.argv[1], split="train", cache_dir=sys.argv[2])
embedded = tiles.with_format("arrow").map(embed_table_storage, batched=True)
embedded.to_parquet(sys.argv[2] + "/tiles.parquet")
print(time.perf_counter() - start)
"""


def run(code: str, *args: object) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()[-3:]] if "resource" in code else [float(out.stdout.split()[-1])]


def make_release(folder: Path, tiles_per_class: int, patients: int) -> int:
    from hmu_crc.sample import write_sample

    return write_sample(folder, patients=patients, tiles_per_class=tiles_per_class, seed=1).num_tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles-per-class", type=int, default=500)
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--memory-factor", type=int, default=4, help="compare peak RSS at this many times the tiles")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        tiles = make_release(root / "raw", args.tiles_per_class, args.patients)
        ours, theirs = [], []
        for repeat in range(args.repeats):
            for side in (
                (("ours", ours), ("theirs", theirs)) if repeat % 2 == 0 else (("theirs", theirs), ("ours", ours))
            ):
                out = root / f"out-{side[0]}-{repeat}"
                if side[0] == "ours":
                    seconds = run(PREPARE, root / "raw", out, args.num_proc)[0]
                else:
                    seconds = run(IMAGEFOLDER, root / "raw", out)[0]
                side[1].append(tiles / seconds)
                shutil.rmtree(out, ignore_errors=True)
        ratio = statistics.median(ours) / statistics.median(theirs)

        big = make_release(root / "raw-big", args.tiles_per_class * args.memory_factor, args.patients)
        small_rss = run(PREPARE, root / "raw", root / "rss-small", args.num_proc)
        big_rss = run(PREPARE, root / "raw-big", root / "rss-big", args.num_proc)

    peak = {name: max(rss[1:]) / 1024 for name, rss in (("small", small_rss), ("big", big_rss))}
    result = {
        "tiles": tiles,
        "num_proc": args.num_proc,
        "prepare_tiles_per_s_median": round(statistics.median(ours), 1),
        "imagefolder_parquet_tiles_per_s_median": round(statistics.median(theirs), 1),
        "speedup": round(ratio, 2),
        "peak_rss_mib": {f"{tiles} tiles": round(peak["small"], 1), f"{big} tiles": round(peak["big"], 1)},
        "peak_rss_ratio": round(peak["big"] / peak["small"], 3),
        "runs": {"prepare": [round(x, 1) for x in ours], "imagefolder": [round(x, 1) for x in theirs]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
