"""The router's one table of nodes: for each member, its address, its health, its link and its load.

Membership reaches it through ``update`` alone (Ray Serve's request router keeps its
replicas behind ``update_replicas`` the same way): a new member gets a link and a
health watch, a member that left or moved loses both (its link closes once the items
already on it are answered). Health changes go through ``HealthTracker`` on the
entries here. The registry also holds the items that wait for a node to have room:
each answer from any node wakes the longest-waiting one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ringserve.router.health import HealthTracker, NodeHealth
from ringserve.router.link import NodeLink
from ringserve.router.membership.base import Member


@dataclass
class Node:
    """One member as the router knows it."""

    member: Member
    health: NodeHealth
    link: NodeLink

    @property
    def name(self) -> str:
        return self.member.name


class Registry:
    def __init__(self, health: HealthTracker, close_after_s: float = 30.0) -> None:
        self.health = health
        # How long a removed member's link may finish its items before it is closed.
        self.close_after_s = close_after_s
        self.nodes: dict[str, Node] = {}
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> Node | None:
        return self.nodes.get(name)

    # ---- the one way membership changes ----------------------------------------------------

    def update(self, members: Iterable[Member]) -> None:
        """Make the table match ``members``: link and watch new ones, let go of departed or moved ones."""
        wanted = {m.name: m for m in members}
        for name in list(self.nodes):
            if name not in wanted or wanted[name] != self.nodes[name].member:
                self._let_go(self.nodes.pop(name))
        for name, member in wanted.items():
            if name not in self.nodes:
                node = Node(member, NodeHealth(member), NodeLink(member, on_done=self._released))
                self.nodes[name] = node
                self.health.watch(node.health)
        self.health.on_change()

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

    def on_ring(self) -> dict[str, Member]:
        """Members whose health says SERVING and that are not ejected."""
        return {name: node.member for name, node in self.nodes.items() if node.health.on_ring}

    def loads(self) -> dict[str, int]:
        return {name: node.link.inflight for name, node in self.nodes.items()}

    def full(self, limit: int) -> set[str]:
        """Members holding ``limit`` or more items of this router in flight."""
        return {name for name, node in self.nodes.items() if node.link.inflight >= limit}

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
        for node in self.nodes.values():
            await self.health.forget(node.health)
            await node.link.close()
        self.nodes.clear()
        for task in list(self._closing):
            task.cancel()
