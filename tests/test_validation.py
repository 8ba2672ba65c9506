"""Tile checks: each kind of bad file gets its own problem, and good tiles pass."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from hmu_crc.validation import check_tile


def test_good_png_passes_both_levels(make_png: Callable[..., bytes]) -> None:
    data = make_png()
    assert check_tile(data, "ADI/a.png") is None
    assert check_tile(data, "ADI/a.png", level="decode") is None


@pytest.mark.parametrize(
    ("damage", "kind", "found"),
    [
        (lambda d: b"", "empty", "zero-byte"),
        (lambda d: d[: len(d) // 2], "truncated", "cut off"),
        (lambda d: d[:-12], "truncated", "before its IEND"),
        (lambda d: d[:100] + bytes([d[100] ^ 0xFF]) + d[101:], "corrupt", "bad CRC-32"),
        (lambda d: b"hello, this is not an image", "not_an_image", "no PNG signature"),
        (lambda d: b"\xff\xd8\xff\xe0" + d[4:], "not_an_image", "JPEG"),
    ],
    ids=["zero-byte", "truncated-mid", "no-iend", "bit-flip", "text", "jpeg"],
)
def test_damaged_png_is_named(make_png: Callable[..., bytes], damage: Callable, kind: str, found: str) -> None:
    problem = check_tile(damage(make_png()), "ADI/a.png")
    assert problem is not None
    assert problem.kind == kind
    assert found in problem.found
    message = problem.message()
    assert message.startswith("ADI/a.png: expected")
    assert "--skip-invalid" in message


@pytest.mark.parametrize(
    ("size", "mode", "kind", "found"),
    [
        ((200, 200), "RGB", "wrong_size", "200x200"),
        ((224, 224), "RGBA", "wrong_mode", "RGBA"),
        ((224, 224), "L", "wrong_mode", "grayscale"),
    ],
)
def test_wrong_size_or_mode(make_png: Callable[..., bytes], size: tuple, mode: str, kind: str, found: str) -> None:
    for level in ("checksum", "decode"):
        problem = check_tile(make_png(size, mode), "ADI/a.png", level=level)
        assert problem is not None and problem.kind == kind and found in problem.found


def test_decode_level_catches_bad_pixel_data_behind_good_checksums() -> None:
    """A PNG whose compressed stream is garbage but whose chunk CRCs were recomputed."""
    header = struct.pack(">IIBBBBB", 224, 224, 8, 2, 0, 0, 0)
    garbage = b"\x78\x9c" + np.random.default_rng(0).bytes(2000)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", garbage) + chunk(b"IEND", b"")
    assert check_tile(data, "TUM/x.png", level="checksum") is None
    problem = check_tile(data, "TUM/x.png", level="decode")
    assert problem is not None and problem.kind == "corrupt"


def test_tiff_tiles_are_decoded() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (224, 224), (200, 120, 180)).save(buffer, format="TIFF")
    good = buffer.getvalue()
    assert check_tile(good, "CRC-VAL-HE-7K/ADI/a.tif", expect="TIFF") is None
    problem = check_tile(good[: len(good) // 3], "CRC-VAL-HE-7K/ADI/a.tif", expect="TIFF")
    assert problem is not None and problem.kind == "corrupt"
    small = io.BytesIO()
    Image.new("RGB", (150, 150)).save(small, format="TIFF")
    problem = check_tile(small.getvalue(), "CRC-VAL-HE-7K/ADI/b.tif", expect="TIFF")
    assert problem is not None and problem.kind == "wrong_size"
