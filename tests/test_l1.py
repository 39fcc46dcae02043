import numpy as np
import pytest

from ringserve.server.errors import CacheMiss
from ringserve.server.keys import Namespace
from ringserve.server.l1 import ENTRY_OVERHEAD_BYTES, L1, L1Config

NS = Namespace("m", "v1")


def vec(i: int, dim: int = 512) -> np.ndarray:
    return np.full(dim, i, dtype=np.float16)


def test_evicts_by_bytes_not_entries():
    entry = vec(0).nbytes + ENTRY_OVERHEAD_BYTES
    l1 = L1(L1Config(max_bytes=entry * 10))
    for i in range(25):
        l1.store(NS, f"d{i}", None, vec(i))
        assert l1.bytes_used <= entry * 10
    assert len(l1) == 10
    with pytest.raises(CacheMiss):
        l1.get_exact(NS, "d0")
    assert l1.get_exact(NS, "d24")[0] == 24
    # a bigger vector takes more of the budget: fewer entries fit
    l1.store(NS, "big", None, vec(99, dim=512 * 4))
    assert len(l1) < 10


def test_lru_order_keeps_recently_used():
    entry = vec(0).nbytes + ENTRY_OVERHEAD_BYTES
    l1 = L1(L1Config(max_bytes=entry * 3))
    for i in range(3):
        l1.store(NS, f"d{i}", None, vec(i))
    l1.get_exact(NS, "d0")
    l1.store(NS, "d3", None, vec(3))
    l1.get_exact(NS, "d0")
    with pytest.raises(CacheMiss):
        l1.get_exact(NS, "d1")


def test_perceptual_lookup_within_radius_and_index_follows_eviction():
    entry = vec(0).nbytes + ENTRY_OVERHEAD_BYTES
    l1 = L1(L1Config(max_bytes=entry * 4))
    l1.store(NS, "a", 0b1111, vec(1))
    hit = l1.get_near(NS, 0b1100, radius=2)
    assert hit.distance == 2 and hit.phash == 0b1111
    with pytest.raises(CacheMiss):
        l1.get_near(NS, 0b1100, radius=1)
    with pytest.raises(CacheMiss):
        l1.get_near(Namespace("m", "v2"), 0b1111, radius=4)  # another model version never matches
    for i in range(4):  # evict the perceptual entry
        l1.store(NS, f"x{i}", None, vec(i))
    with pytest.raises(CacheMiss):
        l1.get_near(NS, 0b1111, radius=0)
    assert len(l1._hamming[NS]) == 0


def test_a_perceptual_twin_counts_its_vector_once_and_goes_with_its_exact_entry():
    exact, twin = vec(0).nbytes + ENTRY_OVERHEAD_BYTES, 100 + ENTRY_OVERHEAD_BYTES
    l1 = L1(L1Config(max_bytes=(exact + twin) * 3))
    l1.store(NS, "a", 0b1, vec(1), verifier=b"v" * 100)
    assert l1.bytes_used == exact + twin  # the feature once, the verifier beside it
    for i in range(2, 4):
        l1.store(NS, f"d{i}", 1 << i, vec(i), verifier=b"v" * 100)
    assert len(l1) == 6 and l1.bytes_used == 3 * (exact + twin)  # three images in three images' room
    l1.get_exact(NS, "d2"), l1.get_exact(NS, "d3")  # "a" least recently used
    l1.get_near(NS, 1 << 2, 0), l1.get_near(NS, 1 << 3, 0)
    l1.store(NS, "d4", 1 << 4, vec(4), verifier=b"v" * 100)  # evicts "a": its twin goes with it
    with pytest.raises(CacheMiss):
        l1.get_near(NS, 0b1, 0)
    assert 0b1 not in {p for _, p in l1._hamming[NS].near(0b1, 0)}
    assert len(l1) == 6 and l1.bytes_used == 3 * (exact + twin)


def test_a_twin_evicted_first_leaves_its_exact_entry_and_a_lone_fingerprint_counts_its_vector():
    exact = vec(0).nbytes + ENTRY_OVERHEAD_BYTES
    l1 = L1(L1Config(max_bytes=3 * exact + 100))  # two images, then room for a lone fingerprint once twins go
    l1.store(NS, "a", 0b1, vec(1), verifier=b"v" * 100)
    l1.store(NS, "b", 0b10, vec(2), verifier=b"v" * 100)
    l1.get_exact(NS, "a"), l1.get_exact(NS, "b")  # both fingerprints older than both exact entries
    l1.store(NS, None, 0b100, vec(3), verifier=b"v" * 100)  # a near match from L2: no exact key, its own vector
    assert l1.get_exact(NS, "a")[0] == 1 and l1.get_exact(NS, "b")[0] == 2  # the twins went first
    with pytest.raises(CacheMiss):
        l1.get_near(NS, 0b1, 0)
    assert l1.get_near(NS, 0b100, 0).vector[0] == 3
    assert l1.bytes_used == 2 * exact + (exact + 100) == l1.config.max_bytes  # the lone one counts its vector


def test_a_fingerprint_stored_again_for_other_bytes_is_their_twin():
    l1 = L1(L1Config(max_bytes=100_000))
    l1.store(NS, "a", 0b1, vec(1), verifier=b"v")
    l1.store(NS, "b", 0b1, vec(2), verifier=b"w")  # another encoding with the same pHash
    assert l1.get_near(NS, 0b1, 0).vector[0] == 2
    l1._lru.pop(NS.exact("a"))  # "a" goes (as an eviction would): "b"'s twin stays
    l1._forget(NS.exact("a"))
    assert l1.get_near(NS, 0b1, 0).vector[0] == 2
    l1._lru.pop(NS.exact("b"))
    l1._forget(NS.exact("b"))
    with pytest.raises(CacheMiss):
        l1.get_near(NS, 0b1, 0)
