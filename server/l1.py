"""L1: the node's own memory, an LRU bounded in bytes, with a perceptual index.

Bytes, not entries, because feature sizes differ by model (576 to 2048 values)
and the operator budgets memory. cachetools' LRUCache does the LRU accounting;
this adds the index of perceptual keys so a radius lookup finds near
fingerprints (each with the verifier a near match is checked by before it is
served), and drops a fingerprint from the index when its entry is evicted.
Used only from the event loop, so it takes no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from ringserve.server import mih
from ringserve.server.errors import CacheMiss
from ringserve.server.keys import Namespace

# Python object, dict slot and key string overhead per entry, roughly.
ENTRY_OVERHEAD_BYTES = 200


@dataclass(frozen=True)
class L1Config:
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class _Near:
    """A perceptual entry: the feature and the verifier of the image it was computed from (``server.verifier``).

    ``twin``: the vector is the very array of an exact entry stored with it, which counts its bytes; this entry
    lives no longer than that one (``L1._evicted``), so its own size is the verifier and the bookkeeping alone.
    """

    vector: np.ndarray
    verifier: bytes | None
    twin: bool = False


def _size(value: np.ndarray | _Near) -> int:
    if isinstance(value, _Near):
        vector = 0 if value.twin else int(value.vector.nbytes)
        return vector + len(value.verifier or b"") + ENTRY_OVERHEAD_BYTES
    return int(value.nbytes) + ENTRY_OVERHEAD_BYTES


class _EvictingLRU(LRUCache):
    """LRUCache that tells its owner which key it evicted."""

    def __init__(self, maxsize: int, on_evict) -> None:
        super().__init__(maxsize=maxsize, getsizeof=_size)
        self._on_evict = on_evict

    def popitem(self):
        key, value = super().popitem()
        self._on_evict(key)
        return key, value


@dataclass(frozen=True)
class NearHit:
    vector: np.ndarray
    phash: int
    distance: int
    # The verifier stored with it; None for an entry stored without one, which is never served as a near match.
    verifier: bytes | None = None


class L1:
    """Exact entries keyed by digest, perceptual entries keyed by pHash, per namespace."""

    def __init__(self, config: L1Config) -> None:
        self.config = config
        self._lru = _EvictingLRU(config.max_bytes, self._evicted)
        self._hamming: dict[Namespace, mih.HammingIndex] = {}
        self._perceptual_keys: dict[str, tuple[Namespace, int]] = {}
        # Twins: an exact key and the perceptual key whose entry shares its vector, each way.
        self._twins: dict[str, str] = {}
        self._twin_of: dict[str, str] = {}
        self.evictions = 0

    @property
    def bytes_used(self) -> int:
        return int(self._lru.currsize)

    def __len__(self) -> int:
        return len(self._lru)

    def get_exact(self, ns: Namespace, digest: str) -> np.ndarray:
        """The feature stored for these very bytes, or CacheMiss."""
        try:
            return self._lru[ns.exact(digest)]
        except KeyError:
            raise CacheMiss(digest) from None

    def near(self, ns: Namespace, phash: int, radius: int) -> Iterator[NearHit]:
        """Stored fingerprints within ``radius`` bits, nearest first: the caller verifies each before serving it."""
        index = self._hamming.get(ns)
        if index is None:
            return
        for distance, found in index.near(phash, radius):
            entry = self._lru.get(ns.perceptual(found))
            if entry is not None:
                yield NearHit(entry.vector, found, distance, entry.verifier)

    def get_near(self, ns: Namespace, phash: int, radius: int) -> NearHit:
        """The nearest stored fingerprint within ``radius`` bits, verified or not, or CacheMiss."""
        for hit in self.near(ns, phash, radius):
            return hit
        raise CacheMiss(f"no fingerprint within {radius} bits")

    def store(self, ns: Namespace, digest: str | None, phash: int | None, vector: np.ndarray,
              verifier: bytes | None = None) -> None:
        """Store under the exact key and the perceptual key (with the image's ``verifier``), each where known.

        Stored under both, the feature is held and counted once: the perceptual entry is the exact one's twin and
        goes when it goes. Counted twice, the same bytes held half as many images as a response cache that keeps
        one entry per image (bench/results/cluster-two-entries.md).
        """
        if _size(vector) * 2 > self.config.max_bytes:
            return  # larger than the whole budget allows; cachetools would raise
        exact = ns.exact(digest) if digest is not None else None
        if (exact is not None and phash is not None and self._twins.get(exact) == ns.perceptual(phash)
                and self._lru.get(exact) is vector):
            return  # held already, with this twin (each item that joins a flight stores it): nothing to churn
        if exact is not None:
            self._untwin(exact)  # its twin shares the array this store replaces
            self._lru[exact] = vector
        if phash is not None:
            key = ns.perceptual(phash)
            self._untwin(key)
            twin = exact is not None and exact in self._lru
            self._lru[key] = _Near(vector, verifier, twin=twin)
            if twin and exact not in self._lru:  # making room for it evicted the exact entry: it counts the vector
                twin = False
                self._lru[key] = _Near(vector, verifier)
            self._perceptual_keys[key] = (ns, phash)
            self._hamming.setdefault(ns, mih.HammingIndex()).add(phash)
            if twin:
                self._twins[exact], self._twin_of[key] = key, exact

    def _untwin(self, key: str) -> None:
        """End ``key``'s twinship: a perceptual twin is dropped (its vector is counted by the exact entry)."""
        exact = self._twin_of.pop(key, None)
        if exact is not None:  # a perceptual key: being replaced or gone, the exact entry stays
            self._twins.pop(exact, None)
            return
        twin = self._twins.pop(key, None)
        if twin is not None:
            del self._twin_of[twin]
            if twin in self._lru:
                del self._lru[twin]
            self._forget(twin)

    def _evicted(self, key: str) -> None:
        self.evictions += 1
        self._forget(key)

    def _forget(self, key: str) -> None:
        """An entry is gone: its fingerprint leaves the index, and a twin goes with its exact entry."""
        owner = self._perceptual_keys.pop(key, None)
        if owner is not None:
            ns, phash = owner
            self._hamming[ns].discard(phash)
        self._untwin(key)
