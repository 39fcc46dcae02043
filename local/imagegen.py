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


def alpha_shape(shape: str, under: tuple[int, int, int] = (255, 255, 255), size: tuple[int, int] = (128, 96)) -> Image.Image:
    """An RGBA picture that lives only in its alpha channel: every pixel's colour is ``under``.

    ``shape`` is "disc", "bar" or "ring": cut-outs and logos look like this, and dropping alpha makes them blank.
    """
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - w * 0.45, yy - h * 0.5)
    mask = {
        "disc": r < min(w, h) * 0.3,
        "bar": (abs(xx - w * 0.3) < w * 0.08) | (abs(yy - h * 0.7) < h * 0.08),
        "ring": (r > min(w, h) * 0.2) & (r < min(w, h) * 0.4) & (xx > w * 0.4),
    }[shape]
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[..., :3] = under
    rgba[..., 3] = np.where(mask, 255, 0)
    return Image.fromarray(rgba, "RGBA")


def featureless(kind: str, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A picture with almost no structure: "flat-<r>-<g>-<b>", "hgradient", "vgradient", "radial" or "scan".

    "scan" is a near-empty page: paper white with a scanner's noise and a faint speck.
    """
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind.startswith("flat-"):
        return Image.new("RGB", size, tuple(int(c) for c in kind.split("-")[1:]))
    if kind == "scan":
        rng = np.random.default_rng(0)
        page = np.clip(245 + rng.normal(0, 3, (h, w)), 0, 255)
        page[h // 2:h // 2 + 2, w // 2:w // 2 + 2] = 60
        return Image.fromarray(page.astype(np.uint8)).convert("RGB")
    grey = {
        "hgradient": 255 * xx / (w - 1),
        "vgradient": 255 * yy / (h - 1),
        "radial": 255 * np.hypot(xx - w / 2, yy - h / 2) / np.hypot(w / 2, h / 2),
    }[kind]
    return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
