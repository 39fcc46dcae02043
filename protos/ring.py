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
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping

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


class Ring:
    def __init__(self, members: Mapping[str, int] | None = None, load_factor: float = 1.25, min_load: int = 1) -> None:
        if load_factor < 1.0:
            raise ValueError(f"load factor {load_factor} must be >= 1 (1 means perfectly even)")
        if min_load < 1:
            raise ValueError(f"min load {min_load} must be >= 1 (1 means bounded loads from the first item)")
        self.load_factor = load_factor
        self.min_load = min_load
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

    def capacity(self, node: str, loads: Mapping[str, int]) -> int:
        """Most in-flight items ``node`` may hold, counting the one being placed."""
        return self._capacity(node, sum(loads.get(n, 0) for n in self._weights) + 1)

    def _capacity(self, node: str, total: int) -> int:
        share = self._weights[node] / self._weight_sum
        return max(self.min_load, math.ceil(self.load_factor * total * share))

    def place(self, key: int, loads: Mapping[str, int], exclude: Collection[str] = ()) -> str | None:
        """First node clockwise from ``key`` with room under bounded loads, skipping ``exclude``.

        When every remaining node is at capacity, the first remaining one takes it: bounded
        loads spreads load, it does not refuse work (the nodes' own queues do that).
        """
        total = sum(loads.get(n, 0) for n in self._weights) + 1  # once per item, not per candidate
        owner = self.owner(key)
        if owner is not None and owner not in exclude and loads.get(owner, 0) + 1 <= self._capacity(owner, total):
            return owner  # the common case, without walking the ring
        fallback = None
        for node in self.walk(key):
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
