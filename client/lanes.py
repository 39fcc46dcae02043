"""One try of a call under client placement: each item on the stream of the node that owns it, the rest on the router's.

The try's items leave one ``Outbox`` (one window for the whole call, as through the router). As each leaves it is
put on a lane: the stream to the node ``Membership.place`` names for its pHash hint, opened on first use; or the
stream to the target (the router) for an item without a hint, an item a node failed before, or when no node is
left. A node's lane that breaks (the node killed, draining or unreachable: any end but the call's own deadline or
the caller going away), or that answers an item UNAVAILABLE or RESOURCE_EXHAUSTED, gives its unanswered items back: the node
is passed over (``Membership.failed``, UNAVAILABLE and broken streams only) and each item goes again at once on the
router's lane, where the router fails it over as it does for any caller's item. The router's lane stays open while
any node's lane holds items, since each of them may come back. How a lane's items travel (the client's shared stream
to that node or to the router, or a stream of the try's own) is the client's to say (``Carry``).

Every item is answered exactly once: a lane holds an item from the moment it is put there until its reply or its
give-back, never both, and ``ItemCall`` keeps an item's first final answer only. What the router's own stream
leaves unanswered stays pending for the call's next try (``resend``), as without client placement.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ringserve.client.outbox import Outbox
from ringserve.client.placement import Membership, NodeRoute
from ringserve.contract import frames
from ringserve.contract.v1 import inference_pb2 as pb

# A node's per-item answers that mean "not taken here": the item goes through the router instead.
_GIVE_BACK = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
_NODE_GONE = grpc.StatusCode.UNAVAILABLE.value[0]
# The end of a node's stream that is the call's own, not the node's failure: the whole try ends with it. (The
# caller going away cancels the lanes' tasks; a CANCELLED status comes from the node's side or its channel's.)
_CALLS_OWN = grpc.StatusCode.DEADLINE_EXCEEDED
# A lane's items to where they go, each reply to the callback, until the items end and each sent is answered:
# (the node, None for the router; the items; whether the next is ready; take one reply). Raises the stream's
# gRPC error when it ends first (the call's own deadline: DEADLINE_EXCEEDED).
Carry = Callable[[NodeRoute | None, AsyncIterator[frames.Item], Callable[[], bool], Callable[[Any], None]],
                 Awaitable[None]]


@dataclass(eq=False)
class Lane:
    """One stream of the try: to a node (``route``) or to the router (``route`` None)."""

    route: NodeRoute | None
    queue: deque[frames.Item] = field(default_factory=deque)  # put here, not yet written to the stream
    held: dict[str, pb.ImageRequest] = field(default_factory=dict)  # put here and not answered
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False  # nothing more will be put here
    closed: bool = False  # its stream is over: nothing may be put here

    def put(self, request: pb.ImageRequest, image: bytes) -> None:
        self.queue.append((request, image))
        self.held[request.request_id] = request
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()

    def ready(self) -> bool:
        """Whether ``items`` yields or ends without waiting (``frames.pack`` closes a frame if not)."""
        return bool(self.queue) or self.ended

    async def items(self) -> AsyncIterator[frames.Item]:
        while True:
            if self.queue:
                yield self.queue.popleft()
            elif self.ended:
                return
            else:
                self.wake.clear()
                await self.wake.wait()


class Lanes:
    """The lanes of one try.

    Args:
        outbox: the try's items and window.
        membership: where items go (``place``), and each node's load and failures.
        carry: sends a lane's items to its node (or the router) and hands each reply back.
        key_of: an item's placement key as it leaves: its hint, else one the client learned for its bytes since the
            call began (a router's answer to an earlier item of them), else None (the router places it).
        take: records one reply (the client's, as without client placement; it frees the item's window slot).
        pending: the call's items without a final answer, by request id.
        via_router: request ids of the call's items that a node failed: they go through the router from then on.
    """

    def __init__(self, outbox: Outbox, membership: Membership, carry: Carry, take: Callable[[Any], None],
                 pending: dict[str, pb.ImageRequest], via_router: set[str],
                 key_of: Callable[[pb.ImageRequest], int | None]) -> None:
        # inputs
        self._outbox = outbox
        self._membership = membership
        self._carry = carry
        self._key_of = key_of
        self._take = take
        self._pending = pending
        self._via_router = via_router
        # state
        self._lanes: dict[str | None, Lane] = {}  # node name (None: the router) -> its lane
        self._tasks: list[asyncio.Task[None]] = []  # the dispatcher, then one per lane
        self._changed = asyncio.Event()  # a node's lane answered or gave back an item
        self._error: BaseException | None = None  # what ends the whole try

    async def run(self) -> None:
        """Send the try's items over the lanes until each is answered, given back to the router, or the try ends.

        Raises:
            grpc.aio.AioRpcError: the router's stream failed, or the call's deadline passed (the call's ``resend``
                decides what that means for the items still pending).
        """
        self._tasks.append(asyncio.get_running_loop().create_task(self._dispatch(), name="ringserve-dispatch"))
        try:
            while waiting := [t for t in self._tasks if not t.done()]:  # lanes open while it waits
                await asyncio.wait(waiting)
        finally:
            for task in self._tasks:
                task.cancel()
            for lane in self._lanes.values():  # items of a stopped try: no longer on their nodes, for bounded loads
                for _ in lane.held if lane.route is not None else ():
                    self._membership.answered(lane.route.name)
                lane.held.clear()
        if self._error is not None:
            raise self._error
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def _dispatch(self) -> None:
        """Put each item on its lane as the window lets it go; end the lanes when no item can come back."""
        try:
            while True:
                async for request, image in self._outbox.items():
                    lane = self._lane_for(request)
                    lane.put(request, image)
                    if lane.route is not None:
                        self._membership.sent(lane.route.name)
                if not any(lane.held for lane in self._lanes.values() if lane.route is not None):
                    return
                self._changed.clear()
                await self._changed.wait()  # a node's item may come back to go through the router
        finally:
            for lane in self._lanes.values():
                lane.end()

    def _lane_for(self, request: pb.ImageRequest) -> Lane:
        """The lane of the node that owns the item's key, else the router's."""
        route = None
        if request.request_id not in self._via_router and (key := self._key_of(request)) is not None:
            route = self._membership.place(key)
        name = route.name if route is not None else None
        lane = self._lanes.get(name)
        if lane is not None and lane.closed:  # its stream is over (its node failed): the router takes it
            name, route, lane = None, None, self._lanes.get(None)
        if lane is None:
            lane = self._lanes[name] = Lane(route)
            self._tasks.append(asyncio.get_running_loop().create_task(self._run_lane(lane),
                                                                      name=f"ringserve-lane-{name or 'router'}"))
        return lane

    async def _run_lane(self, lane: Lane) -> None:
        """One lane's stream; a node's lane that ends with items unanswered gives them back."""
        why = "its stream ended without answering them"
        try:
            await self._carry(lane.route, lane.items(), lane.ready, lambda reply: self._reply(lane, reply))
        except grpc.aio.AioRpcError as exc:
            if lane.route is None or exc.code() == _CALLS_OWN:
                self._stop(exc)
                return
            why = f"{exc.code().name}: {exc.details()}"
        except Exception as exc:  # a bug: the try ends with it, raised to the caller
            self._stop(exc)
            return
        finally:
            lane.closed = True
        if lane.route is None:
            if not lane.ended:  # the router ended its stream early: what it left waits for the call's next try
                self._stop(None)
        elif lane.held:
            self._membership.failed(lane.route.name, why)
            self._give_back(lane)

    def _reply(self, lane: Lane, reply: Any) -> None:
        request = lane.held.pop(reply.request_id, None)
        if request is None:
            return  # not an item of this lane's (answered already): never a second answer, nor a second free slot
        if lane.route is not None:
            self._membership.answered(lane.route.name)
            self._changed.set()
            if reply.status.code in _GIVE_BACK:  # not taken there: through the router, which fails it over
                if reply.status.code == _NODE_GONE:
                    self._membership.failed(lane.route.name, reply.status.message)
                self._again(request)
                return
        self._take(reply)

    def _give_back(self, lane: Lane) -> None:
        """Every item ``lane`` holds goes through the router."""
        held, lane.held = lane.held, {}
        lane.queue.clear()
        for request in held.values():
            self._membership.answered(lane.route.name)
            self._again(request)
        self._changed.set()

    def _again(self, request: pb.ImageRequest) -> None:
        """``request`` leaves its node's lane: its window slot is free, and it goes again through the router."""
        rid = request.request_id
        self._outbox.answered(rid)
        self._via_router.add(rid)
        if rid in self._pending:
            self._outbox.again(request)

    def _stop(self, error: BaseException | None) -> None:
        """End the whole try (with ``error``, if not None): every lane's stream and the dispatcher stop."""
        if self._error is None:
            self._error = error
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
