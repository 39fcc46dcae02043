"""The perceptual fingerprint: one function for client hints, router placement and node keys.

A 64-bit DCT perceptual hash (pHash) of the decoded image. Re-encodings of the
same picture (another JPEG quality, a resize, stripped metadata) land within a
few bits of each other, which is what lets the ring place them on one node and
the cache serve them, when the policy allows.
"""

from __future__ import annotations

import imagehash
from PIL import Image

from ringserve.contract.images import ImageLimits, decode

BITS = 64


def phash(image: Image.Image) -> int:
    """64-bit pHash of an already decoded image, as an unsigned int."""
    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def phash_bytes(data: bytes, limits: ImageLimits = ImageLimits()) -> int:
    """pHash of encoded image bytes; raises ``ImageError`` for bad input."""
    return phash(decode(data, limits))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two fingerprints."""
    return (a ^ b).bit_count()


def to_hex(value: int) -> str:
    """Fixed-width hex form used in cache keys and logs."""
    return f"{value:016x}"
