import math
import random
from collections import Counter

import pytest

from ringserve.contract.ring import Ring

_RNG = random.Random(7)
KEYS = [_RNG.getrandbits(64) for _ in range(20_000)]


def owners(ring: Ring) -> dict[int, str]:
    return {k: ring.owner(k) for k in KEYS}


@pytest.mark.parametrize("n", [3, 4, 8])
def test_adding_a_node_moves_about_one_over_n_plus_one_and_only_to_it(n):
    before = Ring({f"node-{i}": 1 for i in range(n)})
    after = Ring({f"node-{i}": 1 for i in range(n + 1)})
    a, b = owners(before), owners(after)
    moved = [k for k in KEYS if a[k] != b[k]]
    assert all(b[k] == f"node-{n}" for k in moved)  # only to the new node
    share = len(moved) / len(KEYS)
    assert 0.5 / (n + 1) < share < 1.6 / (n + 1), share


def test_removing_a_node_moves_only_its_own_keys():
    full = Ring({f"node-{i}": 1 for i in range(5)})
    less = Ring({f"node-{i}": 1 for i in range(5) if i != 2})
    a, b = owners(full), owners(less)
    assert all(a[k] == "node-2" for k in KEYS if a[k] != b[k])
    assert all(b[k] != "node-2" for k in KEYS)


def test_two_routers_with_the_same_members_agree():
    members = {"web-0": 1, "web-1": 2, "web-2": 1}
    assert owners(Ring(members)) == owners(Ring(dict(reversed(members.items()))))


def test_walk_gives_distinct_nodes_owner_first():
    ring = Ring({f"n{i}": 1 for i in range(4)})
    for k in KEYS[:100]:
        order = list(ring.walk(k))
        assert order[0] == ring.owner(k) and sorted(order) == ["n0", "n1", "n2", "n3"]


@pytest.mark.parametrize("c", [1.1, 1.25, 2.0])
def test_bounded_loads_cap_every_node_under_a_skewed_workload(c):
    ring = Ring({f"n{i}": 1 for i in range(5)}, load_factor=c)
    rng = random.Random(1)
    hot = KEYS[:3]
    # 70% of items are three hot keys; items stay in flight (loads only grow)
    loads: Counter = Counter()
    for _ in range(2000):
        key = rng.choice(hot) if rng.random() < 0.7 else rng.choice(KEYS)
        node = ring.place(key, loads)
        loads[node] += 1
        mean = sum(loads.values()) / 5
        assert loads[node] <= c * mean + 1
    assert max(loads.values()) <= c * (2000 / 5) + 1


def test_bounded_loads_keep_keys_home_when_loads_are_even():
    ring = Ring({f"n{i}": 1 for i in range(4)})
    loads = {f"n{i}": 10 for i in range(4)}
    assert all(ring.place(k, loads) == ring.owner(k) for k in KEYS[:500])


def test_a_node_under_min_load_keeps_its_keys_and_bounded_loads_apply_above_it():
    key = KEYS[0]
    plain, floored = Ring({f"n{i}": 1 for i in range(4)}), Ring({f"n{i}": 1 for i in range(4)}, min_load=8)
    owner = plain.owner(key)
    quiet = {n: 0 for n in plain.members}
    # three items already on the owner, none elsewhere: plain bounded loads moves the fourth away
    assert plain.place(key, {**quiet, owner: 3}) != owner
    assert floored.place(key, {**quiet, owner: 3}) == owner
    assert floored.place(key, {**quiet, owner: 7}) == owner
    # at the floor, and with the owner far above the mean, it spills like the plain ring
    assert floored.place(key, {**quiet, owner: 8}) != owner
    # the floor does not cap a busy cluster below c x the mean
    busy = {n: 40 for n in plain.members}
    assert floored.capacity(owner, busy) == plain.capacity(owner, busy) == math.ceil(1.25 * 161 / 4)
    with pytest.raises(ValueError):
        Ring({}, min_load=0)


def test_place_skips_excluded_and_weights_scale_capacity():
    ring = Ring({"a": 1, "b": 3})
    k = KEYS[0]
    first = ring.owner(k)
    assert ring.place(k, {}, exclude={first}) != first
    assert ring.place(k, {}, exclude={"a", "b"}) is None
    assert ring.capacity("b", {"a": 0, "b": 99}) > ring.capacity("a", {"a": 0, "b": 99})
    with pytest.raises(ValueError):
        Ring({}, load_factor=0.9)


# Placement is a contract between versions: routers of two releases side by side during a roll must agree
# on every owner, and a new hash would move every key at once (every node's L1 emptied). These values were
# read off the ring as it is (uhashring's ketama over ``fingerprint.to_hex``); a change that moves them is
# a breaking change, to be made on purpose and released as one.
GOLDEN_MEMBERS = {"node-0": 1, "node-1": 1, "node-2": 2, "web-3": 1}
GOLDEN_WALKS = {
    0x0: ["node-0", "node-2", "node-1", "web-3"],
    0x1: ["node-2", "node-1", "web-3", "node-0"],
    0x8000000000000000: ["web-3", "node-2", "node-0", "node-1"],
    0xFFFFFFFFFFFFFFFF: ["web-3", "node-2", "node-1", "node-0"],
    0x0123456789ABCDEF: ["node-0", "node-1", "web-3", "node-2"],
    0xFEDCBA9876543210: ["node-2", "web-3", "node-0", "node-1"],
    0x8000000000000001: ["node-2", "web-3", "node-0", "node-1"],
    0x00FF00FF00FF00FF: ["node-2", "node-1", "web-3", "node-0"],
}
GOLDEN_OWNERS_SHA256 = "fae39b5a71ecf126c83130c9d4b3660a86bd8d807b33d0a1f1d74f958201d6ce"


def test_the_ring_places_fixed_keys_where_every_earlier_version_did():
    import hashlib

    ring = Ring(GOLDEN_MEMBERS)
    assert {key: list(ring.walk(key)) for key in GOLDEN_WALKS} == GOLDEN_WALKS
    assert {key: ring.owner(key) for key in GOLDEN_WALKS} == {k: w[0] for k, w in GOLDEN_WALKS.items()}
    rng = random.Random(20261201)
    many = [rng.getrandbits(64) for _ in range(5000)]
    owners_digest = hashlib.sha256(",".join(ring.owner(k) or "" for k in many).encode()).hexdigest()
    assert owners_digest == GOLDEN_OWNERS_SHA256


def test_the_remembered_owners_follow_the_members():
    """Owners are remembered per key; a change of members must forget them, or keys would stay on a gone node."""
    ring = Ring({f"n{i}": 1 for i in range(4)})
    before = owners(ring)
    ring.set_members({f"n{i}": 1 for i in range(4) if i != 1})
    assert owners(ring) == owners(Ring({f"n{i}": 1 for i in range(4) if i != 1}))
    assert "n1" not in set(owners(ring).values()) and "n1" in set(before.values())
    assert all(ring.place(k, {}) == ring.owner(k) for k in KEYS[:200])
