"""train_hf.py end to end on the synthetic sample: every architecture family, the demo, two processes, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pandas as pd
import pytest
import yaml
from tiny_models import TINY_MODELS
from transformers import pipeline

import train_hf
from hmu_crc.cli import main as cli_main
from hmu_crc.labels import CLASS_NAMES, LABEL2ID
from hmu_crc.training import check_label_names, load_config, parse_arguments

ROOT = Path(__file__).resolve().parents[1]


def write_config(folder: Path, prepared: Path, model: dict, **overrides: object) -> Path:
    config = {
        "model_config": model,
        "image_size": 64,
        "dataset": str(prepared),
        "output_dir": str(folder / "out"),
        "max_steps": 3,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 0.001,
        "dataloader_num_workers": 0,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        **overrides,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_every_family_trains_saves_and_serves(prepared_sample: Path, tmp_path: Path, family: str) -> None:
    # The external sets (and their pictures) are scored for one family only, to keep the suite short.
    external = ["crc_val_he_7k", "nct_crc_he_100k"] if family == "vit" else ["none"]
    config = write_config(tmp_path, prepared_sample, TINY_MODELS[family], external_eval=external)
    results = train_hf.main(["--config", str(config)])
    out = tmp_path / "out"

    saved = json.loads((out / "all_results.json").read_text())
    assert saved["train"]["epoch"] > 0
    validation = datasets.load_dataset(str(prepared_sample), "tiles", split="validation")
    assert saved["validation"]["num_examples"] == len(validation) == results["validation"]["num_examples"]
    if family == "vit":
        assert {"crc_val_he_7k", "nct_crc_he_100k"} <= set(saved)
        kather = datasets.load_dataset(str(prepared_sample), "crc_val_he_7k", split="test")
        assert saved["crc_val_he_7k"]["num_examples"] == len(kather)
    for name in ("validation_roc.png", "validation_confusion_matrix.png", "validation_per_class.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "model.safetensors").exists()
    assert "token" not in (out / "resolved_config.yaml").read_text()

    classify = pipeline("image-classification", model=str(out), top_k=8)
    answer = classify(validation[0]["image"])
    assert sorted(item["label"] for item in answer) == sorted(CLASS_NAMES)
    assert abs(sum(item["score"] for item in answer) - 1) < 1e-4


def test_demo_learns_the_sample(trained_demo: tuple[Path, dict]) -> None:
    """The demo config, unchanged but for paths, must beat chance clearly on held-out patients.

    Chance is 1/8. With about 50 validation tiles, a chance-level model's accuracy has a standard deviation of
    about sqrt(0.125 * 0.875 / 50) = 0.047, so 0.5 sits some eight standard deviations above chance while
    leaving room below the demo's usual score on the sample (0.9 to 1.0).
    """
    _, results = trained_demo
    assert results["validation"]["accuracy"] >= 0.5
    assert results["validation"]["balanced_accuracy"] >= 0.5


def test_validation_is_scored_on_the_tiles_as_they_are(trained_demo: tuple[Path, dict], tmp_path: Path) -> None:
    """train_hf.py trains on flipped and turned tiles but must score the validation split on the tiles as they are:
    its own predictions equal those of `hmu-crc evaluate` on the saved model, tile by tile."""
    out, results = trained_demo
    evaluated = tmp_path / "evaluation"
    dataset = yaml.safe_load((out / "resolved_config.yaml").read_text())["dataset"]
    args = ["--model", str(out), "--dataset", dataset, "--split", "validation", "--output-dir", str(evaluated)]
    assert cli_main(["evaluate", *args]) == 0
    columns = [f"prob_{name}" for name in CLASS_NAMES]
    during = pd.read_csv(out / "validation_predictions.csv")
    after = pd.read_csv(evaluated / "validation_predictions.csv")
    assert list(during["file_name"]) == list(after["file_name"])
    pd.testing.assert_frame_equal(during[columns], after[columns], atol=1e-4, rtol=0)
    standalone = json.loads((evaluated / "validation_metrics.json").read_text())
    assert results["validation"]["confusion_matrix"] == standalone["confusion_matrix"]


def test_a_dataset_with_other_labels_is_refused_and_the_fix_works() -> None:
    reordered = datasets.Dataset.from_dict(
        {"label": [0, 7]}, features=datasets.Features({"label": datasets.ClassLabel(names=list(CLASS_NAMES[::-1]))})
    )
    with pytest.raises(ValueError, match=r"my/tiles \(tiles, train\): expected a ClassLabel .* found \['TUM', 'STR'"):
        check_label_names(reordered, "my/tiles (tiles, train)")
    with pytest.raises(ValueError, match=r"found Value\('int64'\)"):
        check_label_names(datasets.Dataset.from_dict({"label": [0, 7]}), "plain ints")
    # The fix the message gives: the same tissues, under our ids.
    aligned = reordered.align_labels_with_mapping(dict(LABEL2ID), "label")
    check_label_names(aligned, "aligned")
    assert [CLASS_NAMES[i] for i in aligned["label"]] == ["TUM", "ADI"]


def test_command_line_overrides_yaml_and_is_saved(prepared_sample: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, prepared_sample, TINY_MODELS["resnet"], learning_rate=0.5, external_eval=["none"])
    train_hf.main(["--config", str(config), "--learning_rate", "0.002", "--max_steps", "1"])
    resolved = yaml.safe_load((tmp_path / "out" / "resolved_config.yaml").read_text())
    assert resolved["learning_rate"] == 0.002
    assert resolved["max_steps"] == 1
    assert resolved["model_config"]["model_type"] == "resnet"
    assert resolved["dataset"] == str(prepared_sample)


def test_no_workers_drops_the_configs_worker_options() -> None:
    """vit_base.yaml prefetches in persistent workers; without workers TrainingArguments would refuse both."""
    config = str(ROOT / "configs" / "vit_base.yaml")
    _, _, training_args = parse_arguments(["--config", config, "--dataloader_num_workers", "0", "--use_cpu", "true"])
    assert training_args.dataloader_num_workers == 0
    assert training_args.dataloader_prefetch_factor is None and not training_args.dataloader_persistent_workers
    _, _, training_args = parse_arguments(["--config", config, "--use_cpu", "true"])
    assert training_args.dataloader_prefetch_factor == 4 and training_args.dataloader_persistent_workers


def test_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model_name_or_path: x\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown argument\(s\) \['learning_rat'\]"):
        load_config(path)


def run_script(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def test_two_processes_count_every_validation_tile_once(prepared_sample: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, prepared_sample, TINY_MODELS["resnet"], per_device_eval_batch_size=7, external_eval=["none"]
    )
    # NOTE: accelerate starts several CPU processes through MPI when given --cpu; without MPI, its torchrun path
    # (--multi_gpu) starts them and each falls back to the CPU and the gloo backend, as here.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    process = run_script([*launch, str(ROOT / "train_hf.py"), "--config", str(config)], tmp_path / "log.txt")
    assert process.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "processes: 2" in log

    validation = datasets.load_dataset(str(prepared_sample), "tiles", split="validation")
    metrics = json.loads((tmp_path / "out" / "validation_metrics.json").read_text())
    assert metrics["num_examples"] == len(validation)
    assert sum(metrics[f"support_{name}"] for name in CLASS_NAMES) == len(validation)
    predictions = pd.read_csv(tmp_path / "out" / "validation_predictions.csv")
    assert sorted(predictions["file_name"]) == sorted(validation["file_name"])
    assert list(predictions["label"]) == [CLASS_NAMES[i] for i in validation["label"]]


def test_killed_run_resumes_to_the_end(prepared_sample: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        prepared_sample,
        {**TINY_MODELS["resnet"], "hidden_sizes": [32, 64]},
        image_size=128,
        max_steps=24,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=4,
        external_eval=["none"],
    )
    command = [sys.executable, str(ROOT / "train_hf.py"), "--config", str(config)]
    first = run_script(command, tmp_path / "first.txt")
    checkpoint = tmp_path / "out" / "checkpoint-8"
    deadline = time.monotonic() + 300
    while not (checkpoint / "trainer_state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the first run ended before it could be interrupted"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "out" / "all_results.json").exists()

    second = run_script(command, tmp_path / "second.txt")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.txt").read_text()[-3000:]
    log = (tmp_path / "second.txt").read_text()
    assert "resuming from" in log
    state = json.loads((tmp_path / "out" / "checkpoint-24" / "trainer_state.json").read_text())
    assert state["global_step"] == 24
    steps_per_epoch = -(-len(datasets.load_dataset(str(prepared_sample), "tiles", split="train")) // 4)
    assert 8 % steps_per_epoch != 0, "the interruption must fall inside an epoch"
    assert json.loads((tmp_path / "out" / "all_results.json").read_text())["train"]["epoch"] > 0.5
