"""A collection's in-memory view: an HNSW index of its features and an exact index of its pHashes.

Built with usearch (cosine HNSW over float16 features; Hamming over the 64-bit
pHashes, searched exhaustively so that a radius query misses nothing). Entries get
integer labels here; re-putting an id replaces its label, deleting removes it. A
view changes only through ``apply``-style calls from its follower (``follower.py``),
and can be saved and loaded so that a restart does not rebuild the graph.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index

from ringserve.search.store import Entry, Meta

PHASH_BITS = 64
# Until a view holds this many entries its inserts run on one thread. Concurrent inserts into a small
# graph leave a few entries that no search reaches: 0.45% of 500 entries added at once never found
# themselves, over 30 builds, and none did on one thread. Past it, a batch is small next to the graph
# and every core builds it (20k entries of 1280-d: 11 s on two cores, 23 s on one).
SERIAL_INSERTS_BELOW = 20_000


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    distance: int


def _bits(phash: int) -> np.ndarray:
    return np.frombuffer(phash.to_bytes(8, "big"), dtype=np.uint8)


class CollectionView:
    """One collection for one model version: nearest neighbours by feature, near-duplicates by pHash."""

    def __init__(self, name: str, meta: Meta, connectivity: int = 16, expansion_search: int = 128) -> None:
        self.name = name
        self.meta = meta
        self._connectivity = connectivity
        self._expansion_search = expansion_search
        self._lock = threading.Lock()  # usearch is called from threads (searches) and the loop (changes)
        self._reset()

    def _reset(self) -> None:
        self.vectors = Index(ndim=self.meta.dim, metric="cos", dtype="f16", connectivity=self._connectivity,
                             expansion_search=self._expansion_search)
        self.hashes = Index(ndim=PHASH_BITS, metric="hamming", dtype="b1")
        self.labels: dict[str, int] = {}
        self.ids: dict[int, str] = {}
        self.phashes: dict[int, int] = {}
        # Labels of low-information entries: in ``vectors`` but never in ``hashes``.
        self.unhashed: set[int] = set()
        self.next_label = 0
        # The newest log id applied: the follower reads on from here.
        self.log_id = "0-0"

    def __len__(self) -> int:
        return len(self.labels)

    # ---- changes ---------------------------------------------------------------------------

    def add(self, entries: list[Entry]) -> None:
        """Add or replace entries (an id's old entry goes)."""
        if not entries:
            return
        with self._lock:
            for e in entries:
                self._remove(e.id)
            labels = np.arange(self.next_label, self.next_label + len(entries), dtype=np.uint64)
            self.next_label += len(entries)
            self.vectors.add(labels, np.stack([e.feature for e in entries]).astype(np.float16),
                             threads=1 if len(self.labels) < SERIAL_INSERTS_BELOW else 0)
            hashed = [(label, e.phash) for label, e in zip(labels.tolist(), entries, strict=True) if not e.low_information]
            if hashed:
                self.hashes.add(np.array([label for label, _ in hashed], dtype=np.uint64),
                                np.stack([_bits(phash) for _, phash in hashed]))
            for label, e in zip(labels.tolist(), entries, strict=True):
                self.labels[e.id] = label
                self.ids[label] = e.id
                self.phashes[label] = e.phash
                if e.low_information:
                    self.unhashed.add(label)

    def delete(self, ids: list[str]) -> None:
        with self._lock:
            for item_id in ids:
                self._remove(item_id)

    def _remove(self, item_id: str) -> None:
        label = self.labels.pop(item_id, None)
        if label is not None:
            self.vectors.remove(label)
            if label in self.unhashed:
                self.unhashed.discard(label)
            else:
                self.hashes.remove(label)
            del self.ids[label]
            del self.phashes[label]

    # ---- reads -----------------------------------------------------------------------------

    def entry(self, item_id: str) -> Entry | None:
        """The entry held for ``item_id``, or None."""
        with self._lock:
            label = self.labels.get(item_id)
            if label is None:
                return None
            return Entry(item_id, self.phashes[label], np.asarray(self.vectors.get(label), dtype=np.float16),
                         label in self.unhashed)

    def nearest(self, feature: np.ndarray, k: int, phash: int | None = None) -> list[Hit]:
        """The ``k`` entries with the most similar features (cosine), best first; with ``phash``, each
        hit's Hamming distance to it (else -1)."""
        if k <= 0 or not self.labels:
            return []
        with self._lock:
            found = self.vectors.search(feature.astype(np.float16), min(k, len(self.labels)))
            return [Hit(self.ids[int(label)], 1.0 - float(d),
                        -1 if phash is None else (phash ^ self.phashes[int(label)]).bit_count())
                    for label, d in zip(found.keys, found.distances, strict=True) if int(label) in self.ids]

    def duplicates(self, phash: int, max_distance: int, limit: int) -> list[Hit]:
        """Every entry whose pHash is within ``max_distance`` bits, closest first, at most ``limit``; never a
        low-information entry."""
        if len(self.labels) == len(self.unhashed):
            return []
        with self._lock:
            found = self.hashes.search(_bits(phash), min(limit, len(self.labels) - len(self.unhashed)), exact=True)
            return [Hit(self.ids[int(label)], 1.0 - float(d) / PHASH_BITS, int(d))
                    for label, d in zip(found.keys, found.distances, strict=True)
                    if int(d) <= max_distance and int(label) in self.ids]

    # ---- snapshots -------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write the view to ``folder`` (its graph, hashes and id map), replacing what was there whole."""
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.vectors.save(str(tmp / "vectors.usearch"))
            self.hashes.save(str(tmp / "hashes.usearch"))
            state = {"name": self.name, "meta": self.meta.__dict__, "log_id": self.log_id,
                     "next_label": self.next_label, "labels": self.labels,
                     "phashes": {str(k): v for k, v in self.phashes.items()}, "unhashed": sorted(self.unhashed)}
        (tmp / "state.json").write_text(json.dumps(state))
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> CollectionView:
        state = json.loads((folder / "state.json").read_text())
        view = cls(state["name"], Meta(**state["meta"]))
        view.vectors.load(str(folder / "vectors.usearch"))
        view.hashes.load(str(folder / "hashes.usearch"))
        view.labels = {k: int(v) for k, v in state["labels"].items()}
        view.ids = {v: k for k, v in view.labels.items()}
        view.phashes = {int(k): int(v) for k, v in state["phashes"].items()}
        view.unhashed = set(state.get("unhashed", ()))  # snapshots from before low-information entries have none
        view.next_label = state["next_label"]
        view.log_id = state["log_id"]
        return view
