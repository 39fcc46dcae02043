"""Placement policies: which node an item goes to, given its key, the loads, and the nodes to skip.

One small seam, like groupcache's ``PeerPicker``: the servicer asks ``pick`` and holds
no policy ``if`` of its own. ``ring`` is the product (consistent hashing with bounded
loads, ``ring.py``); ``round-robin`` exists to measure what the ring buys.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Protocol

from ringserve.contract.ring import Ring


class PlacementPolicy(StrEnum):
    RING = "ring"
    ROUND_ROBIN = "round-robin"


class Placement(Protocol):
    def pick(self, key: int, loads: Mapping[str, int], exclude: Collection[str]) -> str | None:
        """The node for the item with placement ``key``, or None when every node is in ``exclude``."""
        ...


class RingPlacement:
    """The key's owner, or under bounded loads the next node with room by the ring's spill rule (``Ring.place``)."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring

    def pick(self, key: int, loads: Mapping[str, int], exclude: Collection[str]) -> str | None:
        return self.ring.place(key, loads, exclude)


class RoundRobinPlacement:
    """Every node in turn, whatever the key: no cache locality (for comparison only)."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring
        self._turn = itertools.count()

    def pick(self, key: int, loads: Mapping[str, int], exclude: Collection[str]) -> str | None:
        members = [m for m in sorted(self.ring.members) if m not in exclude]
        return members[next(self._turn) % len(members)] if members else None


def make(policy: PlacementPolicy, ring: Ring) -> Placement:
    return {PlacementPolicy.RING: RingPlacement, PlacementPolicy.ROUND_ROBIN: RoundRobinPlacement}[policy](ring)
