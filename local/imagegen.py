"""Images made on the fly for tests, benchmarks and demos: distinct pictures, re-encodings, hostile bytes.

Nothing is downloaded and nothing large is shipped: a seed makes a picture.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def picture(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A smooth random picture; different seeds give pHashes far apart."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.BICUBIC)


def encode(image: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        params.setdefault("quality", 90)
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def jpeg(picture_or_seed: int | Image.Image, quality: int = 90, size: tuple[int, int] = (128, 96),
         exif: bool = False) -> bytes:
    """A JPEG of ``picture(seed, size)``, or of a given image; ``exif`` adds a camera's EXIF block."""
    image = picture(picture_or_seed, size) if isinstance(picture_or_seed, int) else picture_or_seed
    params: dict[str, object] = {"quality": quality}
    if exif:
        tags = Image.Exif()
        tags[0x010F] = "ringserve-bench camera"  # Make
        tags[0x0131] = "ringserve fidelity study"  # Software
        params["exif"] = tags.tobytes()
    return encode(image, "JPEG", **params)


def claiming(data: bytes, width: int, height: int) -> bytes:
    """An AVIF or HEIC whose header (its ``ispe`` box) claims ``width`` x ``height``; the pixels are unchanged."""
    at = data.index(b"ispe")
    return data[: at + 8] + struct.pack(">II", width, height) + data[at + 16 :]


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming enormous dimensions, with a tiny body: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
