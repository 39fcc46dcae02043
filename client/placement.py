"""Client-side placement: the router's membership as this client last read it, and the node that owns an item.

With ``ClientConfig.placement = "client"`` the client sends an item that carries its pHash hint straight to the
node that owns that hint on the ring, as Ray Serve's handles and gRPC's proxyless clients do, sparing the hop
through the router. The ring is the router's own (``contract.ring``: the same ketama continuum over the same
names and weights, so both give every key the same owner) and so are its rules: bounded loads with the router's
load factor, counted over this client's own items in flight on each node, and a node that failed an item is
passed over. What is read: ``Cluster.Members`` on the router, every ``interval_s`` seconds (each call starts a
read when the last is older; the first call waits for it). Only SERVING members are placed on. When the read
fails (a router from before the Cluster service, a node as target, the router down) the view is empty and every
item goes through the target, as with ``placement = "router"``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ringserve.client.shared import SharedStreams
from ringserve.contract import ring, wire
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import cluster_pb2_grpc as cpb_grpc

log = logging.getLogger("ringserve.client")
# Longest wait for one Members read: a router that cannot say who its members are in this long is not waited for.
READ_TIMEOUT_S = 5.0
# Seconds a retired node's channel may finish the streams on it before it is closed.
CLOSE_GRACE_S = 30.0


@dataclass
class NodeRoute:
    """One member the client may send to: its address and its own channel's item streams."""

    name: str
    address: str
    channel: grpc.aio.Channel
    calls: dict[tuple[str, bool], Any]  # ``wire.item_calls`` of the channel
    # every call's items for this node on one stream per method, as to the target (opened on first use)
    shared: SharedStreams = field(init=False)

    def __post_init__(self) -> None:
        self.shared = SharedStreams(self.calls)

    async def close(self, grace: float | None = None) -> None:
        """Its shared streams, then its channel (``grace``: seconds the channel's other calls may finish in)."""
        await self.shared.close()
        await self.channel.close(grace)


class Membership:
    """The serving members as the router last reported them, the ring over them and a channel to each.

    Args:
        router: the channel to the client's target (a router; a node answers no Members: then no view).
        open_channel: how the client opens a channel to an address (the one way, ``aio.open_channel``).
        interval_s: seconds between reads of the router's membership.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, router: grpc.aio.Channel, open_channel: Callable[[str], grpc.aio.Channel], interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # inputs
        self._members = cpb_grpc.ClusterStub(router).Members
        self._open_channel = open_channel
        self.interval_s = interval_s
        self._clock = clock
        # state: changed by ``_apply`` (the view) and ``failed`` / ``sent`` / ``answered`` (this client's own view
        # of each node)
        self.ring = ring.Ring(load_factor=ring.DEFAULT_LOAD_FACTOR, min_load=ring.DEFAULT_MIN_LOAD)
        self.routes: dict[str, NodeRoute] = {}
        self.inflight: dict[str, int] = {}  # this client's items sent to each node and not answered
        self._failed: dict[str, float] = {}  # node -> when an item failed on it (clock)
        self._read_at: float | None = None  # when the last read began (clock); None: never
        self._has_read = False  # a read has ended (with a view or without): calls no longer wait for one
        self._reading: asyncio.Task[None] | None = None
        self._why_none = ""  # why the last read gave no view ("" when it gave one)
        self._unknown_spill = ""  # a spill rule the router named that this client does not know (said once)
        self._closing: dict[asyncio.Task[None], NodeRoute] = {}  # departed nodes' routes being closed

    async def current(self) -> None:
        """Bring the view up to date for a call: the first read is waited for (by every call that starts before it
        ends), later ones go on in the background."""
        if self._reading is None and (self._read_at is None or self._clock() - self._read_at >= self.interval_s):
            self._read_at = self._clock()
            self._reading = asyncio.get_running_loop().create_task(self._read(), name="ringserve-members")
            self._reading.add_done_callback(self._read_done)
        if self._reading is not None and not self._has_read:
            await asyncio.shield(self._reading)  # one waiter going away must not cancel the others' read

    def _read_done(self, task: asyncio.Task[None]) -> None:
        self._reading = None
        # ``_read`` answers gRPC's errors with no view; anything else (a node's channel that cannot be opened, a bug)
        # is raised to the calls waiting for a first read, and said here for a read in the background.
        if not task.cancelled() and task.exception() is not None:
            log.error("reading the router's members failed", exc_info=task.exception())

    async def _read(self) -> None:
        """One Members read; the view it gives, or none (everything through the router) when it fails."""
        began = self._clock()
        try:
            reply = await self._members(cpb.MembersRequest(), timeout=READ_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            self._no_view(f"{exc.code().name}: {exc.details()}")
            return
        finally:
            self._has_read = True
        if not reply.members:
            self._no_view("the router reports no members")
            return
        self._why_none = ""
        self._apply(reply, began)

    def _no_view(self, why: str) -> None:
        if why != self._why_none:  # said once per reason, not on every read
            log.warning("client placement: every item goes through the target, which gave no membership (%s); "
                        "use a router's address as target for placement=client", why)
        self._why_none = why
        self._apply(cpb.MembersReply(), self._clock())

    def _apply(self, reply: cpb.MembersReply, began: float) -> None:
        """Make the view match ``reply``: the ring over its serving members, a channel to each of them."""
        serving = {m.name: m for m in reply.members if m.state == cpb.MEMBER_STATE_SERVING}
        opened = self._open_routes({name: m.address for name, m in serving.items()
                                    if name not in self.routes or self.routes[name].address != m.address})
        for name in list(self.routes):
            if name not in serving or name in opened:
                self._retire(self.routes.pop(name))
        self.routes.update(opened)
        # The router's bounded loads (its --load-factor, --min-load and --spill), so that both pass over a node alike.
        load_factor = reply.load_factor or self.ring.load_factor
        min_load = reply.min_load or ring.DEFAULT_MIN_LOAD  # 0: a router from before the field; its default
        spill = self._spill(reply.spill)
        if (load_factor, min_load, spill) != (self.ring.load_factor, self.ring.min_load, self.ring.spill):
            self.ring = ring.Ring(load_factor=load_factor, min_load=min_load, spill=spill)
        self.ring.set_members({name: m.weight for name, m in serving.items()})
        # A node that failed an item is placed on again once a read begun ``interval_s`` after that failure still
        # lists it serving: by then the router has had that long to see it go.
        self._failed = {n: at for n, at in self._failed.items() if n in serving and began - at < self.interval_s}

    def _spill(self, name: str) -> ring.Spill:
        """The router's spill rule: "" from a router from before the field (clockwise, all it had); one this client
        does not know (a newer router) is said once and placed clockwise: its items may then land on other nodes
        than the router's would, never on a wrong one."""
        try:
            return ring.Spill(name or ring.Spill.CLOCKWISE)
        except ValueError:
            if name != self._unknown_spill:
                log.warning("client placement: the router spills by %r, which this client does not know; spilling "
                            "clockwise", name)
            self._unknown_spill = name
            return ring.Spill.CLOCKWISE

    def _open_routes(self, addresses: dict[str, str]) -> dict[str, NodeRoute]:
        """A route to each of ``addresses``; when one cannot be opened (a TLS file mid-rotation), none, and the view
        stays as it was (a half-changed one named nodes without a route)."""
        opened: dict[str, NodeRoute] = {}
        try:
            for name, address in addresses.items():
                channel = self._open_channel(address)
                opened[name] = NodeRoute(name, address, channel, wire.item_calls(channel))
        except BaseException:
            for route in opened.values():
                self._retire(route)
            raise
        return opened

    def _retire(self, route: NodeRoute) -> None:
        """Close a departed node's streams and channel once the items on them are answered (or after
        ``CLOSE_GRACE_S``): its shared streams never end by themselves."""
        task = asyncio.get_running_loop().create_task(self._close_route(route), name=f"close-{route.name}")
        self._closing[task] = route
        task.add_done_callback(lambda done: self._closing.pop(done, None))

    @staticmethod
    async def _close_route(route: NodeRoute) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE_S
        while route.shared.inflight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await route.close(max(0.0, deadline - loop.time()))

    # ---- placing an item -------------------------------------------------------------------

    def place(self, key: int) -> NodeRoute | None:
        """The node for an item with placement ``key``: its owner on the ring, or the next under bounded loads by
        the router's spill rule, never a node that failed an item since; None: no view or no node left (the router takes it)."""
        if not len(self.ring):
            return None
        name = self.ring.place(key, self.inflight, exclude=self._failed)
        return None if name is None else self.routes[name]

    def sent(self, name: str) -> None:
        """An item went to ``name``: it counts towards that node's load until ``answered``."""
        self.inflight[name] = self.inflight.get(name, 0) + 1

    def answered(self, name: str) -> None:
        """An item sent to ``name`` was answered or given back."""
        left = self.inflight.get(name, 0) - 1
        if left > 0:
            self.inflight[name] = left
        else:
            self.inflight.pop(name, None)

    def failed(self, name: str, reason: str) -> None:
        """``name`` could not take an item (gone, draining, full): no item goes to it until a later read."""
        if name not in self._failed:
            log.info("client placement: %s failed an item (%s); its items go through the router", name, reason)
        self._failed[name] = self._clock()

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        for route in self.routes.values():
            await route.close()
        self.routes.clear()
        for task, route in list(self._closing.items()):  # at once: the client is closing
            task.cancel()
            await route.close()
