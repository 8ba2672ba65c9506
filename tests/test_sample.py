"""Tests for the synthetic, release-shaped sample."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmu_crc.labels import CLASS_NAMES, KATHER_BACKGROUND
from hmu_crc.sample import SampleSummary, _allocate, _write_clinical, render_tile, write_sample

PATIENT_PATTERN = re.compile(r"^(?P<patient_id>[A-Za-z0-9]+)_")
TILE_NAME = re.compile(r"^P\d{4}_(?P<class_name>[A-Z]+)_\d{5}\.png$")
CSV_NAME = "HMU CRC Clinical.csv"
HEADERS = [
    "Patient ID",
    "Sex",
    "Age",
    "T",
    "N",
    "M",
    "TNM Stage",
    "Treatment History",
    "Survival Time (months)",
    "Survival Status",
    "Tumor Location",
]
KATHER_SETS = ("CRC-VAL-HE-7K", "NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM")
KATHER_CLASSES = {*CLASS_NAMES, KATHER_BACKGROUND}

# Stage groups for M0, written out as a table (rows T, columns N0 N1a N1b N2a N2b) rather than as rules,
# so that the test does not repeat the module's logic.
STAGE_TABLE = {
    "T1": ("I", "IIIA", "IIIA", "IIIA", "IIIB"),
    "T2": ("I", "IIIA", "IIIA", "IIIB", "IIIB"),
    "T3": ("IIA", "IIIB", "IIIB", "IIIB", "IIIC"),
    "T4a": ("IIB", "IIIB", "IIIB", "IIIC", "IIIC"),
    "T4b": ("IIC", "IIIC", "IIIC", "IIIC", "IIIC"),
}
N_VALUES = ("N0", "N1a", "N1b", "N2a", "N2b")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleSummary:
    root = tmp_path_factory.mktemp("sample") / "release"
    return write_sample(root, patients=6, tiles_per_class=12, seed=3, kather=True, kather_tiles_per_class=2)


def small_sample(root: Path, seed: int = 0, kather: bool = True) -> SampleSummary:
    return write_sample(root, patients=3, tiles_per_class=2, seed=seed, kather=kather, kather_tiles_per_class=1)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def hmu_tiles(root: Path) -> list[Path]:
    return sorted(p for name in CLASS_NAMES for p in (root / name).iterdir())


def read_clinical(root: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (root / CSV_NAME).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


# --- layout and counts ----------------------------------------------------------------------------------------


def test_root_holds_class_folders_csv_notice_and_kather_sets(sample: SampleSummary) -> None:
    found = {p.name for p in sample.output_dir.iterdir()}
    assert found == {*CLASS_NAMES, CSV_NAME, "SYNTHETIC_SAMPLE.md", *KATHER_SETS}


def test_tile_names_follow_the_pattern_and_sit_in_their_class_folder(sample: SampleSummary) -> None:
    for path in hmu_tiles(sample.output_dir):
        match = TILE_NAME.match(path.name)
        assert match, path.name
        assert match["class_name"] == path.parent.name


def test_counts_per_class_and_total(sample: SampleSummary) -> None:
    for name in CLASS_NAMES:
        assert len(list((sample.output_dir / name).iterdir())) == 12
    assert sample.tiles_per_class == dict.fromkeys(CLASS_NAMES, 12)
    assert sample.num_tiles == len(hmu_tiles(sample.output_dir)) == 96
    assert sample.num_patients == 6


def test_every_tile_is_a_224_rgb_8bit_png(sample: SampleSummary) -> None:
    sizes = []
    for path in hmu_tiles(sample.output_dir):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (224, 224)), path.name
        sizes.append(path.stat().st_size)
    # Smooth textures with mild noise: neither flat colour nor incompressible noise.
    assert 20_000 < np.mean(sizes) < 160_000


def test_notice_says_the_sample_is_synthetic(sample: SampleSummary) -> None:
    text = (sample.output_dir / "SYNTHETIC_SAMPLE.md").read_text(encoding="utf-8")
    assert "procedurally" in text
    assert "patient" in text
    assert "nothing about real tissue" in text


# --- patients -------------------------------------------------------------------------------------------------


def test_tile_patients_and_csv_patients_are_the_same(sample: SampleSummary) -> None:
    from_names = set()
    for path in hmu_tiles(sample.output_dir):
        match = PATIENT_PATTERN.match(path.name)
        assert match, path.name
        from_names.add(match["patient_id"])
    _, rows = read_clinical(sample.output_dir)
    from_csv = [row["Patient ID"] for row in rows]
    assert len(from_csv) == len(set(from_csv)) == 6
    assert from_names == set(from_csv) == {f"P{i:04d}" for i in range(1, 7)}


def test_patients_differ_in_class_mix(sample: SampleSummary) -> None:
    mixes = {}
    for path in hmu_tiles(sample.output_dir):
        patient = path.name.split("_")[0]
        mixes.setdefault(patient, dict.fromkeys(CLASS_NAMES, 0))[path.parent.name] += 1
    assert len({tuple(mix.values()) for mix in mixes.values()}) > 1
    # Uneven: at least one patient lacks at least one class.
    assert any(0 in mix.values() for mix in mixes.values())


def test_allocation_is_uneven_complete_and_leaves_no_patient_out() -> None:
    # The allocator alone, at sizes where files would be slow: 10 patients sharing 1,000 tiles per class.
    counts = _allocate(np.random.default_rng(0), 10, 1000)
    assert counts.sum(axis=0).tolist() == [1000] * len(CLASS_NAMES)
    # Equal shares would give a spread of about 10% of the mean per class; drawn shares give far more.
    spread = counts.std(axis=0) / counts.mean(axis=0)
    assert spread.mean() > 0.5, spread
    sparse = _allocate(np.random.default_rng(0), 80, 10)
    assert sparse.sum(axis=1).min() >= 1
    assert sparse.sum(axis=0).tolist() == [10] * len(CLASS_NAMES)


def test_as_many_patients_as_tiles_gives_each_patient_one_tile(tmp_path: Path) -> None:
    summary = write_sample(tmp_path / "s", patients=8, tiles_per_class=1)
    patients = [path.name.split("_")[0] for path in hmu_tiles(summary.output_dir)]
    assert sorted(patients) == [f"P{i:04d}" for i in range(1, 9)]
    assert summary.tiles_per_class == dict.fromkeys(CLASS_NAMES, 1)


# --- clinical CSV ---------------------------------------------------------------------------------------------


def test_clinical_headers_are_exact(sample: SampleSummary) -> None:
    headers, _ = read_clinical(sample.output_dir)
    assert headers == HEADERS


def test_clinical_values_are_in_their_domains(sample: SampleSummary) -> None:
    _, rows = read_clinical(sample.output_dir)
    for row in rows:
        assert row["Sex"] in {"Male", "Female"}
        assert re.fullmatch(r"\d+", row["Age"]) and 30 <= int(row["Age"]) <= 85
        assert row["T"] in STAGE_TABLE
        assert row["N"] in N_VALUES
        assert row["M"] in {"M0", "M1a"}
        assert row["Treatment History"] in {
            "Surgery",
            "Surgery + adjuvant chemotherapy",
            "Neoadjuvant chemoradiotherapy + surgery",
        }
        assert re.fullmatch(r"\d+\.\d", row["Survival Time (months)"])
        assert 1.0 <= float(row["Survival Time (months)"]) <= 120.0
        assert row["Survival Status"] in {"0", "1"}
        assert row["Tumor Location"] in {"Colon", "Rectum"}


def stage_of(row: dict[str, str]) -> str:
    if row["M"] != "M0":
        return "IVA"
    return STAGE_TABLE[row["T"]][N_VALUES.index(row["N"])]


@pytest.fixture(scope="module")
def many_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    # Only the clinical writer, so that a cohort large enough for statistics costs no tiles.
    root = tmp_path_factory.mktemp("clinical")
    ids = [f"P{i:04d}" for i in range(1, 601)]
    _write_clinical(root / CSV_NAME, np.random.default_rng(7), ids)
    return read_clinical(root)[1]


def test_stage_is_consistent_with_t_n_m(sample: SampleSummary, many_rows: list[dict[str, str]]) -> None:
    _, rows = read_clinical(sample.output_dir)
    for row in rows + many_rows:
        assert row["TNM Stage"] == stage_of(row), row
    # The large cohort reaches every stage group.
    assert {row["TNM Stage"] for row in many_rows} == {"I", "IIA", "IIB", "IIC", "IIIA", "IIIB", "IIIC", "IVA"}


def test_later_stage_means_shorter_survival(many_rows: list[dict[str, str]]) -> None:
    def deaths_and_months(stages: set[str]) -> tuple[float, float]:
        chosen = [row for row in many_rows if row["TNM Stage"] in stages]
        deaths = np.mean([row["Survival Status"] == "1" for row in chosen])
        return float(deaths), float(np.mean([float(row["Survival Time (months)"]) for row in chosen]))

    early_deaths, early_months = deaths_and_months({"I", "IIA"})
    late_deaths, late_months = deaths_and_months({"IIIC", "IVA"})
    assert late_deaths > early_deaths + 0.2
    assert late_months < early_months - 10


# --- determinism ----------------------------------------------------------------------------------------------


def test_same_seed_writes_byte_identical_files(tmp_path: Path) -> None:
    first = snapshot(small_sample(tmp_path / "a").output_dir)
    second = snapshot(small_sample(tmp_path / "b").output_dir)
    assert first == second
    assert any(name.endswith(".tif") for name in first)


def test_different_seed_writes_different_tiles_and_rows(tmp_path: Path) -> None:
    first = small_sample(tmp_path / "a", seed=0, kather=False).output_dir
    second = small_sample(tmp_path / "b", seed=1, kather=False).output_dir
    first_tiles = {path.read_bytes() for path in hmu_tiles(first)}
    second_tiles = {path.read_bytes() for path in hmu_tiles(second)}
    assert not first_tiles & second_tiles
    assert read_clinical(first)[1] != read_clinical(second)[1]


def test_kather_sets_leave_the_hmu_part_unchanged(tmp_path: Path) -> None:
    with_kather = snapshot(small_sample(tmp_path / "a", kather=True).output_dir)
    without = snapshot(small_sample(tmp_path / "b", kather=False).output_dir)
    assert {name: data for name, data in with_kather.items() if name in without} == without


def test_render_tile_is_rgb_uint8_and_follows_the_generator() -> None:
    for name in (*CLASS_NAMES, KATHER_BACKGROUND):
        tile = render_tile(name, np.random.default_rng(5))
        assert tile.shape == (224, 224, 3)
        assert tile.dtype == np.uint8
        assert np.array_equal(tile, render_tile(name, np.random.default_rng(5)))
        assert not np.array_equal(tile, render_tile(name, np.random.default_rng(6)))


def test_render_tile_refuses_an_unknown_class() -> None:
    with pytest.raises(ValueError, match="class_name"):
        render_tile("XYZ", np.random.default_rng(0))


# --- Kather-shaped sets ---------------------------------------------------------------------------------------


def test_kather_sets_have_nine_folders_of_named_tifs(sample: SampleSummary) -> None:
    assert sample.kather_tiles == dict.fromkeys(KATHER_SETS, 18)
    for set_name in KATHER_SETS:
        folder = sample.output_dir / set_name
        assert {p.name for p in folder.iterdir()} == KATHER_CLASSES
        middle = "TCGA-" if set_name == "CRC-VAL-HE-7K" else ""
        names = []
        for class_name in KATHER_CLASSES:
            tiles = sorted((folder / class_name).iterdir())
            assert len(tiles) == 2
            for path in tiles:
                assert re.fullmatch(rf"{class_name}-{middle}[A-Z]{{8}}\.tif", path.name), path
                with Image.open(path) as image:
                    assert (image.format, image.mode, image.size) == ("TIFF", "RGB", (224, 224))
                    assert image.info["compression"] == "raw"
                names.append(path.name)
        assert len(names) == len(set(names)) == 18


def test_kather_background_is_light_and_flat(sample: SampleSummary) -> None:
    for set_name in KATHER_SETS:
        for path in (sample.output_dir / set_name / KATHER_BACKGROUND).iterdir():
            grey = np.asarray(Image.open(path), dtype=np.float32).mean(axis=-1)
            assert grey.mean() > 225
            assert grey.std() < 6


def mean_rgb(folder: Path) -> np.ndarray:
    tiles = [np.asarray(Image.open(p), dtype=np.float32) for name in CLASS_NAMES for p in (folder / name).iterdir()]
    return np.mean([tile.reshape(-1, 3).mean(axis=0) for tile in tiles], axis=0)


def test_nonorm_twin_has_a_different_stain_cast(sample: SampleSummary) -> None:
    normalised = mean_rgb(sample.output_dir / "NCT-CRC-HE-100K")
    twin = mean_rgb(sample.output_dir / "NCT-CRC-HE-100K-NONORM")
    # Blue minus red: the twin's cast is bluer, by far more than two draws of the same look would differ.
    assert (twin[2] - twin[0]) - (normalised[2] - normalised[0]) > 10


def test_without_kather_there_are_no_external_sets(tmp_path: Path) -> None:
    summary = small_sample(tmp_path / "s", kather=False)
    assert summary.kather_tiles == {}
    assert not any((summary.output_dir / name).exists() for name in KATHER_SETS)


# --- arguments and logging ------------------------------------------------------------------------------------


def test_refuses_a_non_empty_output_dir(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        write_sample(tmp_path, patients=2, tiles_per_class=1)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_refuses_a_file_as_output_dir(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="output_dir"):
        write_sample(path, patients=2, tiles_per_class=1)


def test_accepts_an_existing_empty_output_dir(tmp_path: Path) -> None:
    summary = write_sample(tmp_path, patients=2, tiles_per_class=1)
    assert summary.num_tiles == 8


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"patients": 1}, "patients"),
        ({"patients": 0}, "patients"),
        ({"tiles_per_class": 0}, "tiles_per_class"),
        ({"patients": 9, "tiles_per_class": 1}, "patients"),
        ({"kather": True, "kather_tiles_per_class": 0}, "kather_tiles_per_class"),
    ],
)
def test_refuses_bad_arguments(tmp_path: Path, arguments: dict[str, int], named: str) -> None:
    with pytest.raises(ValueError, match=rf"^{named}:"):
        write_sample(tmp_path / "s", **arguments)
    assert not (tmp_path / "s").exists()


def test_logs_one_info_line_with_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hmu_crc.sample"):
        small_sample(tmp_path / "s")
    records = [r for r in caplog.records if r.name == "hmu_crc.sample"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    message = records[0].getMessage()
    assert "synthetic" in message
    assert "16 tiles" in message and "3 patients" in message and "27 Kather tiles" in message


# --- separability ---------------------------------------------------------------------------------------------


def features(path: Path) -> np.ndarray:
    """Mean colour, colour spread and edge strength: what a tiny model can pick up first."""
    tile = np.asarray(Image.open(path), dtype=np.float32)
    grey = tile.mean(axis=-1)
    edges = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return np.concatenate([tile.reshape(-1, 3).mean(axis=0), tile.reshape(-1, 3).std(axis=0), [edges]])


def test_classes_are_separable_by_simple_features(sample: SampleSummary) -> None:
    paths = hmu_tiles(sample.output_dir)
    x = np.stack([features(p) for p in paths])
    y = np.array([CLASS_NAMES.index(p.parent.name) for p in paths])
    # Alternate tiles within each class (paths are sorted by class, then name): half to fit, half to score.
    fit = np.zeros(len(y), dtype=bool)
    for label in range(len(CLASS_NAMES)):
        fit[np.flatnonzero(y == label)[::2]] = True
    mean, std = x[fit].mean(axis=0), x[fit].std(axis=0) + 1e-6
    z = (x - mean) / std
    centroids = np.stack([z[fit & (y == label)].mean(axis=0) for label in range(len(CLASS_NAMES))])
    distances = ((z[~fit, None, :] - centroids[None]) ** 2).sum(axis=-1)
    accuracy = (distances.argmin(axis=1) == y[~fit]).mean()
    # Chance is 1/8 = 0.125; with 48 scored tiles a classifier without signal would stay within about
    # 0.125 +- 0.1 (two standard deviations). 0.6 needs real per-class structure, yet leaves room below the
    # near-perfect score that the drawn classes give, so a change of seed does not make the test flaky.
    assert accuracy >= 0.6, accuracy
