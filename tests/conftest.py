"""Shared fixtures: one synthetic release per test session, copied where a test needs to damage it."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hmu_crc.sample import write_sample


@pytest.fixture(scope="session")
def sample_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic release with Kather-shaped sets: 12 patients, 24 tiles per class."""
    root = tmp_path_factory.mktemp("sample") / "raw"
    write_sample(root, patients=12, tiles_per_class=24, seed=0, kather=True, kather_tiles_per_class=2)
    return root


@pytest.fixture
def release_copy(sample_release: Path, tmp_path: Path) -> Path:
    """A private copy of the sample release that a test may change."""
    return Path(shutil.copytree(sample_release, tmp_path / "raw"))


def png_bytes(size: tuple[int, int] = (224, 224), mode: str = "RGB", seed: int = 0) -> bytes:
    """A small random PNG, for tests that need a tile of a given size or mode."""
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_png() -> Callable[..., bytes]:
    return png_bytes


@pytest.fixture(scope="session")
def prepared_sample(sample_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample release prepared with `hmu-crc prepare`, as `load_dataset` and train_hf.py read it."""
    from hmu_crc.cli import main

    out = tmp_path_factory.mktemp("prepared") / "hmu_crc_hist550k"
    assert main(["prepare", "--data-dir", str(sample_release), "--output-dir", str(out), "--num-proc", "2"]) == 0
    return out


@pytest.fixture(scope="session")
def trained_demo(prepared_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo config trained on the prepared sample (about half a minute): its output folder and results."""
    import train_hf

    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("demo") / "model"
    overrides = ["--dataset", str(prepared_sample), "--output_dir", str(out), "--report_to", "none"]
    results = train_hf.main(["--config", str(root / "configs" / "demo.yaml"), *overrides])
    return out, results
