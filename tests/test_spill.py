"""The ring's spill rules (``contract.ring.Spill``): where a key goes when its owner is over its bounded load, the
router's ``--spill`` flag that chooses one, and the client that follows the router's (``MembersReply.spill``)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from ringserve.client.placement import Membership
from ringserve.contract.ring import HotKeys, Ring, Spill
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.router import config

pytestmark = pytest.mark.fast

NODES = {f"node-{i}": 1 for i in range(8)}
KEYS = [(i * 0x9E3779B97F4A7C15) % 2**64 for i in range(2000)]


def ring(spill: Spill, members=None, **kw) -> Ring:
    return Ring(NODES if members is None else members, load_factor=1.25, min_load=1, spill=spill, **kw)


def overloaded(r: Ring, victim: str) -> dict[str, int]:
    """Loads with ``victim`` far over its bound and every other node empty."""
    return {victim: 1000}


def test_jump_is_deterministic_per_key_and_differs_between_keys():
    a, b = ring(Spill.JUMP), ring(Spill.JUMP)  # two rings over the same members, as a router's and a client's
    for key in KEYS[:200]:
        assert list(a.jumps(key)) == list(b.jumps(key)) == list(a.jumps(key))
    # Not one fixed order after the owner: keys of one owner jump to different second nodes.
    seconds = Counter(list(a.jumps(k))[1] for k in KEYS if a.owner(k) == "node-0")
    assert len(seconds) >= 5


def test_jump_names_every_member_once_with_the_owner_first():
    r = ring(Spill.JUMP)
    for key in KEYS[:300]:
        order = list(r.jumps(key))
        assert order[0] == r.owner(key) and sorted(order) == sorted(NODES)
    weighted = ring(Spill.JUMP, {"big": 20, "small": 1, "tiny": 1})  # a small arc is still reached
    assert all(sorted(weighted.jumps(k)) == ["big", "small", "tiny"] for k in KEYS[:100])
    assert list(ring(Spill.JUMP, {}).jumps(1)) == [] and list(ring(Spill.JUMP, {"solo": 1}).jumps(1)) == ["solo"]


def test_a_spilled_key_keeps_landing_on_the_same_second_node():
    r = ring(Spill.JUMP)
    for key in KEYS[:100]:
        loads = overloaded(r, r.owner(key))
        first = r.place(key, loads)
        assert first != r.owner(key)
        assert all(r.place(key, loads) == first for _ in range(5))  # its L1 there stays warm


@pytest.mark.parametrize("spill", list(Spill))
def test_the_owner_keeps_its_keys_while_it_has_room(spill):
    r, clockwise = ring(spill), ring(Spill.CLOCKWISE)
    loads = {n: 3 for n in NODES}  # even: every node under 1.25 x the mean
    for key in KEYS:
        assert r.place(key, loads) == clockwise.place(key, loads) == r.owner(key)


def test_jump_spreads_an_overloaded_owners_keys_where_clockwise_follows_the_ring():
    jump, clockwise = ring(Spill.JUMP), ring(Spill.CLOCKWISE)
    victim = "node-3"
    keys = [k for k in KEYS if jump.owner(k) == victim]
    assert len(keys) > 100
    loads = overloaded(jump, victim)
    went_jump = {k: jump.place(k, loads) for k in keys}
    # Clockwise: each key to the next distinct node after its own point on the ring (``walk``'s second).
    assert all(clockwise.place(k, loads) == list(clockwise.walk(k))[1] for k in keys)
    # Jump: to its first jump, which is not the ring's successor but for about a seventh of the keys (chance) ...
    assert all(went_jump[k] == list(jump.jumps(k))[1] for k in keys)
    same = sum(went_jump[k] == list(clockwise.walk(k))[1] for k in keys)
    assert same < 0.3 * len(keys)
    # ... and all seven others take some, none more than about twice its fair seventh.
    spread = Counter(went_jump.values())
    assert set(spread) == set(NODES) - {victim} and max(spread.values()) <= 2 * len(keys) / 7


def test_with_the_successor_full_too_jump_does_not_walk_on_from_it():
    # The victim's keys whose ring successor is also full: clockwise takes the successor's successor for each
    # of them (walk order), jump its next jump, which is again not tied to the ring's order.
    jump, clockwise = ring(Spill.JUMP), ring(Spill.CLOCKWISE)
    victim = "node-5"
    keys = [k for k in KEYS if jump.owner(k) == victim]
    successor = Counter(list(clockwise.walk(k))[1] for k in keys).most_common(1)[0][0]
    keys = [k for k in keys if list(clockwise.walk(k))[1] == successor]
    loads = {victim: 1000, successor: 1000}
    assert all(clockwise.place(k, loads) == list(clockwise.walk(k))[2] for k in keys)
    assert all(jump.place(k, loads) == next(n for n in jump.jumps(k) if n not in loads) for k in keys)
    assert len({jump.place(k, loads) for k in keys}) >= 4


@pytest.mark.parametrize("spill", list(Spill))
def test_exclude_and_the_all_full_fallback(spill):
    r = ring(spill)
    full = {n: 1000 for n in NODES}
    for key in KEYS[:200]:
        owner = r.owner(key)
        assert r.place(key, full) == owner  # all full: the owner takes it, as clockwise always did
        assert r.place(key, {}, exclude=set(NODES)) is None  # nothing left: None
        others = set(NODES) - {owner}
        assert r.place(key, full, exclude={owner}) in others  # never an excluded node, full or not
        assert r.place(key, {}, exclude=others) == owner
        last = sorted(others)[0]
        assert r.place(key, full, exclude=set(NODES) - {last}) == last
    # Clockwise's fallback with the owner excluded is still its successor (unchanged behaviour).
    c = ring(Spill.CLOCKWISE)
    assert all(c.place(k, full, exclude={c.owner(k)}) == list(c.walk(k))[1] for k in KEYS[:200])
    # Jump's is its first jump: where the key goes with room anywhere but its owner.
    j = ring(Spill.JUMP)
    assert all(j.place(k, full, exclude={j.owner(k)}) == list(j.jumps(k))[1] for k in KEYS[:200])


def test_hot_keys_counts_decay_and_stay_bounded():
    hot = HotKeys(window=100, share=0.1, min_count=2)
    assert not hot.count(7)  # one placement is never hot
    assert hot.count(7)  # two of two
    for k in range(1000, 1300):
        hot.count(k)  # cold keys, three windows' worth
    assert len(hot._counts) <= 100 + 1
    assert not hot.count(7)  # 7's count halved to nothing meanwhile, and it is 1 of many now
    assert any(hot.count(7) for _ in range(30))  # hot again once it is a tenth of the recent placements
    with pytest.raises(ValueError):
        HotKeys(window=0)


def test_a_few_placements_of_a_small_set_are_never_hot():
    hot = HotKeys()  # the defaults: 2 % and at least 16 placements
    assert not any(hot.count(k) for _ in range(3) for k in range(24))  # 24 images sent three times: each 4 %
    assert [hot.count(99) for _ in range(16)][-1]  # the 16th placement of one key among them is hot


def test_hot_puts_a_hot_key_on_the_less_loaded_of_its_first_two_nodes():
    r = Ring(NODES, load_factor=1000, min_load=1, spill=Spill.HOT)  # a high load factor: no bounded-load spill
    hot_key, cold = KEYS[0], KEYS[1:800]
    first, second = list(r.walk(hot_key))[:2]
    seen = Counter()
    loads: Counter = Counter()
    for i in range(600):
        key = hot_key if i % 3 == 0 else cold[i]  # a third of the placements: far above 2 %
        node = r.place(key, loads)
        loads[node] += 1
        if key == hot_key:
            seen[node] += 1
    assert set(seen) == {first, second} and min(seen.values()) > 50  # both L1s hold it, the load shared
    c = Ring(NODES, load_factor=1.25, min_load=10_000, spill=Spill.CLOCKWISE)
    assert all(c.place(hot_key, {first: i}) == first for i in range(10))  # clockwise keeps it on its owner
    assert r.place(cold[0], {r.owner(cold[0]): 5}) == r.owner(cold[0])  # a cold key stays on its owner


def test_hot_keeps_a_hot_key_on_its_owner_on_a_tie():
    r = Ring(NODES, load_factor=1000, min_load=8, spill=Spill.HOT)
    hot_key = KEYS[0]
    first, second = list(r.walk(hot_key))[:2]
    for _ in range(20):
        r.place(hot_key, {})  # hot by now: every placement is this key, 16 and more
    assert r.place(hot_key, {}) == first  # a quiet cluster: the owner, as any key
    assert r.place(hot_key, {first: 2, second: 2}) == first  # a tie: the owner
    assert r.place(hot_key, {first: 2, second: 1}) == second  # the less loaded of the two, under the floor too



def test_the_router_flag_parses_and_reaches_the_ring_and_members_reply(capsys):
    members = ["--members-static", "a=127.0.0.1:1"]
    assert config.from_args(members, {}).placement.spill is Spill.HOT  # the default (bench/results/hotkeys.md)
    assert config.from_args([*members, "--spill", "jump"], {}).placement.spill is Spill.JUMP
    assert config.from_args(members, {"RINGSERVE_ROUTER_SPILL": "clockwise"}).placement.spill is Spill.CLOCKWISE
    with pytest.raises(SystemExit):
        config.from_args([*members, "--spill", "sideways"], {})
    assert "--spill" in capsys.readouterr().err

    from ringserve.router.main import Router
    from ringserve.router.servicer import ClusterServicer

    async def built() -> cpb.MembersReply:
        router = Router(config.from_args([*members, "--spill", "jump", "--port", "0"], {}))
        try:
            assert router.registry.ring.spill is Spill.JUMP
            return await ClusterServicer(router.servicer).Members(cpb.MembersRequest(), None)
        finally:
            router.pool.shutdown()

    assert asyncio.run(built()).spill == "jump"


def reply(spill: str | None) -> cpb.MembersReply:
    return cpb.MembersReply(load_factor=1.25, spill=spill or "", members=[
        cpb.Member(name=n, address=f"127.0.0.1:{9 + i}", weight=1, state=cpb.MEMBER_STATE_SERVING)
        for i, n in enumerate(NODES)])


async def test_the_client_places_with_the_routers_spill_rule(caplog):
    membership = Membership(grpc.aio.insecure_channel("127.0.0.1:9"), grpc.aio.insecure_channel, interval_s=60)
    try:
        membership._apply(reply(None), 0.0)
        assert membership.ring.spill is Spill.CLOCKWISE  # an older router: clockwise, all it had
        membership._apply(reply("jump"), 1.0)
        assert membership.ring.spill is Spill.JUMP
        router_ring = Ring(NODES, load_factor=1.25, min_load=8, spill=Spill.JUMP)
        victim = "node-2"
        membership.inflight = {victim: 500}
        keys = [k for k in KEYS if router_ring.owner(k) == victim]
        assert [membership.place(k).name for k in keys] == [router_ring.place(k, {victim: 500}) for k in keys]
        assert len({membership.place(k).name for k in keys}) > 2  # jumps, not the clockwise successors
        membership._apply(reply("sideways"), 2.0)  # a rule from a newer router: said, and clockwise
        assert membership.ring.spill is Spill.CLOCKWISE and "sideways" in caplog.text
    finally:
        await membership.close()
