"""Decoding untrusted image bytes with limits, shared by client and node.

Every way an upload can be bad maps to one ``ImageError`` with a reason a
caller can act on. Limits are checked from the header, before pixels are
decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ringserve.contract.errors import CallerError

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
# File name endings of those formats, for tools that pick images out of a folder.
SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True)
class ImageLimits:
    """What a node accepts; the defaults admit any ordinary photo."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384


class ImageError(CallerError):
    """The bytes are not an image this service accepts; the message says why."""

    def reason(self) -> str:
        return f"bad image: {self}"


def check_size(data: bytes, limits: ImageLimits) -> None:
    """Refuse empty or oversize payloads from their length alone, before any work on them."""
    if not data:
        raise ImageError("empty image: the request carried no bytes")
    if len(data) > limits.max_bytes:
        raise ImageError(f"image of {len(data)} bytes is over the limit of {limits.max_bytes} bytes")


def decode(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Return the image as RGB, upright per its EXIF orientation, first frame only."""
    check_size(data, limits)
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageError(f"image has empty dimensions {width}x{height}")
        if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
            raise ImageError(
                f"image of {width}x{height} pixels is over the limit "
                f"({limits.max_pixels} pixels, {limits.max_side} per side): downscale it before sending"
            )
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"not an image in an accepted format ({', '.join(FORMATS)})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"image is truncated or corrupt: {exc}") from exc
