"""A small, procedurally drawn, release-shaped SYNTHETIC sample for demos and tests."""

from __future__ import annotations

import csv
import logging
import math
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from hmu_crc.labels import CLASS_NAMES, KATHER_BACKGROUND

logger = logging.getLogger(__name__)

TILE_SIZE = 224
"""Side of every tile, in pixels."""

CLINICAL_CSV_NAME = "HMU CRC Clinical.csv"
"""The clinical spreadsheet's file name at the root of the sample."""

CLINICAL_HEADERS: tuple[str, ...] = (
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
)
"""Human-style column names, deliberately not the package's canonical ones."""

KATHER_SET_NAMES: tuple[str, ...] = ("CRC-VAL-HE-7K", "NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM")
"""Kather-shaped external sets written with `kather=True`."""

TREATMENTS: tuple[str, ...] = (
    "Surgery",
    "Surgery + adjuvant chemotherapy",
    "Neoadjuvant chemoradiotherapy + surgery",
)
"""Values of the `Treatment History` column."""

NOTICE_NAME = "SYNTHETIC_SAMPLE.md"
"""The note at the sample's root that says it is synthetic."""

_NOTICE = """\
# Synthetic sample

Every tile and every clinical row in this folder was generated procedurally by `hmu_crc.sample`;
none of it comes from a patient, a slide or a hospital record.
It only has the shape of the HMU-CRC-Hist550K release, so any metric computed on it says nothing about real tissue.
"""

# Optical density of one unit of each stain in R, G, B (Beer-Lambert): haematoxylin absorbs red and green
# and looks purple-blue, eosin absorbs mostly green and looks pink.
_HAEMATOXYLIN = np.array([0.60, 0.75, 0.28], dtype=np.float32)
_EOSIN = np.array([0.10, 0.85, 0.40], dtype=np.float32)
_GLASS_OD = 0.02

# NOTE: the un-normalised NCT twin gets its own stain cast, as a per-channel scale of the optical density.
_NONORM_CAST = np.array([1.25, 0.95, 0.70], dtype=np.float32)

_LETTERS = np.array(list(string.ascii_uppercase))

_ROWS, _COLS = np.mgrid[0:TILE_SIZE, 0:TILE_SIZE].astype(np.float32)

Density = tuple[np.ndarray, np.ndarray]
"""Haematoxylin and eosin density maps, each (TILE_SIZE, TILE_SIZE) float32."""


@dataclass(frozen=True)
class SampleSummary:
    """What `write_sample` wrote."""

    output_dir: Path
    num_tiles: int
    """HMU-shaped tiles written."""
    num_patients: int
    tiles_per_class: dict[str, int]
    kather_tiles: dict[str, int]
    """Set name to tiles written, BACK included; empty without `kather=True`."""


# --- drawing primitives ---------------------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, cells: int, blur: float = 0.0) -> np.ndarray:
    """Smooth noise in [0, 1] with features about `TILE_SIZE / cells` pixels wide.

    `blur` (in cells) smooths the coarse grid first, which hides the grid's axis-aligned creases.
    """
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    if blur:
        grid = ndimage.gaussian_filter(grid, blur, mode="wrap")
        grid = (grid - grid.min()) / (grid.max() - grid.min())
    return _upsample(grid)


def _upsample(grid: np.ndarray) -> np.ndarray:
    """Interpolate a square (cells + 1)-point grid spanning the tile up to full size, with smoothstep weights."""
    cells = grid.shape[0] - 1
    pos = np.linspace(0, cells, TILE_SIZE, endpoint=False, dtype=np.float32)
    i = pos.astype(np.intp)
    f = pos - i
    f = f * f * (3 - 2 * f)
    # Separable: along the columns on the coarse rows first, then along the rows.
    coarse = grid[:, i] * (1 - f) + grid[:, i + 1] * f
    return coarse[i] * (1 - f[:, None]) + coarse[i + 1] * f[:, None]


def _ellipses(
    centres: np.ndarray,
    radii: np.ndarray,
    angles: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Sum of soft-edged filled ellipses, stamped all at once.

    Args:
        centres: (n, 2) row and column of each centre.
        radii: (n, 2) semi-axis along and across each ellipse's angle.
        angles: (n,) angle of each major axis, radians from the column axis.
        weights: (n,) density inside each ellipse.

    Returns:
        A (TILE_SIZE, TILE_SIZE) float32 density map.
    """
    out = np.zeros(TILE_SIZE * TILE_SIZE, dtype=np.float32)
    if len(centres) == 0:
        return out.reshape(TILE_SIZE, TILE_SIZE)
    half = math.ceil(float(radii.max())) + 1
    offsets = np.arange(-half, half + 1)
    base = np.round(centres).astype(np.intp)
    sub = (centres - base).astype(np.float32)
    steps = offsets.astype(np.float32)
    dy = steps[None, :, None] - sub[:, 0, None, None]
    dx = steps[None, None, :] - sub[:, 1, None, None]
    cos = np.cos(angles).astype(np.float32)[:, None, None]
    sin = np.sin(angles).astype(np.float32)[:, None, None]
    along = (dx * cos + dy * sin) / radii[:, 0, None, None]
    across = (dy * cos - dx * sin) / radii[:, 1, None, None]
    # Depth inside the edge, in pixels across the minor axis, gives a one-pixel soft rim.
    depth = (1 - np.sqrt(along * along + across * across)) * radii[:, 1, None, None]
    values = np.clip(depth + 0.5, 0, 1) * weights[:, None, None]
    rows = base[:, 0, None, None] + offsets[None, :, None]
    cols = base[:, 1, None, None] + offsets[None, None, :]
    keep = (values > 0) & (rows >= 0) & (rows < TILE_SIZE) & (cols >= 0) & (cols < TILE_SIZE)
    flat = (rows * TILE_SIZE + cols)[keep]
    out += np.bincount(flat, weights=values[keep], minlength=TILE_SIZE * TILE_SIZE).astype(np.float32)
    return out.reshape(TILE_SIZE, TILE_SIZE)


def _nuclei(
    rng: np.random.Generator,
    count: int,
    size: tuple[float, float],
    elongation: tuple[float, float],
    weight: tuple[float, float],
    angle: float | None = None,
    spread: float = 0.0,
) -> np.ndarray:
    """Randomly placed nuclei; `angle=None` turns each one at random, else `angle` plus or minus `spread`."""
    centres = rng.uniform(-4, TILE_SIZE + 4, size=(count, 2))
    minor = rng.uniform(*size, size=count)
    radii = np.stack([minor * rng.uniform(*elongation, size=count), minor], axis=1).astype(np.float32)
    if angle is None:
        angle, spread = np.pi / 2, np.pi / 2
    angles = angle + rng.uniform(-spread, spread, size=count)
    return _ellipses(centres, radii, angles, rng.uniform(*weight, size=count).astype(np.float32))


def _fibres(rng: np.random.Generator, angle: float, period: float, waviness: float) -> np.ndarray:
    """Parallel fibres in [0, 1] running along `angle`, bent by smooth noise of amplitude `waviness` radians."""
    across = _ROWS * np.cos(angle) - _COLS * np.sin(angle)
    bend = waviness * 2 * np.pi * _value_noise(rng, 3)
    wave = 0.5 + 0.5 * np.sin(across * (2 * np.pi / period) + bend + rng.uniform(0, 2 * np.pi))
    return wave * wave * wave


def _pale_background(rng: np.random.Generator, level: float) -> np.ndarray:
    """Patchy low eosin density around `level`."""
    return level * (0.6 + 0.8 * _value_noise(rng, 4))


# --- one painter per class: each returns haematoxylin and eosin densities -------------------------------------


def _paint_adi(rng: np.random.Generator) -> Density:
    """Large polygonal empty fat cells with thin pink membranes and rare flat nuclei."""
    # Seeds on a jittered grid keep the cells similar in size, as fat cells are.
    per_side = int(rng.integers(3, 5))
    step = TILE_SIZE / per_side
    grid = (np.arange(per_side + 2, dtype=np.float32) - 0.5) * step
    seeds = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    seeds += rng.uniform(-0.3, 0.3, size=seeds.shape).astype(np.float32) * step
    # Distances to the nearest and second-nearest seed, on every other pixel to save time.
    half = TILE_SIZE // 2 + 1
    rows, cols = 2 * _ROWS[:half, :half], 2 * _COLS[:half, :half]
    nearest = np.full(rows.shape, np.inf, dtype=np.float32)
    second = nearest.copy()
    for row, col in seeds:
        dist = np.hypot(rows - row, cols - col)
        second = np.minimum(second, np.maximum(nearest, dist))
        nearest = np.minimum(nearest, dist)
    membrane = np.clip(1.5 - _upsample(second - nearest) / 2.0, 0, 1)
    eosin = 0.45 * membrane * (0.7 + 0.6 * _value_noise(rng, 8)) + 0.02
    on_membrane = np.flatnonzero(membrane.ravel() > 0.9)
    picks = rng.choice(on_membrane, size=min(int(rng.integers(1, 5)), on_membrane.size), replace=False)
    centres = np.stack(np.divmod(picks, TILE_SIZE), axis=1).astype(np.float32)
    radii = np.tile(np.array([[6.0, 1.8]], dtype=np.float32), (len(picks), 1))
    angles = rng.uniform(0, np.pi, size=len(picks))
    return _ellipses(centres, radii, angles, np.full(len(picks), 1.2, dtype=np.float32)), eosin


def _paint_deb(rng: np.random.Generator) -> Density:
    """Scattered pink and purple fragments on a pale, patchy background."""
    clumps = np.clip(_value_noise(rng, 5) - 0.45, 0, None) * 1.2
    eosin = _pale_background(rng, 0.12) + clumps
    eosin += _nuclei(rng, int(rng.integers(60, 120)), (1.5, 5.0), (1.0, 2.5), (0.3, 0.7))
    dust = _nuclei(rng, int(rng.integers(120, 260)), (0.8, 2.2), (1.0, 1.8), (0.9, 1.8))
    return dust + 0.1 * clumps, eosin


def _paint_lym(rng: np.random.Generator) -> Density:
    """Sheets of small, dark, round lymphocyte nuclei with little cytoplasm between them."""
    dense = _nuclei(rng, int(rng.integers(380, 560)), (3.0, 4.3), (1.0, 1.2), (1.4, 2.0))
    haematoxylin = np.minimum(dense, 2.2) + 0.12
    return haematoxylin, _pale_background(rng, 0.2)


def _paint_muc(rng: np.random.Generator) -> Density:
    """Pale bluish-pink pools crossed by thin wispy strands, with a few floating cells."""
    ridges = (1 - np.abs(2 * _value_noise(rng, 24, blur=2.5) - 1)) ** 12
    tint = _value_noise(rng, 2)
    haematoxylin = 0.12 + 0.35 * ridges * tint + 0.04 * _value_noise(rng, 4)
    haematoxylin += _nuclei(rng, int(rng.integers(0, 5)), (2.5, 4.0), (1.0, 1.5), (0.8, 1.2))
    eosin = _pale_background(rng, 0.08) + 0.35 * ridges * (1 - tint)
    return haematoxylin, eosin


def _paint_mus(rng: np.random.Generator) -> Density:
    """Dense pink fibres with cigar-shaped nuclei, all running one way across the tile."""
    angle = float(rng.uniform(0, np.pi))
    eosin = 0.45 + 0.35 * _fibres(rng, angle, period=rng.uniform(6, 10), waviness=0.4)
    nuclei = _nuclei(rng, int(rng.integers(25, 50)), (1.8, 2.6), (3.5, 5.5), (1.0, 1.5), angle, 0.12)
    return nuclei + 0.05, eosin


def _paint_norm(rng: np.random.Generator) -> Density:
    """Crypts seen end-on: rings of regular basal nuclei around pale lumens, in a cellular lamina propria."""
    haematoxylin = _nuclei(rng, int(rng.integers(40, 90)), (2.3, 3.2), (1.0, 1.3), (1.0, 1.5)) + 0.05
    eosin = _pale_background(rng, 0.3)
    rows, cols = np.divmod(rng.permutation(4)[: int(rng.integers(2, 5))], 2)
    centres = np.stack([rows, cols], axis=1) * 112 + 56 + rng.uniform(-18, 18, size=(len(rows), 2))
    for row, col in centres:
        haematoxylin, eosin = _add_crypt(rng, haematoxylin, eosin, float(row), float(col))
    return haematoxylin, eosin


def _add_crypt(
    rng: np.random.Generator,
    haematoxylin: np.ndarray,
    eosin: np.ndarray,
    row: float,
    col: float,
) -> Density:
    """One round crypt centred at (row, col): lumen, a ring of epithelium, nuclei along its base."""
    radius = float(rng.uniform(30, 44))
    dist = np.hypot(_ROWS - row, _COLS - col) / radius
    ring = np.clip((1 - dist) * radius, 0, 1)
    lumen = np.clip((0.45 - dist) * radius, 0, 1)
    eosin = eosin * (1 - ring) + 0.35 * (ring - lumen) + 0.03 * lumen
    haematoxylin = haematoxylin * (1 - ring)
    count = int(2 * np.pi * radius * 0.85 / 6.5)
    turns = np.linspace(0, 2 * np.pi, count, endpoint=False) + rng.uniform(0, 2 * np.pi)
    centres = np.stack([row + 0.85 * radius * np.sin(turns), col + 0.85 * radius * np.cos(turns)], axis=1)
    radii = np.tile(np.array([[4.5, 2.2]], dtype=np.float32), (count, 1))
    nuclei = _ellipses(centres, radii, turns, rng.uniform(1.2, 1.5, size=count).astype(np.float32))
    return haematoxylin + nuclei, eosin


def _paint_str(rng: np.random.Generator) -> Density:
    """Pale pink wavy collagen fibres with sparse spindle nuclei."""
    angle = float(rng.uniform(0, np.pi))
    eosin = 0.12 + 0.3 * _fibres(rng, angle, period=rng.uniform(9, 14), waviness=1.5) * _value_noise(rng, 5)
    nuclei = _nuclei(rng, int(rng.integers(6, 16)), (1.3, 2.0), (3.5, 6.0), (0.9, 1.3), angle, 0.5)
    return nuclei + 0.03, eosin


def _paint_tum(rng: np.random.Generator) -> Density:
    """Crowded, large, irregular, dark nuclei in disorganised glands with ragged lumens."""
    lumen = np.clip((_value_noise(rng, 16, blur=1.5) - 0.7) * 12, 0, 1)
    nuclei = _nuclei(rng, int(rng.integers(150, 230)), (4.0, 7.0), (1.1, 1.8), (1.0, 1.8))
    haematoxylin = (np.minimum(nuclei, 2.4) + 0.25) * (1 - lumen)
    eosin = (0.4 + 0.2 * _value_noise(rng, 10)) * (1 - lumen) + 0.05
    return haematoxylin, eosin


def _paint_back(rng: np.random.Generator) -> Density:
    """Almost empty glass: a faint, nearly uniform tint."""
    haze = 0.015 * _value_noise(rng, 2)
    return haze, haze + rng.uniform(0.0, 0.03)


_PAINTERS: dict[str, Callable[[np.random.Generator], Density]] = {
    "ADI": _paint_adi,
    "DEB": _paint_deb,
    "LYM": _paint_lym,
    "MUC": _paint_muc,
    "MUS": _paint_mus,
    "NORM": _paint_norm,
    "STR": _paint_str,
    "TUM": _paint_tum,
    KATHER_BACKGROUND: _paint_back,
}


def render_tile(class_name: str, rng: np.random.Generator) -> np.ndarray:
    """Draw one synthetic H&E-like tile of a tissue class.

    Each tile gets its own stain strength, grain and noise, so no class is one constant colour.

    Args:
        class_name: One of `CLASS_NAMES`, or Kather's `BACK`.
        rng: Source of all randomness; the same generator state gives the same tile.

    Returns:
        A (224, 224, 3) uint8 RGB array.

    Raises:
        ValueError: If `class_name` is not a known class.
    """
    if class_name not in _PAINTERS:
        msg = f"class_name: expected one of {', '.join(_PAINTERS)}, found {class_name!r}"
        raise ValueError(msg)
    haematoxylin, eosin = _PAINTERS[class_name](rng)
    grain = 0.85 + 0.3 * _value_noise(rng, 48)
    # Per-tile stain strength and a slight hue shift of each stain, as between slides and staining batches.
    strength = rng.uniform(0.75, 1.25, size=(2, 1)).astype(np.float32)
    hue = rng.uniform(-0.05, 0.05, size=(2, 3)).astype(np.float32)
    stains = (np.stack([_HAEMATOXYLIN, _EOSIN]) + hue) * strength
    optical = np.stack([haematoxylin * grain, eosin * grain], axis=-1) @ stains + _GLASS_OD
    # Uniform sensor noise of +-3.5 grey levels (standard deviation 2), cheap to draw and kind to PNG sizes;
    # its offset also carries the 0.5 that makes the cast to uint8 round to nearest.
    noise = np.frombuffer(rng.bytes(optical.size), dtype=np.uint8).reshape(optical.shape)
    light = 255 * np.exp(-optical) + (noise * np.float32(7 / 255) - np.float32(3.5 - 0.5))
    return np.clip(light, 0, 255).astype(np.uint8)


def _recast(tile: np.ndarray, cast: np.ndarray) -> np.ndarray:
    """Scale a tile's optical density per channel: a different stain cast on the same tissue."""
    optical = -np.log((tile.astype(np.float32) + 1) / 256)
    return np.clip(256 * np.exp(-optical * cast) - 0.5, 0, 255).astype(np.uint8)


# --- the release layout ---------------------------------------------------------------------------------------


def _check_arguments(output_dir: Path, patients: int, tiles_per_class: int, kather_tiles_per_class: int) -> None:
    if patients < 2:
        msg = f"patients: expected at least 2, found {patients}; patient-grouped splits need two patients"
        raise ValueError(msg)
    if tiles_per_class < 1:
        msg = f"tiles_per_class: expected at least 1, found {tiles_per_class}"
        raise ValueError(msg)
    if patients > tiles_per_class * len(CLASS_NAMES):
        msg = (
            f"patients: expected at most {tiles_per_class * len(CLASS_NAMES)} (one tile each), found {patients}; "
            "raise tiles_per_class or lower patients"
        )
        raise ValueError(msg)
    if kather_tiles_per_class < 1:
        msg = f"kather_tiles_per_class: expected at least 1, found {kather_tiles_per_class}"
        raise ValueError(msg)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        msg = f"output_dir {output_dir}: expected a missing or empty folder, found existing content; pick a new path"
        raise ValueError(msg)


def _allocate(rng: np.random.Generator, patients: int, tiles_per_class: int) -> np.ndarray:
    """Tiles per (patient, class): uneven class mixes, every class full, every patient at least one tile."""
    counts = np.zeros((patients, len(CLASS_NAMES)), dtype=np.int64)
    # One slot per patient first, taken from a shuffled list of all the sample's slots.
    slots = rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), tiles_per_class))[:patients]
    np.add.at(counts, (np.arange(patients), slots), 1)
    for label in range(len(CLASS_NAMES)):
        share = rng.dirichlet(np.full(patients, 0.6))
        counts[:, label] += rng.multinomial(tiles_per_class - counts[:, label].sum(), share)
    return counts


def _write_tiles(root: Path, rng: np.random.Generator, counts: np.ndarray, patient_ids: list[str]) -> None:
    for class_name in CLASS_NAMES:
        (root / class_name).mkdir()
    for row, patient_id in enumerate(patient_ids):
        index = 0
        for label, class_name in enumerate(CLASS_NAMES):
            for _ in range(counts[row, label]):
                path = root / class_name / f"{patient_id}_{class_name}_{index:05d}.png"
                Image.fromarray(render_tile(class_name, rng)).save(path, format="PNG", compress_level=6)
                index += 1


def _tnm_stage(t: str, n: str, m: str) -> str:
    """A simplified AJCC 8th-edition colorectal stage group from T, N and M."""
    if m != "M0":
        return "IVA"
    if n == "N0":
        return {"T1": "I", "T2": "I", "T3": "IIA", "T4a": "IIB", "T4b": "IIC"}[t]
    if t == "T4b" or (t == "T4a" and n == "N2a") or (t in ("T3", "T4a") and n == "N2b"):
        return "IIIC"
    if (t in ("T1", "T2") and n.startswith("N1")) or (t == "T1" and n == "N2a"):
        return "IIIA"
    return "IIIB"


# Median survival in months by stage group: the later the stage, the shorter, so analyses have a signal.
_MEDIAN_SURVIVAL = {"I": 240, "IIA": 170, "IIB": 120, "IIC": 100, "IIIA": 140, "IIIB": 90, "IIIC": 50, "IVA": 20}


def _treatment(rng: np.random.Generator, stage: str, location: str) -> str:
    if stage == "I":
        weights = (0.85, 0.15, 0.0)
    elif location == "Rectum":
        weights = (0.1, 0.3, 0.6)
    elif stage == "IIA":
        weights = (0.6, 0.4, 0.0)
    else:
        weights = (0.2, 0.8, 0.0)
    return TREATMENTS[rng.choice(len(TREATMENTS), p=weights)]


def _clinical_row(rng: np.random.Generator, patient_id: str) -> list[str]:
    t = str(rng.choice(["T1", "T2", "T3", "T4a", "T4b"], p=[0.06, 0.14, 0.5, 0.2, 0.1]))
    n = str(rng.choice(["N0", "N1a", "N1b", "N2a", "N2b"], p=[0.5, 0.12, 0.13, 0.13, 0.12]))
    m = str(rng.choice(["M0", "M1a"], p=[0.85, 0.15]))
    stage = _tnm_stage(t, n, m)
    location = str(rng.choice(["Colon", "Rectum"], p=[0.6, 0.4]))
    event = rng.exponential(_MEDIAN_SURVIVAL[stage] / math.log(2))
    follow_up = rng.uniform(24, 120)
    months = min(max(min(event, follow_up), 1.0), 120.0)
    return [
        patient_id,
        str(rng.choice(["Male", "Female"], p=[0.56, 0.44])),
        str(int(np.clip(round(rng.normal(61, 11)), 30, 85))),
        t,
        n,
        m,
        stage,
        _treatment(rng, stage, location),
        f"{months:.1f}",
        "1" if event <= follow_up else "0",
        location,
    ]


def _write_clinical(path: Path, rng: np.random.Generator, patient_ids: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CLINICAL_HEADERS)
        writer.writerows(_clinical_row(rng, patient_id) for patient_id in patient_ids)


def _kather_name(rng: np.random.Generator, set_name: str, class_name: str, taken: set[str]) -> str:
    prefix = f"{class_name}-TCGA-" if set_name == "CRC-VAL-HE-7K" else f"{class_name}-"
    while True:
        letters = "".join(rng.choice(_LETTERS, size=8))
        name = f"{prefix}{letters}.tif"
        if name not in taken:
            taken.add(name)
            return name


def _write_kather(root: Path, rng: np.random.Generator, tiles_per_class: int) -> dict[str, int]:
    written = {}
    for set_name in KATHER_SET_NAMES:
        taken: set[str] = set()
        for class_name in (*CLASS_NAMES, KATHER_BACKGROUND):
            folder = root / set_name / class_name
            folder.mkdir(parents=True)
            for _ in range(tiles_per_class):
                tile = render_tile(class_name, rng)
                if set_name.endswith("NONORM"):
                    tile = _recast(tile, _NONORM_CAST * rng.uniform(0.92, 1.08, size=3).astype(np.float32))
                path = folder / _kather_name(rng, set_name, class_name, taken)
                Image.fromarray(tile).save(path, format="TIFF")
        written[set_name] = tiles_per_class * (len(CLASS_NAMES) + 1)
    return written


def write_sample(
    output_dir: str | Path,
    *,
    patients: int = 12,
    tiles_per_class: int = 24,
    seed: int = 0,
    kather: bool = False,
    kather_tiles_per_class: int = 4,
) -> SampleSummary:
    """Write a synthetic, release-shaped sample: class folders of PNG tiles and a clinical CSV.

    Tile names are `{patient_id}_{CLASS}_{index:05d}.png` with patient ids `P0001`, `P0002`, ...; each class
    gets `tiles_per_class` tiles spread unevenly over the patients. The same seed writes byte-identical files.

    Args:
        output_dir: Folder to create; it must be missing or empty.
        patients: Number of patients, at least 2.
        tiles_per_class: Tiles per class in the whole sample, at least 1.
        seed: Seed for every random draw.
        kather: Also write Kather-shaped external sets (nine folders of `.tif` tiles, BACK included).
        kather_tiles_per_class: Tiles per class and per Kather set.

    Returns:
        Counts of what was written.

    Raises:
        ValueError: If an argument is out of range or `output_dir` is not empty.
    """
    root = Path(output_dir)
    _check_arguments(root, patients, tiles_per_class, kather_tiles_per_class)
    # Separate streams, so that asking for the Kather sets leaves the HMU tiles and clinical rows unchanged.
    alloc_rng, clinical_rng, tile_rng, kather_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(4)
    )
    root.mkdir(parents=True, exist_ok=True)
    patient_ids = [f"P{i:04d}" for i in range(1, patients + 1)]
    counts = _allocate(alloc_rng, patients, tiles_per_class)
    _write_tiles(root, tile_rng, counts, patient_ids)
    _write_clinical(root / CLINICAL_CSV_NAME, clinical_rng, patient_ids)
    kather_tiles = _write_kather(root, kather_rng, kather_tiles_per_class) if kather else {}
    (root / NOTICE_NAME).write_text(_NOTICE, encoding="utf-8")
    summary = SampleSummary(
        output_dir=root,
        num_tiles=int(counts.sum()),
        num_patients=patients,
        tiles_per_class=dict(zip(CLASS_NAMES, (int(c) for c in counts.sum(axis=0)), strict=True)),
        kather_tiles=kather_tiles,
    )
    logger.info(
        "Wrote a synthetic sample to %s: %d tiles from %d patients, %d Kather tiles",
        root,
        summary.num_tiles,
        patients,
        sum(kather_tiles.values()),
    )
    return summary
