"""Decoding untrusted image bytes with limits, shared by client, router and node.

Every way an upload can be bad maps to one ``ImageError`` with a reason a
caller can act on. Limits are checked from the header, before pixels are
decoded, so a decompression bomb costs nothing. AVIF comes with Pillow (11.3+
wheels carry libavif); HEIC/HEIF comes from pillow-heif (libheif in a wheel,
the plugin Pillow's own docs point to). Both are ISOBMFF containers whose image
size sits in an ``ispe`` property box: it is read and checked here before
libavif or libheif parse the rest, so a file that claims 60000x60000 pixels is
refused with that reason rather than whatever the decoder says.

Transparency: an image with alpha is composited over one background before anyone
sees it (the model, the fingerprint, the router, search), as ``flatten`` says. Dropping
alpha instead, as ``convert("RGB")`` does, turns a cut-out or a logo whose picture lives
in its alpha channel into a blank page.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from ringserve.contract.errors import CallerError

pillow_heif.register_heif_opener()

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF", "HEIF")
# File name endings of those formats, for tools that pick images out of a folder.
SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".heic", ".heif"})
# Boxes on the way from the top of an ISOBMFF file to its image properties, and whether each is a
# "full box" (4 bytes of version and flags before its children).
_CONTAINERS = {b"meta": True, b"iprp": False, b"ipco": False}
# Alpha is composited over white: the page a browser, a print and ImageMagick's -flatten put it on, and
# the background product catalogues ask for. Only a picture that vanishes on white (a white logo made for
# dark pages: low-information over white, not over black) goes over black, so its shape survives; a
# picture that is merely light stays on white, so its re-encodings never change background. Part of the
# decode rule: changing it changes every alpha image's answer.
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
FLATTEN_RULE = "alpha over white; over black where only black shows the picture (fingerprint structure)"
# Modes Image.reduce takes as they are.
_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F", "CMYK", "YCbCr"})
# 16-bit grey: scaled to 8 bits before anything else (convert("RGB") clips it to near white).
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Pixels per side of the copy the choice of background is made on: a statistic, not a picture.
_CHOICE_SIDE = 128


@dataclass(frozen=True)
class ImageLimits:
    """What a node accepts; the defaults admit any ordinary photo."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 16_384


# How a refused image's status message begins: callers tell it from other INVALID_ARGUMENT answers by it.
BAD_IMAGE = "bad image:"


class ImageError(CallerError):
    """The bytes are not an image this service accepts; the message says why."""

    def reason(self) -> str:
        return f"{BAD_IMAGE} {self}"


def check_size(data: bytes, limits: ImageLimits) -> None:
    """Refuse empty or oversize payloads from their length alone, before any work on them."""
    if not data:
        raise ImageError("empty image: the request carried no bytes")
    if len(data) > limits.max_bytes:
        raise ImageError(f"image of {len(data)} bytes is over the limit of {limits.max_bytes} bytes")


def check_dimensions(width: int, height: int, limits: ImageLimits) -> None:
    """Refuse an image whose header claims more pixels than ``limits`` allow."""
    if width <= 0 or height <= 0:
        raise ImageError(f"image has empty dimensions {width}x{height}")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageError(
            f"image of {width}x{height} pixels is over the limit "
            f"({limits.max_pixels} pixels, {limits.max_side} per side): downscale it before sending"
        )


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each ISOBMFF box between ``start`` and ``end``."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1 and at + 16 <= end:
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            return  # malformed: the decoder will say so
        yield kind, at + header, at + size
        at += size


def container_dimensions(data: bytes) -> list[tuple[int, int]]:
    """Every image size an AVIF or HEIC file declares (its ``ispe`` boxes); empty for other formats."""
    if data[4:8] != b"ftyp":
        return []
    found: list[tuple[int, int]] = []

    def walk(start: int, end: int) -> None:
        for kind, payload, stop in _boxes(data, start, end):
            if kind in _CONTAINERS:
                walk(payload + (4 if _CONTAINERS[kind] else 0), stop)
            elif kind == b"ispe" and stop - payload >= 12:
                found.append(struct.unpack_from(">II", data, payload + 4))

    walk(0, len(data))
    return found


def has_alpha(img: Image.Image) -> bool:
    """Whether any pixel of ``img`` may be transparent: an alpha band, or a transparent palette index or colour."""
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def flatten(img: Image.Image) -> Image.Image:
    """``img`` as RGB: an image with alpha composited over white (over black where only black shows it).

    A fully opaque image is only converted; a fully transparent one is plain white; 16-bit grey is
    scaled to 8 bits first.
    """
    img = _eight_bit(img)
    if not has_alpha(img):
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] == 255:
        return rgba.convert("RGB")
    return _over(rgba, BLACK if _shown_only_on_black(rgba) else WHITE)


def _over(rgba: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    out = Image.new("RGB", rgba.size, background)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _shown_only_on_black(rgba: Image.Image) -> bool:
    """Whether the picture is low-information over white and not over black (decided on a small copy)."""
    from ringserve.contract import perceptual  # scipy's DCT: imported when a picture with alpha first needs it

    small = rgba.copy()
    small.thumbnail((_CHOICE_SIDE, _CHOICE_SIDE), Image.Resampling.BOX)
    return (perceptual.of_image(_over(small, WHITE)).low_information
            and not perceptual.of_image(_over(small, BLACK)).low_information)


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit grey (a scan, a medical or scientific image) as 8-bit grey: its top 8 bits."""
    if img.mode not in _SIXTEEN_BIT and not (img.mode == "I" and img.getextrema()[1] > 255):
        return img
    grey = np.asarray(img.convert("I") if img.mode in _SIXTEEN_BIT else img, dtype=np.int64)
    return Image.fromarray((np.clip(grey, 0, 65535) >> 8).astype(np.uint8), "L")


def _reduced(img: Image.Image, at_least: int) -> Image.Image:
    """``img`` shrunk by the largest whole factor that keeps ``at_least`` pixels per side (itself when none does)."""
    factor = min(img.size) // at_least
    if factor < 2:
        return img
    if img.mode not in _REDUCIBLE:  # a palette, 1-bit or 16-bit image: to the colours it shows first
        img = img.convert("RGBA" if has_alpha(img) else "RGB")
    return img.reduce(factor)


def decode(data: bytes, limits: ImageLimits = ImageLimits(), at_least: int | None = None,
           reduce_all: bool = False) -> Image.Image:
    """Return the image as RGB, upright per its EXIF orientation, first frame only, alpha flattened (``flatten``).

    Args:
        data: the encoded bytes, untrusted.
        limits: what is accepted; checked from the header before any pixel is decoded.
        at_least: decode a JPEG only at the smallest reduced scale (1/2, 1/4, 1/8, in the DCT) whose
            width and height both stay at least this many pixels; None decodes every pixel. Other
            formats are decoded whole.
        reduce_all: with ``at_least``, also shrink what no decoder can reduce while decoding (PNG, WebP,
            ...) right after it is decoded, by the largest whole factor that keeps ``at_least`` pixels per
            side (a box filter, as the JPEG's DCT scaling is), before any further copy of it is made. For a
            fingerprint, which needs 32x32 grey pixels: the model's input keeps every pixel.

    Raises:
        ImageError: the bytes are not an accepted image, or break a limit; the message says which.
    """
    check_size(data, limits)
    for width, height in container_dimensions(data):
        check_dimensions(width, height, limits)
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        check_dimensions(*img.size, limits)
        img.seek(0)
        if at_least is not None and img.format == "JPEG":
            img.draft("RGB", (at_least, at_least))
        img.load()
        img = _eight_bit(img)
        if reduce_all and at_least is not None and img.format != "JPEG":
            img = _reduced(img, at_least)
        img = ImageOps.exif_transpose(img)
        return flatten(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"not an image in an accepted format ({', '.join(FORMATS)})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"image is truncated or corrupt: {exc}") from exc
