"""Whole-slide tissue maps: reading slides, finding tissue, and `hmu-crc slide-map` end to end on small synthetic
pyramidal TIFFs whose tissue classes are planted tile by tile."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tifffile
from PIL import Image

from hmu_crc import slide_map as slide_map_module
from hmu_crc import tissue
from hmu_crc.cli import main
from hmu_crc.labels import CLASS_NAMES
from hmu_crc.predict import load_classifier, predict_batch
from hmu_crc.sample import TILE_SIZE
from hmu_crc.slide_map import FIGURE_NAME, FRACTIONS_NAME, PREDICTIONS_NAME, map_slide, read_batches
from hmu_crc.slides import OpenSlideSlide, SlideError, TiffSlide, open_slide
from hmu_crc.synthetic_slide import region_layout, render_layout, write_pyramid_tiff

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import save_untrained

LAYOUT = [
    ["ADI", "DEB", None, "LYM", "MUC", None],
    [None, "MUS", "NORM", None, "STR", "TUM"],
    ["TUM", None, "STR", "NORM", None, "MUS"],
    ["MUC", "LYM", None, "DEB", "ADI", None],
]
"""Four rows of six 224 px tiles: every class twice (16 tissue tiles) and 8 tiles of glass between them."""

PLANTED = {(r, c): code for r, row in enumerate(LAYOUT) for c, code in enumerate(row) if code is not None}
MAX_WRONG_TILES = 4
"""Tiles of the 16 the demo model may get wrong, so each class's fraction is within 4/16 of its planted 2/16.

The demo model gets about 8% of freshly drawn synthetic tiles wrong, nearly all DEB (about a third, mostly taken
for NORM), STR (a fifth, for MUC) and NORM (a tenth, for MUS). With two tiles a class that makes 1.4 wrong tiles
on average, and five or more in about 2 of 1,000 draws: a failure here means the map, not chance. The pipeline
itself is checked exactly, against `predict_batch` on the planted tiles."""


def _pixels(scale: int = 1) -> np.ndarray:
    """The layout drawn with the same tiles every time (fixed seed), enlarged `scale` times."""
    return render_layout(LAYOUT, np.random.default_rng(7), scale=scale)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The layout as slides: an SVS-like file at 0.5 µm/px (OpenSlide reads it), a TIFF at 0.25 µm/px with levels in
    SubIFDs and µm resolution units (tifffile reads it), and a TIFF at 0.5 µm/px without resolution tags."""
    root = tmp_path_factory.mktemp("slides")
    half = _pixels()
    return {
        "half": write_pyramid_tiff(root / "half.svs", half, 0.5, layout="svs"),
        "quarter": write_pyramid_tiff(
            root / "quarter.tif", _pixels(scale=2), 0.25, layout="subifds", unit="micrometer"
        ),
        "no_mpp": write_pyramid_tiff(root / "no_mpp.tif", half, None),
    }


@pytest.fixture(scope="module")
def half_map(slides: dict[str, Path], trained_demo: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory):
    """The 0.5 µm/px slide mapped with the demo model, Parquet row groups of 4 rows to show the rows stream out."""
    out = tmp_path_factory.mktemp("half_map")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(slide_map_module, "ROWS_PER_GROUP", 4)
        summary = map_slide(slides["half"], trained_demo[0], out, batch_size=5)
    return summary, out


def _predicted_cells(output_dir: Path) -> dict[tuple[int, int], str]:
    table = pd.read_parquet(output_dir / PREDICTIONS_NAME)
    return {(int(r), int(c)): p for r, c, p in zip(table["row"], table["column"], table["predicted"], strict=True)}


def _check_against_planted(output_dir: Path) -> None:
    """The classified tiles are exactly the planted tissue tiles, and at most `MAX_WRONG_TILES` differ in class."""
    predicted = _predicted_cells(output_dir)
    assert set(predicted) == set(PLANTED), "tissue tiles found differ from the planted ones"
    wrong = {cell: (PLANTED[cell], found) for cell, found in predicted.items() if found != PLANTED[cell]}
    assert len(wrong) <= MAX_WRONG_TILES, f"misclassified (planted, predicted): {wrong}"
    report = json.loads((output_dir / FRACTIONS_NAME).read_text())
    for name in CLASS_NAMES:
        assert report["class_fractions"][name] == pytest.approx(2 / 16, abs=MAX_WRONG_TILES / 16)


# Reading slides


def test_both_readers_read_the_pixels_written(tmp_path: Path) -> None:
    pixels = _pixels(scale=2)
    generic = write_pyramid_tiff(tmp_path / "generic.tif", pixels, 0.25)
    with open_slide(generic, "openslide") as by_openslide, open_slide(generic, "tifffile") as by_tifffile:
        for slide in (by_openslide, by_tifffile):
            assert slide.mpp == pytest.approx(0.25)
            assert [level.downsample for level in slide.levels] == [1, 2, 4, 8, 16]
            np.testing.assert_array_equal(slide.read_region(300, 500, 0, 700, 260), pixels[500:760, 300:1000])
            # Past the right and bottom edges reads as white glass.
            corner = slide.read_region(2600, 1700, 0, 200, 200)
            np.testing.assert_array_equal(corner[:92, :88], pixels[1700:, 2600:])
            assert corner[92:].min() == corner[:, 88:].min() == 255
        np.testing.assert_array_equal(
            by_openslide.read_region(448, 448, 2, 100, 80), by_tifffile.read_region(448, 448, 2, 100, 80)
        )


def test_each_slide_goes_to_the_reader_that_sees_all_of_it(slides: dict[str, Path]) -> None:
    """SVS to OpenSlide; levels in SubIFDs and µm units to tifffile, since OpenSlide sees only their level 0."""
    with open_slide(slides["half"]) as svs, open_slide(slides["quarter"]) as subifds:
        assert isinstance(svs, OpenSlideSlide) and svs.mpp == pytest.approx(0.5) and len(svs.levels) == 4
        assert isinstance(subifds, TiffSlide) and subifds.mpp == pytest.approx(0.25) and len(subifds.levels) == 5
        np.testing.assert_array_equal(svs.read_region(224, 448, 0, 224, 224), _pixels()[448:672, 224:448])
    with open_slide(slides["quarter"], "openslide") as only_level_0:
        assert len(only_level_0.levels) == 1


def test_a_tile_at_half_micron_reads_the_same_from_both_scales(slides: dict[str, Path]) -> None:
    """A 448 px tile of the 0.25 µm/px slide comes from its level 1 at 224 px: the planted tile, up to resampling."""
    with open_slide(slides["half"]) as half, open_slide(slides["quarter"]) as quarter:
        half_grid = tissue.tile_grid(half, 224, TILE_SIZE)
        quarter_grid = tissue.tile_grid(quarter, 448, TILE_SIZE)
        assert (quarter_grid.level, quarter_grid.read_size) == (1, 224)
        assert (half_grid.rows, half_grid.columns) == (quarter_grid.rows, quarter_grid.columns) == (4, 6)
        difference = half_grid.read(half, 1, 2).astype(int) - quarter_grid.read(quarter, 1, 2)
        assert np.abs(difference).mean() < 4


def test_thumbnail_does_not_depend_on_the_chunks_it_is_read_in(
    slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_slide(slides["half"]) as slide:
        whole = tissue.read_thumbnail(slide, 14.0)
        monkeypatch.setattr(tissue, "READ_CHUNK", 64)
        chunked = tissue.read_thumbnail(slide, 14.0)
    assert whole.shape == chunked.shape == (64, 96, 3)
    assert np.abs(whole.astype(int) - chunked).max() <= 1


def test_tiff_slide_decodes_only_the_tiles_a_region_touches(slides: dict[str, Path]) -> None:
    with open_slide(slides["quarter"]) as slide:
        slide.read_region(250, 250, 0, 224, 224)  # inside the four 256 px tiles around (256, 256)
        assert sorted(slide._cache) == [(0, 0), (0, 1), (0, 11), (0, 12)]


def test_read_batches_in_threads_matches_reading_in_order(slides: dict[str, Path]) -> None:
    cells = np.array(sorted(PLANTED))
    with open_slide(slides["half"]) as slide:
        grid = tissue.tile_grid(slide, 224, TILE_SIZE)
        in_order = list(read_batches(slide, grid, cells, 3, num_workers=0))
        threaded = list(read_batches(slide, grid, cells, 3, num_workers=2))
    assert len(in_order) == len(threaded) == 6
    for (cells_a, tiles_a), (cells_b, tiles_b) in zip(in_order, threaded, strict=True):
        np.testing.assert_array_equal(cells_a, cells_b)
        np.testing.assert_array_equal(np.stack(tiles_a), np.stack(tiles_b))


# Finding tissue


def test_tissue_fractions_find_the_planted_tiles(slides: dict[str, Path]) -> None:
    """Every planted tile, fat included, is mostly tissue; glass tiles stay well under the tile threshold (the
    closing that joins the walls of fat cells also rounds off the corners of glass between tissue tiles)."""
    with open_slide(slides["half"]) as slide:
        found = tissue.find_tissue(slide, 224, TILE_SIZE)
    planted = np.array([[code is not None for code in row] for row in LAYOUT])
    assert found.fractions[planted].min() > 0.6
    assert found.fractions[~planted].max() < 0.2 < tissue.DEFAULT_TISSUE_THRESHOLD
    assert found.saturation_threshold == pytest.approx(tissue.MIN_SATURATION, abs=0.02)
    assert {tuple(cell) for cell in found.cells} == set(PLANTED)
    assert found.thumbnail.shape == (64, 96, 3) and found.mask.shape == (64, 96)


def test_glass_alone_gets_the_floor_threshold_and_no_tissue() -> None:
    glass = np.random.default_rng(0).integers(236, 244, (64, 64, 3), dtype=np.uint8)
    mask, threshold = tissue.tissue_mask(glass, 16)
    assert threshold == tissue.MIN_SATURATION
    assert not mask.any()


def test_tile_fractions_count_pixels_past_the_edge_as_glass() -> None:
    grid = tissue.TileGrid(tile_size=8, columns=2, rows=1, level=0, read_size=8, output_size=8)
    mask = np.ones((2, 3), dtype=bool)  # a 12 px wide slide at 4 px a mask pixel: the second tile is half outside
    np.testing.assert_allclose(tissue.tile_tissue_fractions(mask, 4.0, grid), [[1.0, 0.5]])


# Mapping slides


def test_slide_map_matches_the_planted_classes(half_map) -> None:
    """Background tiles are left out exactly; classes agree with the planted ones within `MAX_WRONG_TILES`."""
    summary, out = half_map
    _check_against_planted(out)
    assert summary.tissue_tiles == 16 and summary.grid_tiles == 24
    assert sum(summary.counts.values()) == 16


def test_slide_map_predicts_what_the_model_predicts_on_the_planted_tiles(half_map, trained_demo) -> None:
    """At the slide's own 0.5 µm/px the tiles are read back unchanged, so the map holds exactly the probabilities
    that `predict_batch` gives the rendered tiles."""
    _, out = half_map
    table = pd.read_parquet(out / PREDICTIONS_NAME)
    pixels = _pixels()
    cells = zip(table["row"], table["column"], strict=True)
    tiles = [pixels[r * 224 : (r + 1) * 224, c * 224 : (c + 1) * 224] for r, c in cells]
    expected = predict_batch(*load_classifier(trained_demo[0]), tiles)
    np.testing.assert_allclose(table[[f"prob_{c}" for c in CLASS_NAMES]].to_numpy(), expected, atol=1e-5)


def test_slide_map_outputs_parse(half_map) -> None:
    _, out = half_map
    parquet = pq.ParquetFile(out / PREDICTIONS_NAME)
    assert parquet.metadata.num_row_groups == 4  # 16 rows, written 4 at a time as they were predicted
    table = parquet.read().to_pandas()
    expected = [
        "column",
        "row",
        "x",
        "y",
        "tile_size",
        "tissue_fraction",
        "predicted",
        *(f"prob_{c}" for c in CLASS_NAMES),
    ]
    assert list(table.columns) == expected
    assert (table["x"] == table["column"] * 224).all() and (table["y"] == table["row"] * 224).all()
    assert (table["tile_size"] == 224).all() and (table["tissue_fraction"] >= tissue.DEFAULT_TISSUE_THRESHOLD).all()
    probabilities = table[[f"prob_{c}" for c in CLASS_NAMES]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert list(table["predicted"]) == [CLASS_NAMES[i] for i in probabilities.argmax(axis=1)]

    report = json.loads((out / FRACTIONS_NAME).read_text())
    assert report["tiles"] == {"grid": 24, "tissue": 16, "background": 8}
    assert report["reader"] == "openslide" and report["slide_mpp_source"] == "metadata"
    assert report["slide_mpp"] == 0.5 and report["tile_mpp"] == 0.5
    assert sum(report["class_fractions"].values()) == pytest.approx(1)
    tile_area = 16 * (224 * 0.5e-3) ** 2
    assert report["tissue_tile_area_mm2"] == pytest.approx(tile_area)
    assert report["tissue_area_mm2"] == pytest.approx(tile_area, rel=0.1)  # fat is not all tissue on the mask

    with Image.open(out / FIGURE_NAME) as figure:
        assert figure.format == "PNG" and figure.width > 1000


def test_quarter_micron_slide_maps_to_the_same_grid(
    slides: dict[str, Path], trained_demo: tuple[Path, dict], half_map, tmp_path: Path
) -> None:
    """At 0.25 µm/px, `--mpp 0.5` takes 448 px tiles from level 1: the same 4 x 6 grid and the same tissue tiles."""
    summary = map_slide(slides["quarter"], trained_demo[0], tmp_path)
    report = json.loads((tmp_path / FRACTIONS_NAME).read_text())
    assert report["reader"] == "tifffile" and report["tile_size_level0"] == 448 and report["level"] == 1
    assert report["grid"] == {"columns": 6, "rows": 4} and summary.tissue_tiles == 16
    _check_against_planted(tmp_path)
    quarter, half = _predicted_cells(tmp_path), _predicted_cells(half_map[1])
    assert sum(quarter[cell] == half[cell] for cell in PLANTED) >= 16 - MAX_WRONG_TILES


def test_native_scale_takes_224_px_of_level_0(slides: dict[str, Path], trained_demo: tuple[Path, dict], tmp_path):
    summary = map_slide(slides["quarter"], trained_demo[0], tmp_path / "quarter", mpp="native")
    report = json.loads((tmp_path / "quarter" / FRACTIONS_NAME).read_text())
    assert report["grid"] == {"columns": 12, "rows": 8} and report["tile_size_level0"] == 224
    assert report["tile_mpp"] == pytest.approx(0.25) and summary.tissue_tiles == 64
    # Without an mpp the native scale still maps, but no area can be given.
    summary = map_slide(slides["no_mpp"], trained_demo[0], tmp_path / "no_mpp", mpp="native")
    report = json.loads((tmp_path / "no_mpp" / FRACTIONS_NAME).read_text())
    assert summary.tissue_tiles == 16 and summary.tissue_area_mm2 is None
    assert report["slide_mpp"] is report["tissue_area_mm2"] is report["class_area_mm2"] is None


# Bad input


def test_not_a_slide_is_refused_with_what_to_do(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a slide\n")
    with pytest.raises(SlideError, match="neither OpenSlide nor tifffile"):
        open_slide(text)
    png = tmp_path / "tile.png"
    Image.fromarray(_pixels()[:224, :224]).save(png)
    with pytest.raises(SlideError, match=r"224x224 PNG image, not a tiled, pyramidal slide.*hmu-crc predict"):
        open_slide(png)
    striped = tmp_path / "striped.tif"
    tifffile.imwrite(striped, _pixels()[:448, :448])
    with pytest.raises(SlideError, match="448x448 TIFF image, not a tiled"):
        open_slide(striped)
    with pytest.raises(FileNotFoundError, match="no such slide"):
        open_slide(tmp_path / "missing.svs")


def test_blank_slide_is_refused(trained_demo: tuple[Path, dict], tmp_path: Path) -> None:
    blank = write_pyramid_tiff(tmp_path / "blank.tif", render_layout([[None] * 3] * 2, np.random.default_rng(0)), 0.5)
    with pytest.raises(SlideError, match="expected tissue, found none"):
        map_slide(blank, trained_demo[0], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_slide_without_mpp_needs_slide_mpp_or_native(slides: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SlideError, match=r"found none; pass .*--slide-mpp.*--mpp native"):
        map_slide(slides["no_mpp"], "unused", tmp_path)


def test_model_with_other_labels_is_refused(slides: dict[str, Path], tmp_path: Path) -> None:
    _, folder = save_untrained("resnet", tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(reversed(CLASS_NAMES))}
    config["label2id"] = {name: i for i, name in enumerate(reversed(CLASS_NAMES))}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match the tissue classes"):
        map_slide(slides["half"], folder, tmp_path / "out")


def test_bad_arguments_are_refused(slides: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tissue threshold: expected a fraction in \(0, 1\], found 1.5"):
        map_slide(slides["half"], "unused", tmp_path, tissue_threshold=1.5)
    with pytest.raises(ValueError, match="mpp: expected a positive number"):
        map_slide(slides["half"], "unused", tmp_path, mpp=0)


# The command line


def test_cli_maps_a_slide_given_its_mpp(
    slides: dict[str, Path],
    trained_demo: tuple[Path, dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Without --output-dir the maps go to `<slide stem>_map` in the working folder."""
    monkeypatch.chdir(tmp_path)
    argv = ["slide-map", "--model", str(trained_demo[0]), str(slides["no_mpp"]), "--slide-mpp", "0.5"]
    assert main([*argv, "--batch-size", "8", "--num-workers", "1"]) == 0
    assert "Classified 16 tissue tile(s) of 24" in capsys.readouterr().out
    out = tmp_path / "no_mpp_map"
    assert json.loads((out / FRACTIONS_NAME).read_text())["slide_mpp_source"] == "--slide-mpp"
    _check_against_planted(out)


def test_cli_reports_bad_input_and_returns_2(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a slide\n")
    assert main(["slide-map", "--model", "unused", str(text), "--output-dir", str(tmp_path / "out")]) == 2
    with pytest.raises(SystemExit):
        main(["slide-map", "--model", "unused", str(text), "--mpp", "twenty"])


def test_sample_slide_verb_writes_a_slide_whose_map_finds_its_regions(
    trained_demo: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`hmu-crc sample-slide` writes a slide at 0.5 µm/px and its planted layout; a map of it classifies exactly
    the planted tissue tiles, and mostly as planted. It refuses to overwrite."""
    path = tmp_path / "slides" / "sample.tif"
    argv = ["sample-slide", "--output", str(path), "--rows", "6", "--columns", "8", "--seed", "3"]
    assert main(argv) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    record = json.loads((tmp_path / "slides" / "sample_layout.json").read_text())
    planted = {(r, c): code for r, row in enumerate(record["layout"]) for c, code in enumerate(row) if code}
    assert record["synthetic"] and record["glass_tiles"] == 48 - len(planted) > 0
    assert sum(record["tile_counts"].values()) == len(planted)
    assert len(set(planted.values())) > 1, "the regions should hold more than one class"
    with open_slide(path) as slide:
        assert slide.dimensions == (8 * TILE_SIZE, 6 * TILE_SIZE) and slide.mpp == pytest.approx(0.5)

    map_slide(path, trained_demo[0], tmp_path / "map", batch_size=16)
    predicted = _predicted_cells(tmp_path / "map")
    assert set(predicted) == set(planted)
    right = sum(predicted[cell] == code for cell, code in planted.items())
    assert right >= 0.75 * len(planted), f"{right} of {len(planted)} tiles mapped to their planted class"
    assert main(argv) == 2  # the slide exists now


def test_region_layout_refuses_a_tiny_grid() -> None:
    with pytest.raises(ValueError, match="expected at least 2 x 2 tiles and 1 region, found 1 x 5"):
        region_layout(1, 5, np.random.default_rng(0))
