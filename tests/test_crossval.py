"""`hmu-crc crossval`: one train_hf.py run per model and fold, resumable, summarised as mean ± std."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from hmu_crc.cli import main
from hmu_crc.crossval import (
    FOLD_METRICS,
    cross_validate,
    format_mean_std,
    format_summary,
    markdown_table,
    plan_runs,
    summarize_folds,
)
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.sample import write_sample
from hmu_crc.training import parse_arguments, save_resolved_config

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
NUM_FOLDS = 3


def made_up_folds() -> pd.DataFrame:
    """Two models, three folds each, with distinct numbers in every metric."""
    rng = np.random.default_rng(7)
    rows = []
    for model in ("vit_base", "resnet50"):
        for fold in range(NUM_FOLDS):
            row = {"model": model, "fold": fold, "num_examples": 100 + fold}
            row |= {name: rng.uniform(0.5, 1.0) for name in ("accuracy", "f1_macro", "roc_auc_macro", "f1_TUM")}
            rows.append(row)
    return pd.DataFrame(rows)


# Aggregation on made-up numbers.


def test_mean_and_sample_std_match_numpy() -> None:
    frame = made_up_folds()
    summary = summarize_folds(frame)
    assert list(summary.index) == ["vit_base", "resnet50"]  # order of first appearance
    for model, folds in frame.groupby("model"):
        values = folds["accuracy"].to_numpy()
        assert summary.at[model, "accuracy_mean"] == pytest.approx(np.mean(values), abs=1e-15)
        assert summary.at[model, "accuracy_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-15)
        assert summary.at[model, "num_folds"] == NUM_FOLDS
        assert summary.at[model, "f1_TUM_n"] == NUM_FOLDS
    assert "fold_mean" not in summary.columns


def test_format_mean_std() -> None:
    assert format_mean_std(0.91234, 0.01) == "0.9123 ± 0.0100"
    assert format_mean_std(0.5, 0.25, digits=2) == "0.50 ± 0.25"
    assert format_mean_std(0.9, math.nan) == "0.9000 ± n/a"
    assert format_mean_std(math.nan, math.nan) == "n/a"


def test_nan_fold_is_left_out_and_counted() -> None:
    frame = made_up_folds()
    frame.loc[(frame["model"] == "resnet50") & (frame["fold"] == 1), "roc_auc_macro"] = math.nan
    summary = summarize_folds(frame)
    defined = frame.loc[(frame["model"] == "resnet50") & (frame["fold"] != 1), "roc_auc_macro"].to_numpy()
    assert summary.at["resnet50", "roc_auc_macro_mean"] == pytest.approx(defined.mean())
    assert summary.at["resnet50", "roc_auc_macro_std"] == pytest.approx(np.std(defined, ddof=1))
    assert summary.at["resnet50", "roc_auc_macro_n"] == 2
    cells = format_summary(summary)
    assert cells.at["resnet50", "ROC AUC (macro)"].endswith("(n=2)")
    assert "(n=" not in cells.at["vit_base", "ROC AUC (macro)"]


def test_one_fold_shows_std_as_na() -> None:
    frame = pd.DataFrame([{"model": "demo", "fold": 0, "accuracy": 0.75, "f1_macro": 0.5}])
    summary = summarize_folds(frame)
    assert summary.at["demo", "accuracy_mean"] == 0.75 and math.isnan(summary.at["demo", "accuracy_std"])
    markdown = markdown_table(format_summary(summary))
    assert "| demo | 1 | 0.7500 ± n/a | 0.5000 ± n/a |" in markdown


def test_markdown_has_a_row_per_model_and_the_paper_columns() -> None:
    markdown = markdown_table(format_summary(summarize_folds(made_up_folds())))
    lines = markdown.splitlines()
    assert lines[0] == "| Model | Folds | Accuracy | F1 (macro) | ROC AUC (macro) | F1 TUM |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| vit_base", "| resnet50"]


def test_a_fold_twice_is_refused() -> None:
    frame = made_up_folds()
    with pytest.raises(ValueError, match="more than once"):
        summarize_folds(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(ValueError, match="'model' column"):
        summarize_folds(frame.drop(columns="model"))


# Planning the runs.


def test_plan_gives_each_fold_its_folder_and_flags(tmp_path: Path) -> None:
    runs = plan_runs([DEMO_CONFIG], NUM_FOLDS, tmp_path, ["--max_steps", "2"])
    assert [run.fold for run in runs] == [0, 1, 2]
    last = runs[-1]
    assert last.output_dir == tmp_path / "demo" / "fold_2"
    argv = list(last.argv)
    assert argv[argv.index("--num_folds") + 1] == "3" and argv[argv.index("--fold") + 1] == "2"
    assert argv[argv.index("--external_eval") + 1] == "none"
    assert argv[-2:] == ["--max_steps", "2"]
    asked = plan_runs([DEMO_CONFIG], NUM_FOLDS, tmp_path, ["--external-eval", "crc_val_he_7k"])
    assert list(asked[0].argv).count("--external_eval") == 0


@pytest.mark.parametrize("flag", ["--output_dir", "--output-dir=x", "--fold", "--num_folds", "--config"])
def test_flags_the_driver_sets_are_refused(tmp_path: Path, flag: str) -> None:
    with pytest.raises(ValueError, match="set by crossval"):
        plan_runs([DEMO_CONFIG], NUM_FOLDS, tmp_path, [flag, "1"])


def test_two_configs_with_one_name_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "demo.yaml"
    other.parent.mkdir()
    other.write_text(DEMO_CONFIG.read_text())
    with pytest.raises(ValueError, match="share a file name"):
        plan_runs([DEMO_CONFIG, other], NUM_FOLDS, tmp_path / "out")


# Resuming, with a stand-in for train_hf.main that writes what it would.


class FakeTraining:
    """Records each run and writes its resolved config and made-up validation metrics."""

    def __init__(self) -> None:
        self.folds: list[int] = []

    def __call__(self, argv: Sequence[str]) -> dict:
        model_args, data_args, training_args = parse_arguments(argv)
        save_resolved_config(training_args.output_dir, model_args, data_args, training_args)
        metrics = {"accuracy": 0.5 + data_args.fold / 10, "roc_auc_macro": None, "confusion_matrix": [[1]]}
        (Path(training_args.output_dir) / FOLD_METRICS).write_text(json.dumps(metrics))
        self.folds.append(data_args.fold)
        return {}


def test_an_interrupted_run_trains_only_the_missing_fold(tmp_path: Path) -> None:
    first = FakeTraining()
    result = cross_validate([DEMO_CONFIG], NUM_FOLDS, tmp_path, train=first)
    assert first.folds == [0, 1, 2] and result is not None
    assert result.summary.at["demo", "accuracy_mean"] == pytest.approx(0.6)
    assert result.summary.at["demo", "roc_auc_macro_n"] == 0  # null in JSON is NaN, not zero
    (tmp_path / "demo" / "fold_1" / FOLD_METRICS).unlink()
    again = FakeTraining()
    result = cross_validate([DEMO_CONFIG], NUM_FOLDS, tmp_path, train=again)
    assert again.folds == [1] and result is not None
    assert [run.fold for run in result.skipped] == [0, 2]


def test_a_fold_cut_differently_is_not_reused(tmp_path: Path) -> None:
    cross_validate([DEMO_CONFIG], NUM_FOLDS, tmp_path, train=FakeTraining())
    with pytest.raises(ValueError, match=r"num_folds=3 \(now 4\)"):
        cross_validate([DEMO_CONFIG], 4, tmp_path, train=FakeTraining())
    with pytest.raises(ValueError, match="split_seed"):
        cross_validate([DEMO_CONFIG], NUM_FOLDS, tmp_path, ["--split_seed", "7"], train=FakeTraining())


# End to end on the synthetic sample, through the command line and train_hf.main.


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crossval")
    write_sample(root / "raw", patients=12, tiles_per_class=16)
    assert main(["prepare", "--data-dir", str(root / "raw"), "--output-dir", str(root / "prepared")]) == 0
    return root / "prepared"


def crossval_command(prepared: Path, output_dir: Path) -> list[str]:
    train_flags = ["--dataset", str(prepared), "--max_steps", "2", "--per_device_train_batch_size", "8"]
    train_flags += ["--dataloader_num_workers", "0", "--eval_strategy", "no", "--save_strategy", "no"]
    train_flags += ["--load_best_model_at_end", "false", "--image_size", "64", "--report_to", "none"]
    folds = ["--num-folds", str(NUM_FOLDS), "--output-dir", str(output_dir)]
    return ["crossval", "--config", str(DEMO_CONFIG), *folds, "--", *train_flags]


@pytest.fixture(scope="module")
def crossval_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output_dir = tmp_path_factory.mktemp("crossval_out")
    assert main(crossval_command(prepared, output_dir)) == 0
    return output_dir


def test_validation_folds_partition_the_patients(crossval_run: Path, prepared: Path) -> None:
    tiles = datasets.load_dataset(str(prepared), "tiles")
    everyone = set(tiles["train"]["patient_id"]) | set(tiles["validation"]["patient_id"])
    held_out = []
    for fold in range(NUM_FOLDS):
        folder = crossval_run / "demo" / f"fold_{fold}"
        assert (folder / FOLD_METRICS).is_file()
        names = pd.read_csv(folder / "validation_predictions.csv")["file_name"]
        held_out.append({Path(name).name.split("_")[0] for name in names})
    assert all(held_out)
    assert sum(len(patients) for patients in held_out) == len(set().union(*held_out))  # disjoint
    assert set().union(*held_out) == everyone


def test_tables_summarise_every_fold(crossval_run: Path) -> None:
    folds = pd.read_csv(crossval_run / "crossval_folds.csv")
    assert folds[["model", "fold"]].to_numpy().tolist() == [["demo", f] for f in range(NUM_FOLDS)]
    assert folds["num_examples"].sum() == 16 * len(CLASS_NAMES)
    summary = pd.read_csv(crossval_run / "crossval_summary.csv", index_col="model")
    assert summary.at["demo", "num_folds"] == NUM_FOLDS
    assert summary.at["demo", "accuracy_mean"] == pytest.approx(folds["accuracy"].mean())
    assert summary.at["demo", "f1_macro_std"] == pytest.approx(folds["f1_macro"].std(ddof=1))
    markdown = (crossval_run / "crossval_summary.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| demo |"))
    assert row.count("±") == 6 + len(CLASS_NAMES)
    assert markdown.splitlines()[0].startswith("| Model | Folds | Accuracy |")


def test_running_again_skips_every_fold(
    crossval_run: Path, prepared: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import train_hf

    def refuse(argv: Sequence[str]) -> None:
        raise AssertionError(f"a finished fold was trained again: {argv}")

    outputs = sorted(p for p in crossval_run.rglob("*") if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in outputs if "crossval_" not in p.name}
    tables = {p: p.read_bytes() for p in outputs if "crossval_" in p.name}
    monkeypatch.setattr(train_hf, "main", refuse)
    capsys.readouterr()
    start = time.perf_counter()
    assert main(crossval_command(prepared, crossval_run)) == 0
    assert time.perf_counter() - start < 10
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before
    assert {p: p.read_bytes() for p in tables} == tables
    printed = capsys.readouterr().out
    assert "Trained 0 fold(s), reused 3" in printed and "| demo | 3 |" in printed
