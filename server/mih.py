"""Multi-index hashing: find every 64-bit fingerprint within Hamming radius r.

Split each fingerprint into CHUNKS substrings of 16 bits. If two fingerprints
differ in at most r bits, then by the pigeonhole principle at least one of
their chunks differs in at most r // CHUNKS bits (Norouzi et al., "Fast Search
in Hamming Space with Multi-Index Hashing", 2012). So a search probes, in each
chunk table, every chunk value within that small radius, and checks the full
distance of the candidates found. Radius 0..3 probes 4 buckets, 4..7 probes
68, 8..11 probes 548: the cost that MAX_RADIUS bounds.

The same probes serve the in-process index here and the Redis sets of ``l2.py``.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from ringserve.contract import arguments

CHUNKS = 4
CHUNK_BITS = 16
MAX_RADIUS = arguments.MAX_RADIUS  # 4 chunks of 16 bits: 548 probes at 11
_MASK = (1 << CHUNK_BITS) - 1


def chunks(value: int) -> list[int]:
    """The CHUNKS substrings of a 64-bit fingerprint, most significant first."""
    return [(value >> (CHUNK_BITS * (CHUNKS - 1 - i))) & _MASK for i in range(CHUNKS)]


def _flips(value: int, radius: int) -> list[int]:
    out = [value]
    for r in range(1, radius + 1):
        for bits in combinations(range(CHUNK_BITS), r):
            flipped = value
            for b in bits:
                flipped ^= 1 << b
            out.append(flipped)
    return out


def probes(value: int, radius: int) -> list[tuple[int, int]]:
    """(chunk index, chunk value) buckets that hold every fingerprint within ``radius``."""
    if not 0 <= radius <= MAX_RADIUS:
        raise ValueError(f"radius {radius} outside 0..{MAX_RADIUS}")
    sub = radius // CHUNKS
    return [(i, v) for i, c in enumerate(chunks(value)) for v in _flips(c, sub)]


class HammingIndex:
    """In-process multi-index over a set of fingerprints: which members lie within a Hamming radius."""

    def __init__(self) -> None:
        self._tables: dict[tuple[int, int], set[int]] = defaultdict(set)
        self._members: set[int] = set()

    def __len__(self) -> int:
        return len(self._members)

    def add(self, value: int) -> None:
        if value in self._members:
            return
        self._members.add(value)
        for bucket in enumerate(chunks(value)):
            self._tables[bucket].add(value)

    def discard(self, value: int) -> None:
        if value not in self._members:
            return
        self._members.discard(value)
        for bucket in enumerate(chunks(value)):
            members = self._tables.get(bucket)
            if members is not None:
                members.discard(value)
                if not members:
                    del self._tables[bucket]

    def near(self, value: int, radius: int) -> list[tuple[int, int]]:
        """(distance, fingerprint) of every member within ``radius``, nearest first."""
        if radius == 0:
            return [(0, value)] if value in self._members else []
        found: set[int] = set()
        for bucket in probes(value, radius):
            members = self._tables.get(bucket)
            if members:
                found.update(members)
        return nearest(value, found, radius)


def nearest(value: int, candidates: set[int], radius: int) -> list[tuple[int, int]]:
    """Filter candidates to those within ``radius``, nearest first, ties by value."""
    hits = [((value ^ c).bit_count(), c) for c in candidates]
    return sorted(h for h in hits if h[0] <= radius)
