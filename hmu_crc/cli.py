"""The `hmu-crc` command: sample, prepare, and the verbs that later build on them."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hmu_crc.problems import ReleaseError
from hmu_crc.release import DEFAULT_PATIENT_PATTERN

if TYPE_CHECKING:
    from hmu_crc.hub import PushResult

logger = logging.getLogger("hmu_crc")

DEFAULT_OUTPUT = "hmu_crc_hist550k"
"""Where `prepare` writes by default: `load_dataset("hmu_crc_hist550k", ...)` then finds it from the folder above."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hmu-crc", description=__doc__)
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")
    verbs = parser.add_subparsers(dest="verb", required=True)

    sample = verbs.add_parser("sample", help="write a small SYNTHETIC release-shaped sample")
    sample.add_argument("--output-dir", required=True, type=Path, help="folder to create (must be new or empty)")
    sample.add_argument("--patients", type=int, default=12, help="number of synthetic patients")
    sample.add_argument("--tiles-per-class", type=int, default=24, help="tiles per class over all patients")
    sample.add_argument("--seed", type=int, default=0, help="seed of the drawing")
    sample.add_argument("--kather", action="store_true", help="also write Kather-shaped external sets")

    sample_slide = verbs.add_parser(
        "sample-slide", help="write a SYNTHETIC whole slide (pyramidal TIFF) of known tissue regions, for slide-map"
    )
    sample_slide.add_argument("--output", required=True, type=Path, help="the .tif to write (must not exist)")
    sample_slide.add_argument("--rows", type=int, default=12, help="rows of 224 px tiles")
    sample_slide.add_argument("--columns", type=int, default=16, help="columns of 224 px tiles")
    sample_slide.add_argument("--regions", type=int, default=8, help="patches of tissue classes")
    sample_slide.add_argument("--seed", type=int, default=0, help="seed of the drawing")

    prepare = verbs.add_parser("prepare", help="validate a release and write a Hub-ready Parquet folder")
    prepare.add_argument("--data-dir", required=True, type=Path, help="the release: class folders and/or zips")
    prepare.add_argument("--output-dir", type=Path, default=Path(DEFAULT_OUTPUT), help="folder to write")
    prepare.add_argument("--num-proc", type=int, default=1, help="processes that check and write tiles")
    prepare.add_argument("--skip-invalid", action="store_true", help="leave bad tiles/rows out and list them")
    prepare.add_argument(
        "--validation", choices=["checksum", "decode"], default="checksum", help="decode also decodes every pixel"
    )
    prepare.add_argument("--patient-pattern", default=DEFAULT_PATIENT_PATTERN, help="regex with a patient_id group")
    prepare.add_argument("--patient-map", type=Path, help="CSV of file_name,patient_id; replaces the pattern")
    prepare.add_argument("--clinical-file", type=Path, help="the clinical CSV, if not inside the release")
    prepare.add_argument("--clinical-encoding", help="the clinical CSV's encoding when not UTF-8, e.g. gb18030")
    prepare.add_argument("--validation-size", type=float, default=0.3, help="fraction of patients in validation")
    prepare.add_argument("--test-size", type=float, default=0.0, help="fraction of patients held out in test")
    prepare.add_argument("--num-folds", type=int, default=0, help="k for patient-grouped k-fold (0: none)")
    prepare.add_argument("--fold", type=int, default=0, help="which fold is validation")
    prepare.add_argument("--seed", type=int, default=42, help="seed of the split")
    prepare.add_argument(
        "--split-by", choices=["patient", "tile"], default="patient", help="tile leaks patients: opt-in only"
    )
    evaluate = verbs.add_parser("evaluate", help="score a trained model: metrics JSON, predictions CSV, pictures")
    evaluate.add_argument("--model", required=True, help="folder written by train_hf.py, or a Hub model id")
    evaluate.add_argument("--dataset", default=DEFAULT_OUTPUT, help="prepared folder or Hub dataset id")
    evaluate.add_argument("--config", help="one config to score (default: tiles, then each Kather set found)")
    evaluate.add_argument("--split", help="split of --config (default: validation for tiles, test for Kather's)")
    evaluate.add_argument("--output-dir", type=Path, help="where to write (default: <model>/evaluation)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="tiles per forward pass")

    describe = verbs.add_parser("describe", help="load a prepared folder or Hub id and summarise every config")
    describe.add_argument("dataset", help="prepared folder (e.g. hmu_crc_hist550k) or Hub dataset id")

    crossval = verbs.add_parser(
        "crossval",
        help="patient-grouped k-fold cross-validation of one or more models, with mean ± std tables",
        description="Train each config on each fold with train_hf.py, skipping finished folds, then tabulate. "
        "train_hf.py flags for every run go after `--`, e.g. `-- --dataset DIR --num_train_epochs 1`; "
        "external sets are evaluated per fold only when named there, e.g. `--external_eval crc_val_he_7k`.",
    )
    crossval.add_argument(
        "--config", action="append", required=True, type=Path, help="a model's YAML; repeat for more models"
    )
    crossval.add_argument("--num-folds", type=int, default=10, help="k, folds of train+validation patients")
    crossval.add_argument(
        "--output-dir", type=Path, default=Path("outputs/crossval"), help="folder of the folds and tables"
    )
    crossval.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: train_hf.py flags for every run")

    predict = verbs.add_parser("predict", help="classify tile files and folders of tiles into a CSV")
    predict.add_argument("--model", required=True, help="folder written by train_hf.py, or a Hub model id")
    predict.add_argument("paths", nargs="+", type=Path, help="tiles (png, tif, jpg) and folders searched at any depth")
    predict.add_argument("--output", type=Path, default=Path("predictions.csv"), help="the CSV to write")
    predict.add_argument("--batch-size", type=int, default=64, help="tiles per forward pass")
    predict.add_argument("--num-workers", type=int, help="processes decoding tiles (default: up to 8 cores)")
    predict.add_argument("--skip-invalid", action="store_true", help="list unreadable files and go on")

    explain = verbs.add_parser(
        "explain", help="Grad-CAM heatmaps of tiles: overlays, a CSV, contact sheets per predicted class"
    )
    explain.add_argument("--model", required=True, help="folder written by train_hf.py, or a Hub model id")
    explain.add_argument("paths", nargs="+", type=Path, help="tiles (png, tif, jpg) and folders searched at any depth")
    explain.add_argument("--output-dir", type=Path, default=Path("explanations"), help="new or empty folder to write")
    explain.add_argument("--batch-size", type=int, default=32, help="tiles per forward and backward pass")
    explain.add_argument("--target-class", help="class every heatmap explains (default: each tile's predicted one)")
    explain.add_argument("--num-workers", type=int, help="processes decoding tiles (default: up to 8 cores)")
    explain.add_argument("--skip-invalid", action="store_true", help="list unreadable files and go on")

    survival = verbs.add_parser(
        "survival",
        help="per-patient tissue composition against overall survival: Kaplan-Meier, log-rank, Cox",
        description="Count each patient's predicted tiles per class, join the clinical rows, split patients by one "
        "class's fraction for Kaplan-Meier curves and a log-rank test, and fit a Cox model of the fractions with "
        "age, sex and stage. On small cohorts, and on the synthetic sample, the numbers mean nothing.",
    )
    survival.add_argument(
        "--predictions",
        nargs="+",
        required=True,
        type=Path,
        help="CSVs of `predict` or `evaluate`, per-slide Parquet files, or folders of them",
    )
    survival.add_argument(
        "--clinical", required=True, type=Path, help="prepared folder, release folder, or the clinical CSV"
    )
    survival.add_argument("--output-dir", type=Path, default=Path("survival"), help="folder to write")
    survival.add_argument("--split-by", default="STR", help="class whose fraction splits patients (default STR)")
    survival.add_argument("--threshold", default="median", help="'median' or a fraction in [0, 1]; above is high")
    survival.add_argument(
        "--patient-pattern", default=DEFAULT_PATIENT_PATTERN, help="regex with a patient_id group, on tile paths"
    )
    survival.add_argument("--patient-map", type=Path, help="CSV of patient_id with file_name and/or slide")
    survival.add_argument("--reference-class", default="TUM", help="fraction left out of the Cox model")
    survival.add_argument("--cox-classes", nargs="+", help="fractions in the Cox model (default: all but reference)")
    survival.add_argument(
        "--clinical-covariates",
        nargs="*",
        choices=["age", "sex", "stage"],
        default=["age", "sex", "stage"],
        help="clinical covariates of the Cox model; none with an empty list",
    )
    survival.add_argument("--penalizer", default="auto", help="Cox ridge penalizer: 'auto' or a number >= 0")

    slide_map = verbs.add_parser(
        "slide-map",
        help="classify every tissue tile of a whole-slide image: Parquet, class fractions, a coloured map",
        description="Find tissue on a thumbnail, cut it into 224 px tiles at the training scale, classify them in "
        "batches and write tile_predictions.parquet, class_fractions.json and slide_map.png. Reads SVS and the other "
        "formats OpenSlide opens, and tiled pyramidal TIFFs.",
    )
    slide_map.add_argument("--model", required=True, help="folder written by train_hf.py, or a Hub model id")
    slide_map.add_argument("slide", type=Path, help="the whole-slide image (SVS, tiled pyramidal TIFF, ...)")
    slide_map.add_argument("--output-dir", type=Path, help="folder to write (default: <slide name>_map)")
    slide_map.add_argument(
        "--mpp", type=_mpp_or_native, default=0.5, help="µm/px of the 224 px tiles (default 0.5, as trained) or native"
    )
    slide_map.add_argument("--slide-mpp", type=float, help="the slide's µm/px at level 0, if its metadata lacks it")
    slide_map.add_argument("--tissue-threshold", type=float, help="tissue fraction to classify a tile (0.25)")
    slide_map.add_argument("--saturation-threshold", type=float, help="saturation of tissue (default: per slide)")
    slide_map.add_argument("--batch-size", type=int, default=64, help="tiles per forward pass")
    slide_map.add_argument("--num-workers", type=int, default=2, help="threads reading tiles while the model runs")

    push = verbs.add_parser("push", help="publish a prepared folder as a Hub dataset, in one commit")
    push.add_argument("--data-dir", required=True, type=Path, help="the folder `hmu-crc prepare` wrote")
    push.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repository (created if missing)")
    push.add_argument(
        "--include-clinical", action="store_true", help="also publish the clinical configs (patient-level data)"
    )
    push_model = verbs.add_parser("push-model", help="publish a trained model with its card, in one commit")
    push_model.add_argument("--model", required=True, type=Path, help="the output_dir of train_hf.py")
    push_model.add_argument("--repo-id", required=True, help="ORG/NAME of the model repository (created if missing)")
    push_model.add_argument("--dataset-id", help="dataset the card names (default: the run's, when a Hub id)")
    for verb in (push, push_model):
        visibility = verb.add_mutually_exclusive_group()
        visibility.add_argument(
            "--private",
            dest="private",
            action="store_true",
            default=True,
            help="a new repository is private (default)",
        )
        visibility.add_argument("--public", dest="private", action="store_false", help="a new repository is public")
        verb.add_argument("--token-env", help="variable holding the token (default: $HF_TOKEN, then `hf auth login`)")
        verb.add_argument("--timeout", type=float, default=60.0, help="seconds to wait on any one request")
    return parser


def run_sample(args: argparse.Namespace) -> None:
    from hmu_crc.sample import write_sample

    summary = write_sample(
        args.output_dir,
        patients=args.patients,
        tiles_per_class=args.tiles_per_class,
        seed=args.seed,
        kather=args.kather,
    )
    kather = f" and {sum(summary.kather_tiles.values())} Kather-shaped tiles" if summary.kather_tiles else ""
    print(
        f"Wrote a SYNTHETIC sample to {summary.output_dir}: {summary.num_tiles} tiles of {summary.num_patients} "
        f"patients{kather}. Every tile and clinical row is generated; it is not patient data."
    )


def run_sample_slide(args: argparse.Namespace) -> None:
    from hmu_crc.synthetic_slide import write_sample_slide

    written = write_sample_slide(args.output, args.rows, args.columns, args.seed, args.regions)
    planted = ", ".join(f"{name} {count}" for name, count in written.counts.items() if count)
    print(
        f"Wrote a SYNTHETIC slide to {written.slide} (0.5 µm/px): tiles planted {planted}; "
        f"{written.glass_tiles} of glass. Every pixel is generated; it is not patient data."
    )
    print(f"The planted classes, to compare with a slide map: {written.layout_file}")


def run_prepare(args: argparse.Namespace) -> None:
    from hmu_crc.export import export_release
    from hmu_crc.manifest import ReleaseOptions
    from hmu_crc.splits import SplitSpec

    options = ReleaseOptions(
        data_dir=args.data_dir,
        patient_pattern=args.patient_pattern,
        patient_map_file=args.patient_map,
        clinical_file=args.clinical_file,
        clinical_encoding=args.clinical_encoding,
        split=SplitSpec(args.validation_size, args.test_size, args.num_folds, args.fold, args.seed),
        split_by=args.split_by,
        skip_invalid=args.skip_invalid,
        validation=args.validation,
        num_proc=args.num_proc,
    )
    summary = export_release(options, args.output_dir)
    counts = summary.counts
    print(f"Wrote {summary.output_dir}:")
    for config, splits in summary.configs.items():
        print(f"  {config}: " + ", ".join(f"{split} {rows}" for split, rows in splits.items()))
    found, written, excluded = counts["tiles_found"], counts["tiles_written"], counts["tiles_excluded"]
    print(f"Tiles found {found}, written {written}, excluded {excluded}.")
    listed = summary.output_dir / "problems.csv"
    print(f"{summary.problems} file(s) or row(s) left out or flagged, with reasons: {listed}")


def run_evaluate(args: argparse.Namespace) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hmu_crc.evaluation import check_labels, evaluate_split, evaluation_trainer
    from hmu_crc.training import EXTERNAL_SETS, load_evaluation_sets

    model = AutoModelForImageClassification.from_pretrained(args.model)
    check_labels(model)
    processor = AutoImageProcessor.from_pretrained(args.model)
    output_dir = args.output_dir or Path(args.model) / "evaluation"
    trainer = evaluation_trainer(model, processor, output_dir, args.batch_size)
    wanted = (
        [(args.config, args.split)]
        if args.config
        else [("tiles", "validation")] + [(s, "test") for s in EXTERNAL_SETS]
    )
    for name, dataset in load_evaluation_sets(args.dataset, wanted).items():
        metrics = evaluate_split(trainer, dataset, name, output_dir)
        accuracy, f1, count = metrics["accuracy"], metrics["f1_macro"], metrics["num_examples"]
        print(f"{name}: accuracy {accuracy:.4f}, macro F1 {f1:.4f}, {count} tiles")
    print(f"Metrics, predictions and pictures: {output_dir}")


def run_describe(args: argparse.Namespace) -> None:
    import datasets

    for config in datasets.get_dataset_config_names(args.dataset):
        parts = datasets.load_dataset(args.dataset, config)
        for split, part in parts.items():
            line = f"{config:>24} {split:<10} {len(part):>7} rows"
            if "label" in part.features:
                names = part.features["label"].names
                counts = np.bincount(part.with_format("numpy")["label"], minlength=len(names))
                line += "  " + " ".join(f"{n}={c}" for n, c in zip(names, counts, strict=True))
            if "patient_id" in part.features:
                line += f"  patients={len(set(part['patient_id']))}"
            print(line)


def run_crossval(args: argparse.Namespace) -> None:
    from hmu_crc.crossval import cross_validate

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    result = cross_validate(args.config, args.num_folds, args.output_dir, train_args)
    if result is None:  # not the main process of a distributed launch
        return
    print(f"Trained {len(result.trained)} fold(s), reused {len(result.skipped)} finished one(s).")
    print(f"Per fold: {result.folds_table}")
    print(f"Summary: {result.summary_table} and {result.summary_markdown}")
    print()
    print(result.markdown, end="")


def run_predict(args: argparse.Namespace) -> None:
    from hmu_crc.predict import predict_tiles

    summary = predict_tiles(
        args.model,
        args.paths,
        args.output,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        skip_invalid=args.skip_invalid,
    )
    print(f"Classified {summary.predicted} tile(s): {summary.output}")
    if summary.skipped:
        print(f"Left out {len(summary.skipped)} unreadable file(s), listed in {summary.skipped_list}")


def run_explain(args: argparse.Namespace) -> None:
    from hmu_crc.explain import explain_tiles

    summary = explain_tiles(
        args.model,
        args.paths,
        args.output_dir,
        batch_size=args.batch_size,
        target_class=args.target_class,
        num_workers=args.num_workers,
        skip_invalid=args.skip_invalid,
    )
    print(f"Explained {summary.explained} tile(s) with {summary.method}.")
    print(f"Table: {summary.table}; tiles, heatmaps and overlays: {summary.output_dir}")
    for name, path in summary.contact_sheets.items():
        print(f"  {name}: {summary.counts[name]} tile(s), contact sheet {path}")
    print(f"Method and counts: {summary.report}")
    if summary.skipped:
        print(f"Left out {len(summary.skipped)} unreadable file(s), listed in {summary.report}")


def run_survival(args: argparse.Namespace) -> None:
    from hmu_crc.survival import SurvivalOptions, run_survival

    penalizer = args.penalizer
    if penalizer != "auto":
        try:
            penalizer = float(penalizer)
        except ValueError:
            raise ValueError(f"--penalizer: expected 'auto' or a number of 0 or more, found {penalizer!r}") from None
    options = SurvivalOptions(
        predictions=tuple(args.predictions),
        clinical=args.clinical,
        output_dir=args.output_dir,
        split_by=args.split_by,
        threshold=args.threshold,
        patient_pattern=args.patient_pattern,
        patient_map=args.patient_map,
        reference_class=args.reference_class,
        cox_classes=tuple(args.cox_classes) if args.cox_classes else None,
        clinical_covariates=tuple(args.clinical_covariates),
        penalizer=penalizer,
    )
    report = run_survival(options)
    counts = report.summary["counts"]
    print(f"Analysed {counts['patients_analysed']} patient(s) with {counts['events']} death(s); wrote:")
    for path in report.files.values():
        print(f"  {path}")
    without = counts["patients_without_clinical_row"], counts["clinical_rows_without_predictions"]
    if any(without) or counts["patients_without_survival_data"]:
        print(
            f"Not analysed: {without[0]} patient(s) without a clinical row, {without[1]} clinical row(s) without "
            f"predictions, {counts['patients_without_survival_data']} without survival data; "
            f"listed in {report.files['unmatched']}"
        )
    for caution in report.cautions:
        print(f"CAUTION: {caution}")


def _mpp_or_native(text: str) -> float | str:
    if text == "native":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected µm per pixel (e.g. 0.5) or 'native', found {text!r}") from None


def run_slide_map(args: argparse.Namespace) -> None:
    from hmu_crc.slide_map import default_output_dir, map_slide

    chosen = {"tissue_threshold": args.tissue_threshold, "saturation_threshold": args.saturation_threshold}
    summary = map_slide(
        args.slide,
        args.model,
        args.output_dir or default_output_dir(args.slide),
        mpp=args.mpp,
        slide_mpp=args.slide_mpp,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        **{name: value for name, value in chosen.items() if value is not None},
    )
    print(f"Classified {summary.tissue_tiles} tissue tile(s) of {summary.grid_tiles} in the grid:")
    for name, fraction in summary.fractions.items():
        print(f"  {name:<4} {fraction:7.2%}  {summary.counts[name]:>7} tile(s)")
    if summary.tissue_area_mm2 is not None:
        print(f"Tissue area {summary.tissue_area_mm2:.2f} mm².")
    print(f"Wrote {', '.join(str(path) for path in summary.outputs.values())}")


def run_push(args: argparse.Namespace) -> None:
    from hmu_crc.hub import push_dataset, resolve_token

    token = resolve_token(args.token_env)
    result = push_dataset(
        args.data_dir,
        args.repo_id,
        private=args.private,
        include_clinical=args.include_clinical,
        token=token,
        timeout=args.timeout,
    )
    _print_push(result)


def run_push_model(args: argparse.Namespace) -> None:
    from hmu_crc.hub import push_model, resolve_token

    token = resolve_token(args.token_env)
    result = push_model(
        args.model, args.repo_id, private=args.private, dataset_id=args.dataset_id, token=token, timeout=args.timeout
    )
    _print_push(result)


def _print_push(result: PushResult) -> None:
    if result.commit is None:
        print(f"{result.url} already holds these {len(result.files)} file(s); no commit made.")
    else:
        print(f"Pushed {len(result.files)} file(s) to {result.url} in one commit ({result.commit}).")
    if result.deleted:
        print(f"Deleted {len(result.deleted)} file(s) this push no longer sends: {', '.join(result.deleted)}")


VERBS = {
    "sample": run_sample,
    "sample-slide": run_sample_slide,
    "prepare": run_prepare,
    "evaluate": run_evaluate,
    "describe": run_describe,
    "crossval": run_crossval,
    "predict": run_predict,
    "explain": run_explain,
    "slide-map": run_slide_map,
    "survival": run_survival,
    "push": run_push,
    "push-model": run_push_model,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # datasets explains at WARNING level each time it runs a small split in one process: not news to our users.
    logging.getLogger("datasets").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        VERBS[args.verb](args)
    except (ReleaseError, ValueError, FileNotFoundError, FileExistsError) as error:
        logger.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
