"""Checks of one tile's bytes: format, size, colour mode, and integrity, without decoding unless asked."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Literal

import xxhash
from PIL import Image

from hmu_crc.problems import Problem
from hmu_crc.release import Entry

TILE_SIZE = 224
"""Tiles are square, this many pixels a side, at 20x (about 0.5 um per pixel)."""

ValidationLevel = Literal["checksum", "decode"]
"""`checksum`: PNG structure, header and every chunk's CRC-32 (catches truncation, bit rot, wrong size or mode,
non-images) at about 1/30 of a decode's cost; `decode`: also decode every pixel with Pillow."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {0: "L (grayscale)", 2: "RGB", 3: "P (palette)", 4: "LA (grayscale + alpha)", 6: "RGBA"}
_MAGIC = {
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"RIFF": "RIFF/WebP",
}
_FIX_TILE = "re-export the tile from its slide, or pass --skip-invalid to leave it out and list it in the report"


def check_entry(job: tuple[str, str, str | None, ValidationLevel, str]) -> tuple[Problem | None, str]:
    """Read and check one release entry in a worker process.

    Args:
        job: The entry's name, disk path and archive member, the validation level and the expected format.

    Returns:
        The problem found (None for a good tile) and the xxh3-128 digest of the bytes, for duplicate detection.
    """
    name, disk_path, member, level, expect = job
    try:
        data = Entry(name, disk_path, member).read()
    except (OSError, KeyError, ValueError) as error:
        fix = "check the file's permissions and the archive's integrity, then run again"
        return Problem("unreadable", name, f"a read error ({error})", "a readable file", fix), ""
    return check_tile(data, name, level=level, expect=expect), xxhash.xxh3_128_hexdigest(data)


def check_tile(data: bytes, where: str, *, level: ValidationLevel = "checksum", expect: str = "PNG") -> Problem | None:
    """Check that `data` is a 224x224 RGB tile of the expected format.

    Args:
        data: The file's bytes.
        where: The tile's path inside the release, for the message.
        level: How deep to look; TIFF tiles are always decoded.
        expect: `PNG` for the HMU release, `TIFF` for Kather's sets.

    Returns:
        The problem found, or None for a good tile.
    """
    if not data:
        return _problem("empty", where, "a zero-byte file", f"a {expect} tile")
    if expect == "PNG" and data.startswith(_PNG_SIGNATURE):
        problem = _check_png_structure(data, where)
        if problem is not None or level == "checksum":
            return problem
    elif expect == "PNG" or not data.startswith((b"II*\x00", b"MM\x00*")):
        kind = next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)
        found = f"a {kind} file" if kind else f"no {expect} signature (first bytes {data[:8]!r})"
        return _problem("not_an_image", where, found, f"a {expect} tile")
    return _check_decoded(data, where)


def _check_png_structure(data: bytes, where: str) -> Problem | None:
    pos, seen_idat, header = len(_PNG_SIGNATURE), False, None
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return _problem("truncated", where, f"a {kind!r} chunk cut off at byte {len(data)}", "a complete PNG")
        body = data[pos + 8 : end - 4]
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(kind + body) != crc:
            return _problem("corrupt", where, f"a bad CRC-32 in the {kind!r} chunk at byte {pos}", "intact chunks")
        if header is None:
            if kind != b"IHDR" or length != 13:
                return _problem("corrupt", where, "no IHDR chunk first", "a PNG header")
            header = struct.unpack(">IIBB", body[:10])
            problem = _check_header(where, *header)
            if problem is not None:
                return problem
        seen_idat |= kind == b"IDAT"
        if kind == b"IEND":
            if not seen_idat:
                return _problem("corrupt", where, "no image data (IDAT) chunk", "pixel data")
            return None
        pos = end
    return _problem("truncated", where, f"the file ending at byte {len(data)} before its IEND chunk", "a complete PNG")


def _check_header(where: str, width: int, height: int, depth: int, colour: int) -> Problem | None:
    if (width, height) != (TILE_SIZE, TILE_SIZE):
        return _problem("wrong_size", where, f"{width}x{height}", f"{TILE_SIZE}x{TILE_SIZE}")
    if colour != 2 or depth != 8:
        mode = _PNG_MODES.get(colour, f"colour type {colour}")
        return _problem("wrong_mode", where, f"{mode} at {depth} bits", "8-bit RGB")
    return None


def _check_decoded(data: bytes, where: str) -> Problem | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            size, mode = image.size, image.mode
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        return _problem("corrupt", where, f"undecodable data ({error})", "an image that decodes")
    if size != (TILE_SIZE, TILE_SIZE):
        return _problem("wrong_size", where, f"{size[0]}x{size[1]}", f"{TILE_SIZE}x{TILE_SIZE}")
    if mode != "RGB":
        return _problem("wrong_mode", where, mode, "RGB")
    return None


def _problem(kind: str, where: str, found: str, expected: str) -> Problem:
    return Problem(kind=kind, where=where, found=found, expected=expected, fix=_FIX_TILE)  # type: ignore[arg-type]
