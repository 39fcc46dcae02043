import random

import pytest

from ringserve.server import mih


def brute(values, q, r):
    return sorted(((q ^ v).bit_count(), v) for v in values if (q ^ v).bit_count() <= r)


@pytest.mark.parametrize("radius", [0, 1, 3, 4, 7, 8, 11])
def test_index_finds_exactly_what_brute_force_finds(radius):
    rng = random.Random(radius)
    base = [rng.getrandbits(64) for _ in range(300)]
    # neighbours at every distance up to radius + 2, so the edge is exercised
    values = set(base)
    for b in base[:60]:
        for d in range(radius + 3):
            v = b
            for bit in rng.sample(range(64), d):
                v ^= 1 << bit
            values.add(v)
    index = mih.HammingIndex()
    for v in values:
        index.add(v)
    for q in base[:60]:
        assert index.near(q, radius) == brute(values, q, radius)


def test_discard_removes_from_every_table():
    index = mih.HammingIndex()
    index.add(0xFFFF)
    index.discard(0xFFFF)
    assert index.near(0xFFFF, 3) == [] and len(index) == 0 and not index._tables


def test_probe_counts_follow_the_pigeonhole_bound():
    assert len(mih.probes(0, 3)) == 4
    assert len(mih.probes(0, 4)) == 4 * 17
    with pytest.raises(ValueError):
        mih.probes(0, mih.MAX_RADIUS + 1)
