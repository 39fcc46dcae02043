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
