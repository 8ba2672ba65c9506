"""`hmu-crc evaluate`: a trained model scored on any config and split, with its files; foreign labels refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import ResNetConfig, ResNetForImageClassification

import train_hf
from hmu_crc.cli import main
from hmu_crc.evaluation import check_labels
from hmu_crc.labels import CLASS_NAMES


@pytest.fixture(scope="module")
def trained(prepared_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "model"
    config = out.parent / "config.yaml"
    config.write_text(
        "model_config: {model_type: resnet, embedding_size: 8, hidden_sizes: [8, 16], depths: [1, 1]}\n"
        f"image_size: 64\ndataset: {prepared_sample}\noutput_dir: {out}\nmax_steps: 2\n"
        "per_device_train_batch_size: 8\ndataloader_num_workers: 0\neval_strategy: 'no'\nsave_strategy: 'no'\n"
        "report_to: none\nuse_cpu: true\nexternal_eval: [none]\n"
    )
    train_hf.main(["--config", str(config)])
    return out


def test_evaluate_one_external_set(trained: Path, prepared_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["--model", str(trained), "--dataset", str(prepared_sample), "--output-dir", str(out)]
    assert main(["evaluate", *args, "--config", "nct_crc_he_100k"]) == 0
    metrics = json.loads((out / "nct_crc_he_100k_metrics.json").read_text())
    predictions = pd.read_csv(out / "nct_crc_he_100k_predictions.csv")
    assert metrics["num_examples"] == len(predictions) == 16
    assert list(predictions.columns) == ["file_name", "label", "predicted", *(f"prob_{c}" for c in CLASS_NAMES)]
    assert (predictions[[f"prob_{c}" for c in CLASS_NAMES]].sum(axis=1) - 1).abs().max() < 1e-4
    accuracy = (predictions["label"] == predictions["predicted"]).mean()
    assert metrics["accuracy"] == pytest.approx(accuracy)
    for picture in ("roc", "confusion_matrix", "per_class"):
        assert (out / f"nct_crc_he_100k_{picture}.png").stat().st_size > 0


def test_evaluate_defaults_to_validation_and_every_external_set(trained: Path, prepared_sample: Path) -> None:
    assert main(["evaluate", "--model", str(trained), "--dataset", str(prepared_sample)]) == 0
    written = sorted(p.name for p in (trained / "evaluation").glob("*_metrics.json"))
    assert written == ["crc_val_he_7k_metrics.json", "nct_crc_he_100k_metrics.json", "validation_metrics.json"]


def test_model_with_other_labels_is_refused(tmp_path: Path) -> None:
    model = ResNetForImageClassification(
        ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=2, id2label={0: "cat", 1: "dog"})
    )
    with pytest.raises(ValueError, match=r"model labels \['cat', 'dog'\] do not match the tissue classes"):
        check_labels(model)
