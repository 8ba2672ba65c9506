"""Dataset cards: the README.md whose YAML lets `load_dataset` read a prepared folder with no code of ours."""

from __future__ import annotations

from pathlib import Path

import datasets
import yaml

from hmu_crc.labels import CLASS_DESCRIPTIONS, CLASS_NAMES
from hmu_crc.provenance import CITATION, CLINICAL_FIELDS, DESCRIPTION, HOW_MADE, LICENSE, LIMITATIONS
from hmu_crc.splits import SplitSpec

SYNTHETIC_WARNING = (
    "**This folder was prepared from the bundled synthetic sample**: every tile and clinical row was drawn by a "
    "program, carries no patient data, and any metric computed on it says nothing about real tissue."
)


def size_category(rows: int) -> str:
    """The Hub's size bucket for a row count."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def card_metadata(infos: dict[str, datasets.DatasetInfo]) -> dict[str, object]:
    """The card's YAML: licence, task, size, one `configs` entry per config, and each config's features."""
    tile_rows = sum(split.num_examples for split in infos["tiles"].splits.values())
    return {
        "license": LICENSE,
        "task_categories": ["image-classification"],
        "tags": ["histopathology", "colorectal-cancer", "medical", "pathology"],
        "size_categories": [size_category(tile_rows)],
        "pretty_name": "HMU-CRC-Hist550K",
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": split, "path": f"data/{name}/{split}-*.parquet"} for split in info.splits],
                **({"default": True} if name == "tiles" else {}),
            }
            for name, info in infos.items()
        ],
        "dataset_info": [{"config_name": name, **info._to_yaml_dict()} for name, info in infos.items()],
    }


def write_dataset_card(
    folder: Path,
    infos: dict[str, datasets.DatasetInfo],
    counts: dict[str, object],
    spec: SplitSpec,
    *,
    synthetic: bool,
) -> Path:
    """Write `folder/README.md`: YAML metadata, then what the data is, its classes, splits and counts."""
    metadata = yaml.safe_dump(card_metadata(infos), sort_keys=False, allow_unicode=True)
    classes = "\n".join(f"| {i} | {name} | {CLASS_DESCRIPTIONS[name]} |" for i, name in enumerate(CLASS_NAMES))
    if spec.num_folds:
        how = f"fold {spec.fold} of {spec.num_folds} patient-grouped folds is `validation`"
    else:
        how = f"{spec.validation_size:.0%} of patients in `validation`"
    held_out = f", {spec.test_size:.0%} of patients held out in `test`" if spec.test_size else ""
    per_split = counts.get("tiles_per_split_and_class", {})
    table = "\n".join(
        f"| {split} | {sum(row.values())} | " + " | ".join(str(row[name]) for name in CLASS_NAMES) + " |"
        for split, row in per_split.items()
    )
    patients = counts.get("patients_per_split", {})
    patient_line = ", ".join(f"{split} {n}" for split, n in patients.items())
    external = "\n".join(f"| `{name}` | {rows} |" for name, rows in counts.get("kather_tiles_written", {}).items())
    clinical = ""
    if "clinical" in infos:
        fields = "\n".join(f"| `{name}` | {text} |" for name, text in CLINICAL_FIELDS.items())
        extras = ", ".join(f"`{n}`" for n in infos["clinical"].features if n not in CLINICAL_FIELDS)
        kept = (
            f"\n\nColumns of the release's CSV that match none of these are kept as text: {extras}." if extras else ""
        )
        clinical = f"## Clinical fields\n\n| column | meaning |\n|---|---|\n{fields}{kept}\n"
    limits = "\n".join(f"- {line}" for line in LIMITATIONS)
    body = f"""
# HMU-CRC-Hist550K

{SYNTHETIC_WARNING if synthetic else ""}

{DESCRIPTION}

## How it was made

{HOW_MADE}

## Loading

```python
from datasets import load_dataset

tiles = load_dataset("path/or/hub-id", "tiles")  # configs: {", ".join(f"`{n}`" for n in infos)}
```

## Classes

The label ids follow this order in every config and in every model trained with this package.

| id | code | tissue |
|---|---|---|
{classes}

## Splits

Grouped by patient (no patient has tiles in two splits) and stratified by class: {how}{held_out}, seed
{spec.seed}. The `clinical` config puts each patient in the split of its tiles.

| split | tiles | {" | ".join(CLASS_NAMES)} |
|---|---|{"---|" * len(CLASS_NAMES)}
{table}

Patients per split: {patient_line}.

`preparation_report.json` beside this card has the counts per class, patient and split, and `problems.csv` every
file or row that was left out or flagged, with the reason.

{clinical}
## External test sets

Kather et al.'s sets, mapped to the same eight labels; their ninth class (BACK, background) has no label here and
is left out (counted in the report).

| config | tiles |
|---|---|
{external}

## Licence

`{LICENSE}`, as stated by the release; Kather's sets are CC BY 4.0. Check the terms of the copy you downloaded.

## Limitations

{limits}

## Citation

```bibtex
{CITATION.strip()}
```
"""
    path = folder / "README.md"
    path.write_text(f"---\n{metadata}---\n{body}")
    return path
