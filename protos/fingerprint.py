"""The perceptual fingerprint: one function for client hints, router placement and node keys.

A 64-bit DCT perceptual hash (pHash) of the decoded image. Re-encodings of the
same picture (another JPEG quality, a resize, stripped metadata) land within a
few bits of each other, which is what lets the ring place them on one node and
the cache serve them, when the policy allows. A 32x32 hash needs few pixels: a JPEG
is decoded at the smallest DCT scale that keeps ``DECODE_SIDE`` pixels per side (a
12 MP photo at 1/8), which is most of what it costs. ``VERSION`` names this rule; the
node's perceptual keys carry it, so a new rule never meets old keys.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import imagehash
from blake3 import blake3
from PIL import Image

from ringserve.contract.images import ImageLimits, decode

BITS = 64
# 1: every pixel decoded. 2: JPEGs decoded at a reduced scale of at least DECODE_SIDE pixels per side.
VERSION = 2
DECODE_SIDE = 256


def phash(image: Image.Image) -> int:
    """64-bit pHash of an already decoded image, as an unsigned int."""
    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def phash_bytes(data: bytes, limits: ImageLimits = ImageLimits()) -> int:
    """pHash of encoded image bytes, decoded only as far as the hash needs; raises ``ImageError`` for bad input."""
    return phash(decode(data, limits, at_least=DECODE_SIDE))


def digest(data: bytes) -> bytes:
    """BLAKE3-128 of the bytes: what a memo of fingerprints is keyed by (0.6 ms at 12 MP here)."""
    return blake3(data).digest(16)


class Memo:
    """A bounded LRU from the digest of image bytes to their fingerprint: a repeated image costs a digest.

    Used by the router for items that carry no hint, and by the client for the hints it sends.
    Thread-safe: fingerprints are computed in worker threads.
    """

    def __init__(self, size: int = 65_536) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> int | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, value: int) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def phash_bytes(self, data: bytes, limits: ImageLimits = ImageLimits()) -> int:
        """``phash_bytes(data)``, from the memo when these bytes were seen; raises ``ImageError`` for bad input."""
        key = digest(data)
        found = self.get(key)
        if found is None:
            found = phash_bytes(data, limits)
            self.put(key, found)
        return found


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two fingerprints."""
    return (a ^ b).bit_count()


def to_hex(value: int) -> str:
    """Fixed-width hex form used in cache keys and logs."""
    return f"{value:016x}"
