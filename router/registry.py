"""The router's one table of nodes: for each member, its address, its health, its link, its load and latency.

Membership reaches it through ``update`` alone (Ray Serve's request router keeps its
replicas behind ``update_replicas`` the same way): a new member gets a link and a
health watch, a member that left or moved loses both (its link closes once the items
already on it are answered). Health changes go through ``HealthTracker`` on the
entries here. The ring is derived from this table and nothing else: whenever a member
joins, leaves, or its health puts it on or off the ring, ``_refresh`` sets the ring's
members to the entries on the ring, in the same loop turn, so a name the ring gives
always has an entry here. ``pick`` asks the placement policy among those entries,
with the loads of their links, passing over a node found stalled until it answers
again. Each entry also keeps the node's recent latency (``latency.py``). The
registry also holds the items that wait for a node to have room: each answer from
any node wakes the longest-waiting one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from ringserve.contract.ring import Ring
from ringserve.contract.tls import ClientTls, TlsError
from ringserve.router import placement as placement_policies
from ringserve.router.health import HealthConfig, HealthTracker, NodeHealth
from ringserve.router.latency import NodeLatency
from ringserve.router.link import NodeLink
from ringserve.router.membership.base import Member
from ringserve.router.placement import PlacementPolicy

log = logging.getLogger(__name__)
LINK_RETRY_S = 1.0  # a node whose link could not be made (its TLS files unreadable) is tried again this often


@dataclass
class Node:
    """One member as the router knows it."""

    member: Member
    health: NodeHealth
    link: NodeLink
    # Its recent answer times by kind of item: its per-try bounds (``latency.py``).
    latency: NodeLatency = field(default_factory=NodeLatency)

    @property
    def name(self) -> str:
        return self.member.name


class Registry:
    """Members, their health, links and loads, and the ring derived from them.

    Args:
        health: the health policy (ejection after failures, watch retries).
        ring: an empty ring (its load factor, floor and spill rule set); from here on the registry alone sets its members.
        policy: how ``pick`` chooses among the nodes on the ring.
        on_ring_change: told after the ring's members changed (the router publishes its readiness).
        on_eject: told the name of every node ejected (a metric).
        close_after_s: how long a removed member's link may finish its items before it is closed.
        tls: TLS (and the router's client certificate) of its links and health checks to the nodes; None: plaintext.
    """

    def __init__(self, health: HealthConfig, ring: Ring, policy: PlacementPolicy = PlacementPolicy.RING,
                 on_ring_change: Callable[[], None] | None = None, on_eject: Callable[[str], None] | None = None,
                 close_after_s: float = 30.0, tls: ClientTls | None = None) -> None:
        self.health = HealthTracker(health, on_change=self._refresh, on_eject=on_eject, tls=tls)
        self.tls = tls
        self.ring = ring
        self.ring.set_members({})
        self.placement = placement_policies.make(policy, ring)
        self._on_ring_change = on_ring_change or (lambda: None)
        self.close_after_s = close_after_s
        self.nodes: dict[str, Node] = {}
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closing: set[asyncio.Task[None]] = set()
        self._again: asyncio.TimerHandle | None = None  # an update to try again (a node's link could not be made)

    def get(self, name: str) -> Node | None:
        return self.nodes.get(name)

    # ---- the one way membership changes ----------------------------------------------------

    def update(self, members: Iterable[Member]) -> None:
        """Make the table match ``members``: link and watch new ones, let go of departed or moved ones."""
        members = list(members)
        if self._again is not None:  # this update is newer than the one waiting to be tried again
            self._again.cancel()
            self._again = None
        wanted = {m.name: m for m in members}
        for name in list(self.nodes):
            if name not in wanted or wanted[name] != self.nodes[name].member:
                self._let_go(self.nodes.pop(name))
        unlinked = False
        for name, member in wanted.items():
            if name not in self.nodes:
                try:
                    link = NodeLink(member, on_done=self._released, tls=self.tls)
                except TlsError as exc:  # files caught mid-rotation: this node is linked at the next try
                    log.error("node %s not linked yet, trying again in %g s: %s", name, LINK_RETRY_S, exc)
                    unlinked = True
                    continue
                node = Node(member, NodeHealth(member), link)
                self.nodes[name] = node
                self.health.watch(node.health)
        if unlinked:  # the same members again in a while, unless a newer update comes first (it cancels this)
            self._again = asyncio.get_running_loop().call_later(LINK_RETRY_S, self.update, members)
        self._refresh()

    def _refresh(self) -> None:
        """Set the ring to the members on it now: the one way the ring changes."""
        members = {name: node.member.weight for name, node in self.nodes.items() if node.health.on_ring}
        if self.ring.set_members(members):
            log.info("ring: %s", ", ".join(sorted(members)) or "(empty)")
            self._on_ring_change()

    def _let_go(self, node: Node) -> None:
        task = asyncio.get_running_loop().create_task(self._close_later(node), name=f"close-{node.name}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_later(self, node: Node) -> None:
        """Stop watching at once; let the items already on the node's link finish, then close it."""
        await self.health.forget(node.health)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.close_after_s
        while node.link.inflight and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await node.link.close()

    # ---- reading it ------------------------------------------------------------------------

    def serving(self) -> list[Node]:
        """The nodes on the ring, by name."""
        return [self.nodes[name] for name in sorted(self.ring.members)]

    def loads(self) -> dict[str, int]:
        """Items this router has in flight on each member."""
        return {name: node.link.inflight for name, node in self.nodes.items()}

    def pick(self, key: int, exclude: Collection[str], limit: int) -> Node | None:
        """The node for the item with placement ``key``: on the ring, not in ``exclude``, holding fewer than
        ``limit`` of this router's items and not stalled (``hedging.py``); None when there is none (``busy`` says
        whether waiting would help)."""
        full = {name for name, node in self.nodes.items() if node.link.inflight >= limit or node.link.stalled}
        name = self.placement.pick(key, self.loads(), {*exclude, *full})
        return None if name is None else self.nodes[name]

    def busy(self, exclude: Collection[str], limit: int) -> bool:
        """Whether some node on the ring, not in ``exclude``, holds ``limit`` items: room will come when it answers."""
        return any(self.nodes[name].link.inflight >= limit for name in self.ring.members if name not in exclude)

    # ---- items waiting for room ------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Items waiting for a node to have room."""
        return sum(1 for f in self._waiting if not f.done())

    async def wait_for_room(self, timeout_s: float) -> None:
        """Return when some node has answered an item (the longest waiter first), or after ``timeout_s``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass  # the caller looks again: a slot may have gone to a waiter that could not use it

    def _released(self) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                return

    async def close(self) -> None:
        if self._again is not None:
            self._again.cancel()
        for node in self.nodes.values():
            await self.health.forget(node.health)
            await node.link.close()
        self.nodes.clear()
        for task in list(self._closing):
            task.cancel()
