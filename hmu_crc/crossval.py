"""Patient-grouped k-fold cross-validation: one `train_hf.py` run per model and fold, then mean ± std tables."""

from __future__ import annotations

import gc
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hmu_crc.labels import CLASS_NAMES

logger = logging.getLogger(__name__)

FOLD_METRICS = "validation_metrics.json"
"""What `train_hf.py` writes for the validation split; its presence marks a fold as done."""

FOLDS_TABLE = "crossval_folds.csv"
SUMMARY_TABLE = "crossval_summary.csv"
SUMMARY_MARKDOWN = "crossval_summary.md"

HEADLINE_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc_macro",
)
PAPER_METRICS: tuple[str, ...] = HEADLINE_METRICS + tuple(f"f1_{name}" for name in CLASS_NAMES)
"""The columns of the markdown table, in order."""

COLUMN_TITLES = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "precision_macro": "Precision (macro)",
    "recall_macro": "Recall (macro)",
    "f1_macro": "F1 (macro)",
    "roc_auc_macro": "ROC AUC (macro)",
} | {f"f1_{name}": f"F1 {name}" for name in CLASS_NAMES}

RESERVED_FLAGS = ("config", "output_dir", "num_folds", "fold", "eval_split")
"""train_hf.py flags that the driver sets for every run; passing them through would break the folds."""

FOLD_IDENTITY = ("dataset", "dataset_config", "num_folds", "fold", "split_seed")
"""Arguments that decide which patients a fold holds; a finished fold is reused only when all of them match."""

TrainFunction = Callable[[Sequence[str]], Any]
"""`train_hf.main`, or a stand-in with the same call."""


@dataclass(frozen=True)
class FoldRun:
    """One training run: a model's config and the fold held out as validation."""

    model: str
    config: Path
    fold: int
    output_dir: Path
    argv: tuple[str, ...]

    @property
    def metrics_file(self) -> Path:
        return self.output_dir / FOLD_METRICS


@dataclass(frozen=True)
class CrossvalResult:
    """Where the tables went, the summary itself, and which runs trained and which were reused."""

    folds_table: Path
    summary_table: Path
    summary_markdown: Path
    summary: pd.DataFrame
    markdown: str
    trained: tuple[FoldRun, ...]
    skipped: tuple[FoldRun, ...]


def flag_name(argument: str) -> str | None:
    """The argument name of a command-line flag (`--output-dir=x` gives `output_dir`), or None for a value."""
    if not argument.startswith("--") or argument == "--":
        return None
    return argument[2:].split("=", 1)[0].replace("-", "_")


def plan_runs(
    configs: Sequence[str | Path], num_folds: int, output_dir: str | Path, train_args: Sequence[str] = ()
) -> list[FoldRun]:
    """One run per config and fold, each writing to `output_dir/<config stem>/fold_<f>`.

    Args:
        configs: Model YAML files for `train_hf.py`; their file stems name the models.
        num_folds: k, at least 2.
        output_dir: Folder of the whole cross-validation.
        train_args: Further `train_hf.py` flags, passed to every run. External sets are left out unless they
            (or the config) name `external_eval`.

    Returns:
        The runs, model by model and fold by fold.

    Raises:
        ValueError: On fewer than two folds, two configs with the same stem, or a flag the driver sets itself.
        FileNotFoundError: If a config is missing.
    """
    if num_folds < 2:
        raise ValueError(f"--num-folds must be at least 2, found {num_folds}; the paper uses 10")
    reserved = sorted({flag_name(a) for a in train_args} & set(RESERVED_FLAGS))
    if reserved:
        msg = (
            f"train_hf.py flag(s) {reserved} are set by crossval for each run; remove them after `--` "
            "(use crossval's own --config, --num-folds and --output-dir)"
        )
        raise ValueError(msg)
    paths = [Path(config) for config in configs]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"config {path} not found; pass a model YAML such as configs/resnet50.yaml")
    stems = [path.stem for path in paths]
    doubled = sorted({stem for stem in stems if stems.count(stem) > 1})
    if doubled:
        raise ValueError(f"configs {doubled} share a file name; their folds would share folders, so rename one")

    runs = []
    for path in paths:
        external = external_flags(path, train_args)
        for fold in range(num_folds):
            fold_dir = Path(output_dir) / path.stem / f"fold_{fold}"
            argv = ["--config", str(path), "--num_folds", str(num_folds), "--fold", str(fold)]
            argv += ["--output_dir", str(fold_dir), *external, *train_args]
            runs.append(FoldRun(path.stem, path, fold, fold_dir, tuple(argv)))
    return runs


def external_flags(config: Path, train_args: Sequence[str]) -> list[str]:
    """`--external_eval none` unless the user named the external sets in the config or on the command line."""
    # NOTE: HfArgumentParser refuses an empty list (`--external_eval` alone); DataArguments reads "none" as none.
    named = any(flag_name(a) == "external_eval" for a in train_args)
    in_config = "external_eval" in (yaml.safe_load(config.read_text()) or {})
    return [] if named or in_config else ["--external_eval", "none"]


def cross_validate(
    configs: Sequence[str | Path],
    num_folds: int = 10,
    output_dir: str | Path = "outputs/crossval",
    train_args: Sequence[str] = (),
    train: TrainFunction | None = None,
) -> CrossvalResult | None:
    """Train every model on every fold, reusing finished folds, then write the fold and summary tables.

    A fold whose `validation_metrics.json` exists is skipped, so running the same command again resumes an
    interrupted cross-validation (a fold stopped mid-training continues from its last checkpoint). The tables
    cover the configs given here, not every folder under `output_dir`.

    Args:
        configs: Model YAML files for `train_hf.py`.
        num_folds: k, the number of patient-grouped folds of train+validation.
        output_dir: Folder of the whole cross-validation.
        train_args: Further `train_hf.py` flags for every run.
        train: Runs one training from its argument list; `train_hf.main` by default.

    Returns:
        The tables and the runs, or None on processes other than the main one of a distributed launch.
    """
    runs = plan_runs(configs, num_folds, output_dir, train_args)
    if train is None:
        import train_hf

        train = train_hf.main
    trained, skipped = [], []
    for run in runs:
        if run.metrics_file.exists():
            check_same_fold(run)
            logger.info("%s fold %d: %s exists, skipped", run.model, run.fold, run.metrics_file)
            skipped.append(run)
            continue
        logger.info("%s fold %d of %d: training into %s", run.model, run.fold, num_folds, run.output_dir)
        train(list(run.argv))
        release_memory()
        trained.append(run)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    return write_tables(collect_fold_metrics(runs), output_dir, trained, skipped)


def check_same_fold(run: FoldRun) -> None:
    """Refuse to reuse a finished fold that was cut differently (other k, seed or dataset) from this run's."""
    from hmu_crc.training import RESOLVED_CONFIG, parse_arguments

    saved_file = run.output_dir / RESOLVED_CONFIG
    if not saved_file.exists():
        msg = (
            f"{run.metrics_file} exists but {saved_file} does not, so the fold it scores is unknown; "
            f"delete {run.output_dir} to train it again"
        )
        raise FileNotFoundError(msg)
    saved = yaml.safe_load(saved_file.read_text())
    _, data_args, _ = parse_arguments(run.argv)
    differ = [n for n in FOLD_IDENTITY if saved.get(n) != getattr(data_args, n)]
    if differ:
        found = ", ".join(f"{n}={saved.get(n)!r} (now {getattr(data_args, n)!r})" for n in differ)
        msg = (
            f"{run.output_dir} holds a finished fold cut differently: {found}; "
            "pass another --output-dir, or delete that folder to train the fold again"
        )
        raise ValueError(msg)


def release_memory() -> None:
    """Free the finished run's model and optimiser before the next fold builds its own."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def collect_fold_metrics(runs: Sequence[FoldRun]) -> pd.DataFrame:
    """One row per run: `model`, `fold`, then every scalar of its `validation_metrics.json` (null as NaN)."""
    rows = []
    for run in runs:
        if not run.metrics_file.exists():
            raise FileNotFoundError(f"{run.metrics_file} is missing; run the same crossval command again")
        metrics = json.loads(run.metrics_file.read_text())
        scalars = {k: (math.nan if v is None else v) for k, v in metrics.items() if not isinstance(v, list)}
        rows.append({"model": run.model, "fold": run.fold, **scalars})
    return pd.DataFrame(rows)


def summarize_folds(frame: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1) and count of each metric over the folds of each model.

    A NaN (e.g. `roc_auc_macro` of a fold whose validation set lacks a class) is left out: the mean and std
    are over the folds where the metric is defined, and `<metric>_n` says how many those are. With a single
    value the std is NaN.

    Args:
        frame: One row per (model, fold), with a `model` column and one column per metric.
        metrics: Columns to summarise; by default every numeric column but `fold`.

    Returns:
        One row per model (in order of first appearance), indexed by `model`, with `num_folds` and, for each
        metric, `<metric>_mean`, `<metric>_std` and `<metric>_n`.

    Raises:
        ValueError: If `frame` has no `model` column, no rows, a metric it lacks, or a (model, fold) twice.
    """
    if "model" not in frame.columns or frame.empty:
        raise ValueError(f"expected one row per (model, fold) with a 'model' column, found columns {list(frame)}")
    if "fold" in frame.columns and frame.duplicated(["model", "fold"]).any():
        twice = frame.loc[frame.duplicated(["model", "fold"]), ["model", "fold"]].to_numpy().tolist()
        raise ValueError(f"(model, fold) pairs {twice} appear more than once; keep one row per fold")
    if metrics is None:
        numeric = frame.select_dtypes("number").columns
        metrics = [c for c in numeric if c != "fold"]
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise ValueError(f"metric(s) {missing} are not columns of the fold table; found {list(frame)}")

    groups = frame.groupby("model", sort=False)
    values = groups[list(metrics)]
    parts = {"num_folds": groups.size()}
    means, stds, counts = values.mean(), values.std(ddof=1), values.count()
    for metric in metrics:
        parts[f"{metric}_mean"] = means[metric]
        parts[f"{metric}_std"] = stds[metric]
        parts[f"{metric}_n"] = counts[metric]
    return pd.DataFrame(parts)


def format_mean_std(mean: float | None, std: float | None, digits: int = 4) -> str:
    """`0.9123 ± 0.0100`; a missing std (one fold) shows as `n/a`, and a missing mean as `n/a` alone."""
    if mean is None or math.isnan(mean):
        return "n/a"
    spread = "n/a" if std is None or math.isnan(std) else f"{std:.{digits}f}"
    return f"{mean:.{digits}f} ± {spread}"


def format_summary(summary: pd.DataFrame, metrics: Sequence[str] = PAPER_METRICS, digits: int = 4) -> pd.DataFrame:
    """The summary as text cells, one `mean ± std` per metric; `(n=3)` follows where fewer folds had a value.

    Metrics absent from `summary` are left out.
    """
    table = pd.DataFrame(index=summary.index)
    table["Folds"] = summary["num_folds"].astype(int).astype(str)
    for metric in metrics:
        if f"{metric}_mean" not in summary.columns:
            continue
        cells = []
        for model, row in summary.iterrows():
            cell = format_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"], digits)
            count = int(row[f"{metric}_n"])
            cells.append(cell if count == summary.at[model, "num_folds"] else f"{cell} (n={count})")
        table[COLUMN_TITLES.get(metric, metric)] = cells
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of text cells, with the index as the first column (`Model`)."""
    header = ["Model", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, row in table.iterrows():
        lines.append("| " + " | ".join([str(model), *map(str, row)]) + " |")
    return "\n".join(lines) + "\n"


def write_tables(
    frame: pd.DataFrame,
    output_dir: str | Path,
    trained: Sequence[FoldRun] = (),
    skipped: Sequence[FoldRun] = (),
) -> CrossvalResult:
    """Write the per-fold CSV, the numeric summary CSV and the markdown summary into `output_dir`."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize_folds(frame)
    markdown = markdown_table(format_summary(summary))
    folds_table, summary_table = folder / FOLDS_TABLE, folder / SUMMARY_TABLE
    summary_markdown = folder / SUMMARY_MARKDOWN
    frame.to_csv(folds_table, index=False)
    summary.to_csv(summary_table)
    summary_markdown.write_text(markdown)
    return CrossvalResult(
        folds_table, summary_table, summary_markdown, summary, markdown, tuple(trained), tuple(skipped)
    )
