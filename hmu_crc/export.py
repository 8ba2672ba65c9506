"""Writing every config of a release as Parquet shards with embedded images, a dataset card and a report."""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hmu_crc.cards import write_dataset_card
from hmu_crc.examples import TileRow, tile_examples
from hmu_crc.manifest import EXCLUDING, Manifest, ReleaseOptions, build_manifest, clinical_by_patient, plain_records
from hmu_crc.manifest import tile_rows as manifest_rows

logger = logging.getLogger(__name__)

REPORT_NAME = "preparation_report.json"
PROBLEMS_NAME = "problems.csv"
TILES_PER_SHARD = 4_000
"""About 400 MB of PNG per Parquet file: small enough for resumable uploads, large enough to stream well."""
ROW_GROUP = 100
"""Rows per Parquet row group, as `datasets` uses for images: the Hub's viewer reads one group at a time."""


@dataclass(frozen=True)
class ExportSummary:
    """What `export_release` wrote."""

    output_dir: Path
    configs: dict[str, dict[str, int]]
    """Config -> split -> rows written."""
    counts: dict[str, object]
    problems: int


@dataclass(frozen=True)
class ShardJob:
    """One Parquet file per config of one split, all written from a single read of each tile."""

    split: str
    rows: list[TileRow]
    targets: dict[str, tuple[Path, pa.Schema]]
    """Config -> (file to write, its schema)."""
    clinical: dict[str | None, dict] | None


def export_release(options: ReleaseOptions, output_dir: str | Path) -> ExportSummary:
    """Validate a release once and write every config it supports into a Hub-ready folder.

    The builder defines each config's features and the manifest its splits; the shards are written here, one
    Arrow batch at a time, with `tiles` and `tiles_clinical` filled from the same read of each tile. The folder
    is built beside `output_dir` and moved into place at the end, so an error leaves any earlier export intact.

    Args:
        options: How to read and split the release; `options.num_proc` processes check and write tiles.
        output_dir: The folder to write; `load_dataset(output_dir, "<config>")` reads it with no code of ours.

    Returns:
        The configs and row counts written.
    """
    output_dir = Path(output_dir)
    _check_replaceable(output_dir)
    manifest = build_manifest(options)
    infos = {name: _config_info(name, options, manifest) for name in manifest.configs}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output_dir.name}-", dir=output_dir.parent) as scratch:
        staging = Path(scratch, "out")
        jobs = _tile_jobs(manifest, infos, staging)
        _run(jobs, options.num_proc)
        if manifest.clinical is not None:
            _write_clinical(manifest, infos["clinical"], staging)
        rows = _record_splits(infos, staging)
        _write_report(staging, options, manifest, rows)
        write_dataset_card(staging, infos, manifest.counts, options.split, synthetic=_is_synthetic(options))
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    logger.info("wrote %s: %s", output_dir, ", ".join(f"{k} ({sum(v.values())} rows)" for k, v in rows.items()))
    return ExportSummary(output_dir, rows, manifest.counts, len(manifest.problems))


def _config_info(name: str, options: ReleaseOptions, manifest: Manifest) -> datasets.DatasetInfo:
    from hmu_crc_hist550k import HmuCrcHist550k

    spec = options.split
    builder = HmuCrcHist550k(
        config_name=name,
        data_dir=str(options.data_dir),
        manifest=manifest,
        validation_size=spec.validation_size,
        test_size=spec.test_size,
        num_folds=spec.num_folds,
        fold=spec.fold,
        seed=spec.seed,
        split_by=options.split_by,
    )
    return builder.info


def _schema(info: datasets.DatasetInfo) -> pa.Schema:
    # The same schema metadata that datasets writes, so that any Parquet reader of it restores the features.
    metadata = {"huggingface": json.dumps({"info": {"features": info.features.to_dict()}})}
    return info.features.arrow_schema.with_metadata(metadata)


def _tile_jobs(manifest: Manifest, infos: dict[str, datasets.DatasetInfo], staging: Path) -> list[ShardJob]:
    """Cut every split of every image config into shards; `tiles` and `tiles_clinical` share their jobs."""
    release = [name for name in ("tiles", "tiles_clinical") if name in infos]
    groups = [(release, manifest.tiles, manifest.clinical, manifest.split_names)]
    groups += [([name], frame, None, ["test"]) for name, frame in manifest.kather.items()]
    jobs = []
    for configs, frame, clinical, splits in groups:
        for split in splits:
            part = frame.loc[frame["split"] == split] if "split" in frame else frame
            rows = manifest_rows(part)
            joined = clinical_by_patient(clinical, part) if "tiles_clinical" in configs else None
            count = max(1, -(-len(rows) // TILES_PER_SHARD))
            size = -(-len(rows) // count) if rows else 1
            for index in range(count):
                targets = {
                    name: (
                        staging / "data" / name / f"{split}-{index:05d}-of-{count:05d}.parquet",
                        _schema(infos[name]),
                    )
                    for name in configs
                }
                jobs.append(ShardJob(split, rows[index * size : (index + 1) * size], targets, joined))
    return jobs


def _run(jobs: list[ShardJob], num_proc: int) -> None:
    total = sum(len(job.rows) for job in jobs)
    with tqdm(total=total, desc="writing tiles", unit="tile", disable=total < 1000) as progress:
        if num_proc <= 1 or len(jobs) == 1:
            for job in jobs:
                progress.update(write_shard(job))
            return
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(num_proc) as pool:
            for written in pool.imap_unordered(write_shard, jobs):
                progress.update(written)


def write_shard(job: ShardJob) -> int:
    """Write one shard per target config, `ROW_GROUP` tiles at a time; returns the tiles written."""
    writers = {}
    for name, (path, schema) in job.targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        writers[name] = (pq.ParquetWriter(path, schema), schema)
    batch: list[dict] = []
    try:
        for example in tile_examples(job.rows, job.clinical):
            batch.append(example)
            if len(batch) == ROW_GROUP:
                _write_batch(writers, batch)
                batch = []
        _write_batch(writers, batch)
    finally:
        for writer, _ in writers.values():
            writer.close()
    return len(job.rows)


def _write_batch(writers: dict[str, tuple[pq.ParquetWriter, pa.Schema]], batch: list[dict]) -> None:
    if batch:
        for writer, schema in writers.values():
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def _write_clinical(manifest: Manifest, info: datasets.DatasetInfo, staging: Path) -> None:
    schema = _schema(info)
    for split in manifest.split_names:
        rows = manifest.clinical.loc[manifest.clinical["split"] == split].drop(columns="split")
        path = staging / "data" / "clinical" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(plain_records(rows), schema=schema), path)


def _record_splits(infos: dict[str, datasets.DatasetInfo], staging: Path) -> dict[str, dict[str, int]]:
    """Count what was written, from the files themselves, into each config's split info for the card."""
    rows: dict[str, dict[str, int]] = {}
    for name, info in infos.items():
        splits = datasets.SplitDict()
        for split in ("train", "validation", "test"):
            files = sorted((staging / "data" / name).glob(f"{split}-*.parquet"))
            if files:
                count = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
                size = sum(f.stat().st_size for f in files)
                splits.add(datasets.SplitInfo(name=split, num_examples=count, num_bytes=size))
        info.splits = splits
        rows[name] = {split: info.num_examples for split, info in splits.items()}
    return rows


def _check_replaceable(output_dir: Path) -> None:
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / REPORT_NAME).exists():
        msg = (
            f"{output_dir} exists and is not an earlier `hmu-crc prepare` output (no {REPORT_NAME}); "
            "expected a new or empty folder; pass another --output-dir or remove it"
        )
        raise FileExistsError(msg)


def _is_synthetic(options: ReleaseOptions) -> bool:
    return (Path(options.data_dir) / "SYNTHETIC_SAMPLE.md").exists()


def _write_report(folder: Path, options: ReleaseOptions, manifest: Manifest, rows: dict[str, dict[str, int]]) -> None:
    """Write the counts and every problem: what was left out and what was kept with a flag."""
    kinds: dict[str, int] = {}
    for problem in manifest.problems:
        kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
    report = {
        "data_dir": str(options.data_dir),
        "options": {
            "patient_pattern": options.patient_pattern,
            "patient_map_file": str(options.patient_map_file) if options.patient_map_file else None,
            "split": asdict(options.split),
            "split_by": options.split_by,
            "skip_invalid": options.skip_invalid,
            "validation": options.validation,
        },
        "counts": manifest.counts,
        "rows_written": rows,
        "problems_by_kind": kinds,
        "ignored_files": manifest.ignored,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    with open(folder / PROBLEMS_NAME, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["action", "kind", "where", "found", "expected", "fix"])
        writer.writeheader()
        for problem in manifest.problems:
            action = "excluded" if problem.kind in EXCLUDING else "kept"
            writer.writerow({"action": action, **problem.as_dict()})
