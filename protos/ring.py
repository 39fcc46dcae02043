"""Placement: a consistent-hash ring over node identities, with bounded loads.

In the contract because two sides place items with it: the router, and the client that places its
own items (``client/placement.py``); both must give every key the same owner.

The ring is uhashring's ketama continuum over stable names (StatefulSet pod
names, never addresses), so every router that sees the same members places
every key the same way, and adding one node to N moves about 1/(N+1) of the
keys, all of them to the new node. Bounded loads (Mirrokni, Thorup and
Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2017): a node whose
load would exceed c times the mean (weighted) is passed over for the next
distinct node clockwise, so one hot key cannot melt one node while every
other key stays where it was. A node holding fewer than ``min_load`` items is
never passed over: a few items on a quiet cluster are not load worth moving a
key's cache locality for (they ride one batch on their owner). Knows nothing of gRPC.

Where an overflowing key goes is the ring's ``Spill`` rule (the router's ``--spill``; a client that places its own
items follows the router's, read from ``Cluster.Members``):

- ``clockwise``: the next distinct nodes clockwise (``walk``), as in Mirrokni et al. Every key of an overloaded
  node spills onto the same successor, which then overflows onto its own: the cascade.
- ``jump``: pseudo-random jumps over the ring (Chen, Coleman and Shrivastava, "Revisiting Consistent Hashing with
  Bounded Loads", AAAI 2021, arXiv:1908.08762): attempt i looks up the point that ``"<key>#<i>"`` hashes to, so the
  keys of one overloaded node spread over the others in proportion to their arcs instead of piling onto one
  successor. Envoy's ``hash_balance_factor`` does the same: its documentation says the probe for an eligible host
  "is implemented using a random jump in hosts ring/table ... the random jump avoids the cascading overflow
  effect when choosing the next host in the ring/table". The sequence depends only on the key and the
  members, so a hot key that overflows keeps landing on the same second node while it overflows (whose L1 then
  holds it).
- ``hot``: the hottest keys (``HotKeys``: a decaying count of the keys placed) go to the less loaded of their first
  two distinct nodes clockwise (two choices within the key's preference list; the owner on a tie), so that both
  nodes' L1 hold them, as groupcache's hot cache copies a hot key to a second peer; every other key as
  ``clockwise``.

In each rule the owner takes the key whenever it has room (the common case, one lookup), a node in ``exclude`` is
never chosen, and when every remaining candidate is full the first remaining one in the rule's order takes it
(the owner, when it is not excluded).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Iterator, Mapping
from enum import StrEnum

from uhashring import HashRing

from ringserve.contract.fingerprint import to_hex

# Keys whose owner a ring remembers (about 100 bytes each).
OWNERS_REMEMBERED = 65_536
# Keys ``Ring.shares`` looks up to tell each member's share of the key space (about 40 ms).
SHARE_SAMPLES = 4096
# The router's defaults (``--load-factor``, ``--min-load``); a client that places its own items uses the router's
# load factor (``Cluster.Members`` says it) and this floor.
DEFAULT_LOAD_FACTOR = 1.25
DEFAULT_MIN_LOAD = 8
# ``HotKeys``: placements between halvings of every count, and the share of the counted placements above which a key
# is hot. At Zipf 1.2 over 600 keys that is about the 8 hottest (rank 1 alone is about a quarter of the requests).
HOT_WINDOW = 1024
HOT_SHARE = 0.02
# ... and the fewest recent placements of a hot key: a few items of a small set (a test, a quiet hour) are each a
# large share of little traffic, and sharing them would cost cache locality for no relief.
HOT_MIN_COUNT = 16


class Spill(StrEnum):
    """Where a key goes when its owner is over capacity (the module's docstring says why each)."""

    CLOCKWISE = "clockwise"
    JUMP = "jump"
    HOT = "hot"


class HotKeys:
    """Which keys are hot: a count of recent placements per key, every count halved each ``window`` placements.

    A key is hot when its count is at least ``share`` of all the counts and at least ``min_count``. Memory stays
    within about ``window`` keys: a halving drops the keys whose count reaches 0.
    Changed only by ``count``.
    """

    def __init__(self, window: int = HOT_WINDOW, share: float = HOT_SHARE, min_count: int = HOT_MIN_COUNT) -> None:
        if window < 1 or not 0.0 < share <= 1.0 or min_count < 1:
            raise ValueError(f"hot keys: window {window} and min_count {min_count} must be >= 1 and share {share} "
                             "in (0, 1]")
        self.window, self.share, self.min_count = window, share, min_count
        self._counts: dict[int, int] = {}
        self._total = 0
        self._until_decay = window

    def count(self, key: int) -> bool:
        """Count one placement of ``key``; True if it is hot."""
        n = self._counts[key] = self._counts.get(key, 0) + 1
        self._total += 1
        self._until_decay -= 1
        if self._until_decay <= 0:
            self._counts = {k: c >> 1 for k, c in self._counts.items() if c > 1}
            self._total = sum(self._counts.values())
            self._until_decay = self.window
            n = self._counts.get(key, 0)
        return n >= self.min_count and n >= self.share * self._total


class Ring:
    def __init__(self, members: Mapping[str, int] | None = None, load_factor: float = 1.25, min_load: int = 1,
                 spill: Spill = Spill.CLOCKWISE) -> None:
        if load_factor < 1.0:
            raise ValueError(f"load factor {load_factor} must be >= 1 (1 means perfectly even)")
        if min_load < 1:
            raise ValueError(f"min load {min_load} must be >= 1 (1 means bounded loads from the first item)")
        self.load_factor = load_factor
        self.min_load = min_load
        self.spill = Spill(spill)
        self._hot = HotKeys() if self.spill is Spill.HOT else None
        self._weights: dict[str, int] = {}
        self._weight_sum = 0
        self._ring = HashRing(nodes={}, hash_fn="ketama")
        # Each key's owner under the current members (a ketama lookup is about 10 us; most items of a
        # repeated image go to their owner): forgotten whenever the members change, oldest first when full.
        self._owners: dict[int, str] = {}
        self._shares: tuple[HashRing, dict[str, float]] | None = None  # ``shares`` of this continuum
        self.set_members(members or {})

    @property
    def members(self) -> dict[str, int]:
        return dict(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def set_members(self, members: Mapping[str, int]) -> bool:
        """Replace the member set (name -> weight); True if it changed."""
        members = {name: max(1, int(w)) for name, w in members.items()}
        if members == self._weights:
            return False
        self._weights = members
        self._weight_sum = sum(members.values())
        self._ring = HashRing(nodes={n: {"weight": w} for n, w in sorted(members.items())}, hash_fn="ketama")
        self._owners.clear()
        return True

    def owner(self, key: int) -> str | None:
        """The node that owns ``key`` when loads are ignored."""
        if not self._weights:
            return None
        found = self._owners.get(key)
        if found is None:
            found = self._ring.get_node(to_hex(key))
            if len(self._owners) >= OWNERS_REMEMBERED:
                del self._owners[next(iter(self._owners))]
            self._owners[key] = found
        return found

    def walk(self, key: int) -> Iterator[str]:
        """Distinct members clockwise from ``key``: the owner first, then the failover order."""
        if not self._weights:
            return iter(())
        return self._ring.iterate_nodes(to_hex(key), distinct=True)

    def jumps(self, key: int) -> Iterator[str]:
        """Distinct members in ``Spill.JUMP`` order: the owner, then the node at the point ``"<key>#<i>"`` hashes to
        for attempt i = 1, 2, ... (a member already named is skipped), so a node comes up in proportion to its arcs.
        After ``4 x members`` jumps any member not yet named follows in clockwise order, so every member is
        reachable. Depends only on the key and the members."""
        if not self._weights:
            return
        seen = {self.owner(key)}
        yield from seen
        point = to_hex(key)
        for attempt in range(1, 4 * len(self._weights) + 1):
            if len(seen) == len(self._weights):
                return
            node = self._ring.get_node(f"{point}#{attempt}")
            if node not in seen:
                seen.add(node)
                yield node
        for node in self.walk(key):
            if node not in seen:
                seen.add(node)
                yield node

    def _candidates(self, key: int, loads: Mapping[str, int], hot: bool) -> Iterator[str]:
        """The nodes ``place`` tries for ``key``, in its spill rule's order."""
        if self.spill is Spill.JUMP:
            return self.jumps(key)
        walk = self.walk(key)
        if not hot:
            return walk
        first = next(walk)
        second = next(walk, None)
        if second is not None and loads.get(second, 0) < loads.get(first, 0):
            first, second = second, first  # the less loaded of the two; the owner on a tie
        return itertools.chain((first,), () if second is None else (second,), walk)

    def capacity(self, node: str, loads: Mapping[str, int]) -> int:
        """Most in-flight items ``node`` may hold, counting the one being placed."""
        return self._capacity(node, sum(loads.get(n, 0) for n in self._weights) + 1)

    def _capacity(self, node: str, total: int) -> int:
        share = self._weights[node] / self._weight_sum
        return max(self.min_load, math.ceil(self.load_factor * total * share))

    def place(self, key: int, loads: Mapping[str, int], exclude: Collection[str] = ()) -> str | None:
        """The owner of ``key`` if it has room under bounded loads, else the next candidate with room in the spill
        rule's order (clockwise: ``walk``; jump: ``jumps``; hot: ``walk``, a hot key's first two in load order),
        skipping ``exclude``.

        When every remaining node is at capacity, the first remaining one takes it: bounded
        loads spreads load, it does not refuse work (the nodes' own queues do that).
        """
        total = sum(loads.get(n, 0) for n in self._weights) + 1  # once per item, not per candidate
        owner = self.owner(key)
        # A hot key goes to the less loaded of its two nodes whatever the floor: with fast L1 hits its owner's
        # in-flight count seldom reaches --min-load, and a floor here kept the hot head on one node (max/mean items
        # per node 1.19-1.29 against 1.09-1.16 without it, bench/results/hotkeys.md). On a quiet cluster both hold
        # nothing and the owner takes it (a tie goes to the owner).
        hot = self._hot is not None and owner is not None and self._hot.count(key)
        if (not hot and owner is not None and owner not in exclude
                and loads.get(owner, 0) + 1 <= self._capacity(owner, total)):
            return owner  # the common case, without walking the ring
        fallback = None
        for node in self._candidates(key, loads, hot):
            if node in exclude:
                continue
            if fallback is None:
                fallback = node
            if loads.get(node, 0) + 1 <= self._capacity(node, total):
                return node
        return fallback

    def shares(self, samples: int = SHARE_SAMPLES) -> dict[str, float]:
        """Each member's share of the key space (the arcs it owns), from ``samples`` keys spread over it.

        What an operator compares a node's load share with (``ringserve status``, the router's
        ``ringserve_router_arc_share``): ketama hashes a key's name, so the keys land at random points and the
        estimate is within about sqrt(share / samples) (under 1 % at the default). Kept until the members change.
        """
        if self._shares is None or self._shares[0] is not self._ring or sum(self._shares[1].values()) != samples:
            counts = dict.fromkeys(self._weights, 0)
            step = (1 << 64) // samples
            for i in range(samples if self._weights else 0):
                counts[self._ring.get_node(to_hex(i * step))] += 1
            self._shares = (self._ring, counts)
        return {name: count / samples for name, count in self._shares[1].items()}
