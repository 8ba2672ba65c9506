"""The data path: decoding, geometric augmentation, collation and on-device normalisation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessor

from hmu_crc.transforms import PixelPreprocessor, TileCollator, decode_tile, geometric_augment, hed_jitter


def tile_bytes(release: Path, class_name: str = "TUM") -> bytes:
    return sorted((release / class_name).iterdir())[0].read_bytes()


def test_decode_matches_pillow_for_png_and_tiff(sample_release: Path) -> None:
    data = tile_bytes(sample_release)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decode_tile(data), expected)
    tiff = sorted((sample_release / "CRC-VAL-HE-7K" / "ADI").iterdir())[0].read_bytes()
    np.testing.assert_array_equal(decode_tile(tiff), np.asarray(Image.open(io.BytesIO(tiff)).convert("RGB")))


def test_geometric_augment_draws_all_eight_symmetries_and_keeps_pixels() -> None:
    pixels = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    symmetries = {np.rot90(flipped, k).tobytes() for flipped in (pixels, pixels[:, ::-1]) for k in range(4)}
    torch.manual_seed(0)
    seen = {np.ascontiguousarray(geometric_augment(pixels)).tobytes() for _ in range(200)}
    assert seen == symmetries


def test_collator_gives_uint8_batches(sample_release: Path) -> None:
    examples = [
        {"image": {"bytes": tile_bytes(sample_release, c), "path": None}, "label": i}
        for i, c in enumerate(["ADI", "LYM", "TUM"])
    ]
    batch = TileCollator(augment=True)(examples)
    assert batch["pixel_values"].shape == (3, 3, 224, 224)
    assert batch["pixel_values"].dtype == torch.uint8
    assert batch["labels"].tolist() == [0, 1, 2]
    plain = TileCollator(augment=False)(examples)["pixel_values"][0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(plain, decode_tile(examples[0]["image"]["bytes"]))


@pytest.mark.parametrize("size", [224, 112])
def test_preprocessor_matches_the_image_processor(sample_release: Path, size: int) -> None:
    processor = ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
    )
    image = Image.open(io.BytesIO(tile_bytes(sample_release)))
    expected = processor(image, return_tensors="pt")["pixel_values"]
    pixels = torch.from_numpy(decode_tile(tile_bytes(sample_release))).permute(2, 0, 1)[None]
    ours = PixelPreprocessor([0.5, 0.4, 0.3], [0.2, 0.25, 0.3], size)(pixels, train=False)
    assert ours.shape == expected.shape
    # Same size: identical arithmetic. Downscaled: two antialiased bilinear filters, close but not equal.
    tolerance = 1e-5 if size == 224 else 0.15
    assert (ours - expected).abs().mean() < tolerance


def test_stain_jitter_only_while_training_and_zero_is_identity() -> None:
    values = torch.rand(4, 3, 16, 16) * 0.9 + 0.05
    torch.testing.assert_close(hed_jitter(values, 0.0), values, atol=1e-4, rtol=1e-4)
    jittered = hed_jitter(values, 0.1)
    assert jittered.shape == values.shape and jittered.min() >= 0 and jittered.max() <= 1
    assert (jittered - values).abs().mean() > 1e-3
    preprocess = PixelPreprocessor([0.5] * 3, [0.5] * 3, 16, stain_jitter=0.1)
    pixels = (values * 255).to(torch.uint8)
    torch.testing.assert_close(preprocess(pixels, train=False), preprocess(pixels, train=False))
    assert not torch.allclose(preprocess(pixels, train=True), preprocess(pixels, train=False))
