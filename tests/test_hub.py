"""Publishing on the Hub, tested against a local stand-in of its HTTP API: what goes up, what never does, one
commit per push, failures that leave nothing behind, loading back through the public APIs; and `hmu-crc predict`."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import datasets
import pandas as pd
import pytest
import yaml
from hub_standin import HubStandIn, use_standin
from huggingface_hub import DatasetCard, ModelCard
from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor, pipeline

import train_hf
from hmu_crc.cli import main
from hmu_crc.hub import CLINICAL_CONFIGS
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.model_card import render_model_card

TOKEN = "hf_standinToken7f3a9c21be64"
"""The only token the stand-in accepts; it must never appear in a log, an output or an uploaded file."""
MODEL_REPO = "hmu-lab/tiny-resnet"
"""Where the trained fixture is pushed by train_hf.py --push_to_hub."""
PUBLISHED_MODEL_FILES = {
    "README.md",
    "model.safetensors",
    "config.json",
    "preprocessor_config.json",
    "resolved_config.yaml",
    "all_results.json",
    *(f"{s}_metrics.json" for s in ("validation", "crc_val_he_7k", "nct_crc_he_100k")),
    *(
        f"{s}_{p}.png"
        for s in ("validation", "crc_val_he_7k", "nct_crc_he_100k")
        for p in ("roc", "confusion_matrix", "per_class")
    ),
}
pytestmark = pytest.mark.filterwarnings(
    # huggingface_hub's LFS upload hands httpx2 a file as `data=`, which httpx2 deprecates; not ours to change.
    "ignore:Use 'content=<...>' to upload raw bytes/text content:DeprecationWarning"
)
CARD_METRICS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "f1_macro": "f1",
    "roc_auc_macro": "roc_auc",
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandIn]:
    """One stand-in for the module; each test uses its own repositories."""
    with (
        HubStandIn(tmp_path_factory.mktemp("hub"), TOKEN) as standin,
        pytest.MonkeyPatch.context() as patch,
        use_standin(patch, standin),
    ):
        yield standin


@pytest.fixture(autouse=True)
def _no_leftover_faults(hub: HubStandIn) -> Iterator[None]:
    yield
    hub.faults.clear()


@pytest.fixture(scope="module")
def trained(hub: HubStandIn, prepared_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ResNet trained for two steps, saving a checkpoint at each, and pushed with --push_to_hub."""
    out = tmp_path_factory.mktemp("trained") / "model"
    config = out.parent / "config.yaml"
    config.write_text(
        "model_config: {model_type: resnet, embedding_size: 8, hidden_sizes: [8, 16], depths: [1, 1]}\n"
        f"image_size: 64\ndataset: {prepared_sample}\noutput_dir: {out}\nmax_steps: 2\n"
        "per_device_train_batch_size: 8\ndataloader_num_workers: 0\neval_strategy: 'no'\nsave_strategy: steps\n"
        f"save_steps: 1\nreport_to: none\nuse_cpu: true\npush_to_hub: true\nhub_model_id: {MODEL_REPO}\n"
    )
    train_hf.main(["--config", str(config)])
    return out


@pytest.fixture(scope="module")
def foreign_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved classifier of cats and dogs, with its image processor."""
    folder = tmp_path_factory.mktemp("foreign")
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], num_labels=2, id2label={0: "cat", 1: "dog"})
    ResNetForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def card_configs(text: str) -> set[str]:
    data = DatasetCard(text).data.to_dict()
    names = {c["config_name"] for c in data["configs"]}
    assert names == {i["config_name"] for i in data["dataset_info"]}
    return names


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


# The dataset.


def test_push_dataset_leaves_clinical_out_and_loads_back(
    hub: HubStandIn, prepared_sample: Path, tmp_path: Path
) -> None:
    before = folder_digest(prepared_sample)
    assert main(["push", "--data-dir", str(prepared_sample), "--repo-id", "hmu-lab/sample"]) == 0

    assert folder_digest(prepared_sample) == before  # the card was rewritten in a copy, not in place
    commits = hub.commits("hmu-lab/sample", "dataset")
    assert len(commits) == 1
    files = hub.files("hmu-lab/sample", "dataset")
    local_shards = {p.relative_to(prepared_sample).as_posix() for p in prepared_sample.glob("data/*/*.parquet")}
    expected = {p for p in local_shards if p.split("/")[1] not in CLINICAL_CONFIGS}
    assert set(files) == expected | {"README.md", "preparation_report.json", "problems.csv"}
    assert not [p for p in files if "clinical" in p]
    assert card_configs(files["README.md"].decode()) == {p.split("/")[1] for p in expected}
    assert hub.repo("hmu-lab/sample", "dataset").private  # private unless --public

    assert set(datasets.get_dataset_config_names("hmu-lab/sample")) == {p.split("/")[1] for p in expected}
    remote = datasets.load_dataset("hmu-lab/sample", "tiles", cache_dir=str(tmp_path / "remote"))
    local = datasets.load_dataset(str(prepared_sample), "tiles", cache_dir=str(tmp_path / "local"))
    assert set(remote) == set(local) == {"train", "validation"}
    for split in local:
        ours, theirs = (d[split].cast_column("image", datasets.Image(decode=False)) for d in (local, remote))
        for column in ("file_name", "patient_id", "label"):
            assert theirs[column] == ours[column]
        assert [i["bytes"] for i in theirs["image"]] == [i["bytes"] for i in ours["image"]]


def test_clinical_only_when_asked_and_removed_when_no_longer_asked(hub: HubStandIn, prepared_sample: Path) -> None:
    args = ["push", "--data-dir", str(prepared_sample), "--repo-id", "hmu-lab/with-clinical"]
    assert main([*args, "--include-clinical", "--public"]) == 0
    files = hub.files("hmu-lab/with-clinical", "dataset")
    assert {"data/clinical/train-00000-of-00001.parquet", "data/tiles_clinical/train-00000-of-00001.parquet"} <= set(
        files
    )
    assert set(CLINICAL_CONFIGS) <= card_configs(files["README.md"].decode())
    assert not hub.repo("hmu-lab/with-clinical", "dataset").private

    # Clinical data into a public repository needs --public said again.
    assert main([*args, "--include-clinical"]) == 2
    assert len(hub.commits("hmu-lab/with-clinical", "dataset")) == 1

    # Pushing without it takes the clinical shards out, in one more commit.
    assert main(args) == 0
    commits = hub.commits("hmu-lab/with-clinical", "dataset")
    assert len(commits) == 2
    assert not [p for p in hub.files("hmu-lab/with-clinical", "dataset") if "clinical" in p]
    assert ("deletedFile", "data/clinical/train-00000-of-00001.parquet") in commits[-1].operations

    # The same push once more changes nothing and makes no commit.
    assert main(args) == 0
    assert len(hub.commits("hmu-lab/with-clinical", "dataset")) == 2


def test_folder_is_checked_before_any_request(
    hub: HubStandIn, prepared_sample: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Path(shutil.copytree(prepared_sample, tmp_path / "copy"))
    (broken / "data" / "tiles" / "validation-00000-of-00001.parquet").unlink()
    asked = len(hub.requests)
    assert main(["push", "--data-dir", str(broken), "--repo-id", "hmu-lab/broken"]) == 2
    assert "config tiles names data/tiles/validation-*.parquet but no file matches" in caplog.text
    assert main(["push", "--data-dir", str(prepared_sample), "--repo-id", "not a repo id"]) == 2
    assert "repository id 'not a repo id': expected ORG/NAME" in caplog.text
    assert len(hub.requests) == asked


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("token", r"refused the token \(HTTP 401\).*hmu-lab/failing-token.*\$HF_TOKEN"),
        ("server", r"failed \(HTTP 500\) while committing .*hmu-lab/failing-server.*run the same push again"),
        ("timeout", r"no answer within 1 s while committing .*hmu-lab/failing-timeout.*run the same push again"),
    ],
    ids=["token", "server", "timeout"],
)
def test_failed_push_leaves_nothing_and_the_rerun_completes(
    fault: str,
    expected: str,
    prepared_sample: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = f"hmu-lab/failing-{fault}"
    args = ["push", "--data-dir", str(prepared_sample), "--repo-id", repo, "--timeout", "1"]
    with HubStandIn(tmp_path / "hub", TOKEN) as fresh, use_standin(monkeypatch, fresh):
        if fault == "token":
            monkeypatch.setenv("HF_TOKEN", "hf_revokedToken")
        elif fault == "server":
            fresh.fail("commit", 500)
        else:
            fresh.hang("commit", 3)
        assert main(args) == 2
        assert any(r.levelno == logging.ERROR and re.search(expected, r.message) for r in caplog.records)
        assert fresh.commits(repo, "dataset") == []
        assert fresh.files(repo, "dataset") == {}

        monkeypatch.setenv("HF_TOKEN", TOKEN)
        assert main(args) == 0
        assert len(fresh.commits(repo, "dataset")) == 1
        assert len(fresh.files(repo, "dataset")) == 8
        assert max(Counter(fresh.lfs_uploads).values()) == 1  # no shard sent twice over both attempts


def test_commit_made_but_answer_lost_is_not_repeated(
    prepared_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["push", "--data-dir", str(prepared_sample), "--repo-id", "hmu-lab/lost-answer", "--timeout", "1"]
    with HubStandIn(tmp_path / "hub", TOKEN) as fresh, use_standin(monkeypatch, fresh):
        fresh.hang("commit", 1.5, apply=True)
        assert main(args) == 2
        deadline = time.monotonic() + 5
        while not fresh.commits("hmu-lab/lost-answer", "dataset") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main(args) == 0
        assert len(fresh.commits("hmu-lab/lost-answer", "dataset")) == 1


# The model.


def test_train_push_to_hub_sends_one_commit_of_chosen_files(hub: HubStandIn, trained: Path) -> None:
    assert (trained / "checkpoint-1").is_dir() and (trained / "training_args.bin").is_file()
    commits = hub.commits(MODEL_REPO)
    assert len(commits) == 1
    files = hub.files(MODEL_REPO)
    assert set(files) == PUBLISHED_MODEL_FILES  # no checkpoint-*, training_args.bin, optimizer or predictions
    assert hub.repo(MODEL_REPO).private
    config = json.loads(files["config.json"])
    assert [config["id2label"][str(i)] for i in range(8)] == list(CLASS_NAMES)
    assert files["model.safetensors"] == (trained / "model.safetensors").read_bytes()


def test_model_card_metadata_and_model_index(hub: HubStandIn, trained: Path) -> None:
    card = ModelCard(hub.files(MODEL_REPO)["README.md"].decode())
    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag) == (
        "cc-by-4.0",
        "transformers",
        "image-classification",
    )
    assert {"histopathology", "colorectal-cancer"} <= set(data.tags)
    assert data.datasets == ["hmu_crc_hist550k"] and data.base_model is None  # a local folder, trained from scratch
    found = {(r.dataset_config, r.dataset_split, r.metric_type): r for r in data.eval_results}
    assert len(found) == 3 * len(CARD_METRICS)
    for path in trained.glob("*_metrics.json"):
        name = path.name.removesuffix("_metrics.json")
        config, split = ("tiles", name) if name == "validation" else (name, "test")
        metrics = json.loads(path.read_text())
        for key, metric_type in CARD_METRICS.items():
            result = found[(config, split, metric_type)]
            assert result.metric_value == pytest.approx(metrics[key], abs=5e-5)
            assert result.dataset_type == result.dataset_name == "hmu_crc_hist550k"
        for picture in ("roc", "confusion_matrix", "per_class"):
            assert f"]({name}_{picture}.png)" in card.text
    assert "trained from scratch" in card.text and "Research use only" in card.text
    assert "SYNTHETIC" in card.text


def test_card_of_a_fine_tuned_checkpoint_names_its_base(trained: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(trained, tmp_path / "model", ignore=shutil.ignore_patterns("checkpoint-*")))
    run = yaml.safe_load((folder / "resolved_config.yaml").read_text())
    run |= {"model_name_or_path": "google/vit-base-patch16-224", "model_config": None, "num_folds": 10, "fold": 3}
    (folder / "resolved_config.yaml").write_text(yaml.safe_dump(run))
    card = ModelCard(render_model_card(folder, "hmu-lab/vit", dataset_id="hmu-lab/sample"))
    assert card.data.base_model == "google/vit-base-patch16-224"
    assert "fine-tuned from `google/vit-base-patch16-224`" in card.text
    assert "fold 3 of 10 patient-grouped folds" in card.text
    assert "| learning rate | 5e-05 |" in card.text


def test_push_model_then_pipeline_from_the_hub_matches_local(
    hub: HubStandIn, trained: Path, sample_release: Path
) -> None:
    repo = "hmu-lab/tiny-public"
    args = ["push-model", "--model", str(trained), "--repo-id", repo, "--dataset-id", "hmu-lab/sample", "--public"]
    assert main(args) == 0
    assert len(hub.commits(repo)) == 1 and not hub.repo(repo).private
    card = ModelCard(hub.files(repo)["README.md"].decode())
    assert card.data.datasets == ["hmu-lab/sample"]
    assert {r.dataset_type for r in card.data.eval_results} == {"hmu-lab/sample"}

    tiles = [str(p) for p in sorted((sample_release / "TUM").glob("*.png"))[:4]]
    from_hub = pipeline("image-classification", model=repo, top_k=8)(tiles)
    local = pipeline("image-classification", model=str(trained), top_k=8)(tiles)
    for theirs, ours in zip(from_hub, local, strict=True):
        assert [p["label"] for p in theirs] == [p["label"] for p in ours]
        assert [p["score"] for p in theirs] == pytest.approx([p["score"] for p in ours], abs=1e-6)


def test_model_with_other_labels_is_not_pushed(
    hub: HubStandIn, foreign_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asked = len(hub.requests)
    assert main(["push-model", "--model", str(foreign_model), "--repo-id", "hmu-lab/pets"]) == 2
    assert "model labels ['cat', 'dog'] do not match the tissue classes" in caplog.text
    assert len(hub.requests) == asked


def test_token_is_never_printed_logged_or_uploaded(
    hub: HubStandIn,
    trained: Path,
    prepared_sample: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in (None, "hmu_crc", "huggingface_hub", "httpx2"):  # train_hf set hmu_crc to INFO; go below it
        caplog.set_level(logging.DEBUG, logger=name)
    assert main(["push-model", "--model", str(trained), "--repo-id", "hmu-lab/token-check"]) == 0
    assert main(["push", "--data-dir", str(prepared_sample), "--repo-id", "hmu-lab/token-check-data"]) == 0
    captured = capsys.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err
    uploaded = [data for repo in hub.repos.values() for data in hub.files(repo.repo_id, repo.repo_type).values()]
    assert uploaded and not [data for data in uploaded if TOKEN.encode() in data]
    assert not [p for p in (hub.root / "objects").iterdir() if TOKEN.encode() in p.read_bytes()]

    # A file that holds the token is refused before anything is sent.
    leaky = Path(shutil.copytree(trained, tmp_path / "leaky", ignore=shutil.ignore_patterns("checkpoint-*")))
    (leaky / "resolved_config.yaml").write_text(f"hub_token: {TOKEN}\n")
    asked = len(hub.requests)
    assert main(["push-model", "--model", str(leaky), "--repo-id", "hmu-lab/leaky"]) == 2
    assert len(hub.requests) == asked
    assert "resolved_config.yaml contains the Hub token" in caplog.text and TOKEN not in caplog.text


# Predicting tiles.


def test_predict_folders_matches_evaluate(
    trained: Path, prepared_sample: Path, sample_release: Path, tmp_path: Path
) -> None:
    evaluated = tmp_path / "evaluate"
    assert (
        main(["evaluate", "--model", str(trained), "--dataset", str(prepared_sample), "--output-dir", str(evaluated)])
        == 0
    )
    out = tmp_path / "predictions.csv"
    assert (
        main(["predict", "--model", str(trained), str(sample_release), "--output", str(out), "--batch-size", "32"])
        == 0
    )

    predicted = pd.read_csv(out)
    tiles = [p for p in sample_release.rglob("*") if p.suffix.lower() in (".png", ".tif")]
    assert len(predicted) == len(tiles) == len(set(predicted["file"]))
    assert list(predicted.columns) == ["file", "predicted", *(f"prob_{c}" for c in CLASS_NAMES)]
    probabilities = predicted[[f"prob_{c}" for c in CLASS_NAMES]]
    assert (probabilities.sum(axis=1) - 1).abs().max() < 1e-4
    assert (predicted["predicted"] == probabilities.idxmax(axis=1).str.removeprefix("prob_")).all()

    predicted["file_name"] = [Path(f).relative_to(sample_release).as_posix() for f in predicted["file"]]
    for name in ("validation", "nct_crc_he_100k"):
        reference = pd.read_csv(evaluated / f"{name}_predictions.csv")
        joined = reference.merge(predicted, on="file_name", suffixes=("_evaluate", ""))
        assert len(joined) == len(reference) > 0
        assert (joined["predicted_evaluate"] == joined["predicted"]).all()
        for c in CLASS_NAMES:
            assert (joined[f"prob_{c}_evaluate"] - joined[f"prob_{c}"]).abs().max() < 1e-5


def test_predict_unreadable_tile(
    trained: Path, sample_release: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "tiles"
    folder.mkdir()
    shutil.copy(next((sample_release / "ADI").glob("*.png")), folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out.csv"
    args = ["predict", "--model", str(trained), str(folder), "--output", str(out), "--num-workers", "0"]
    assert main(args) == 2
    assert "broken.png: expected a PNG, TIFF or JPEG tile" in caplog.text and "--skip-invalid" in caplog.text

    assert main([*args, "--skip-invalid"]) == 0
    assert pd.read_csv(out)["file"].tolist() == [str(folder / "good.png")]
    assert pd.read_csv(tmp_path / "out_skipped.csv")["file"].tolist() == [str(folder / "broken.png")]


def test_predict_refuses_a_model_with_other_labels(foreign_model: Path, sample_release: Path, tmp_path: Path) -> None:
    args = ["predict", "--model", str(foreign_model), str(sample_release / "ADI"), "--output", str(tmp_path / "x.csv")]
    assert main(args) == 2
    assert not (tmp_path / "x.csv").exists()
