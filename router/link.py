"""How to reach a node: one channel and long-lived streams that multiplex items of every caller.

Opening a stream per item would cost a round trip per image; instead each node
gets one Extract and one Classify stream (``contract.multiplex``), items carry
router-made ids, and replies are matched back to the waiting item whatever their
order. When a stream breaks (the node died, or drained and ended it), every item
still waiting on it fails with ``LinkError`` so the router can place it elsewhere,
and the next item opens a fresh stream. Knows nothing of the ring or of health.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable

import grpc

from ringserve.contract import frames, wire
from ringserve.contract.errors import ServiceError
from ringserve.contract.multiplex import SharedStream, StreamEnd
from ringserve.contract.tls import ClientTls, TlsError, aio_channel
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.router.membership.base import Member

log = logging.getLogger(__name__)


class LinkError(ServiceError, ConnectionError):
    """The stream to a node broke before this item was answered: it may go to another node."""

    code = grpc.StatusCode.UNAVAILABLE


class FramesUnsupported(LinkError):
    """The node serves no frames (it predates them): not its failure; the item goes to it again, one per message."""


class NodeLink:
    """A node's channel and its streams, opened on first use and reopened after a break."""

    _ids = itertools.count()

    def __init__(self, member: Member, on_done: Callable[[], None] = lambda: None, tls: ClientTls | None = None) -> None:
        """``tls``: the channel's TLS and the router's client certificate (None: plaintext); files changed on disk
        are read into a new channel at the next stream this link opens (``_renew_if_rotated``)."""
        self.member = member
        self._on_done = on_done  # told when an item leaves this link, answered or not
        self._tls = tls if tls is not None and tls.enabled else None
        self._tls_stamp = self._tls.stamp() if self._tls is not None else ()
        self.channel = self._open_channel()
        self._retired: list[grpc.aio.Channel] = []  # channels of older certificates, their open streams going on
        self._calls = wire.item_calls(self.channel)  # they send bytes written by ``contract.wire``
        self._streams: dict[str, SharedStream] = {}
        self.placed = 0
        # Many items per message to this node, until it turns out not to serve frames.
        self.framed = True
        # When the node last said anything (a reply on any stream, or a stream's end), on the monotonic clock.
        self.heard_at = time.monotonic()
        # Done when the node is found stalled (``stall``); a fresh one once it is heard again.
        self.stall_signal: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._suspicion: asyncio.TimerHandle | None = None  # a stall verdict to come (``suspect``)

    @property
    def stalled(self) -> bool:
        """Found silent with items on it (``hedging.py``): no item is placed here until it is heard again."""
        return self.stall_signal.done()

    def suspect(self, since: float, grace_s: float) -> None:
        """An item's per-try bound passed with no word from the node since ``since``: stalled, unless a word
        comes within ``grace_s`` of this router running on time.

        Silence is only evidence while this process runs: a router that was descheduled, or whose loop was
        busy, wakes with its timers due and the node's answers still unread in its sockets. So the verdict
        waits ``grace_s`` (the answers, if any, are read meanwhile) and is put off again when that wait itself
        ran late (the router was not running through it); a node that is truly frozen stays silent and is
        found stalled ``grace_s`` after its bound.
        """
        if self.stalled or self._suspicion is not None:
            return
        asked = time.monotonic()
        self._suspicion = asyncio.get_running_loop().call_later(grace_s, self._verdict, since, asked, grace_s)

    def _verdict(self, since: float, asked: float, grace_s: float) -> None:
        self._suspicion = None
        if self.heard_at >= since:
            return  # it spoke: late on that item perhaps, but not stalled
        now = time.monotonic()
        # the router itself was not running through the grace: listen again, but not for ever (a router that lags
        # all the time still moves the items of a node silent for ten graces)
        if now - asked > 1.5 * grace_s and now - since < 10 * grace_s:
            self.suspect(since, grace_s)
            return
        self.stall()

    def stall(self) -> None:
        """The node answered nothing since an item's per-try bound began: wake every item waiting on it."""
        if not self.stalled:
            log.warning("%s answered nothing for %.2f s with %d items on it: stalled, its items go elsewhere",
                        self.member.name, time.monotonic() - self.heard_at, self.inflight)
            self.stall_signal.set_result(None)

    def _heard(self) -> None:
        self.heard_at = time.monotonic()
        if self.stalled:
            log.info("%s answers again: no longer stalled", self.member.name)
            self.stall_signal = asyncio.get_running_loop().create_future()

    @property
    def inflight(self) -> int:
        return sum(s.inflight for s in self._streams.values())

    def send(self, method: str, request: pb.ImageRequest, image: bytes) -> asyncio.Future:
        """Put one item on this node's ``method`` stream now; the future gets the node's reply, or LinkError.

        The item counts in flight from this call on, before any await, so the next placement sees it.
        ``request`` holds every field but the image, which travels beside it as ``image``; its
        request_id is overwritten with a link-wide id when it is written (the reply carries that id).
        Cancelling the future abandons the item: a late reply finds no one waiting and is dropped.
        """
        stream = self._streams.get(method)
        if stream is None or stream.closed:
            self._renew_if_rotated()
            if stream is not None and stream.unimplemented and stream.framed:
                log.warning("%s serves no frames; one item per message from now on", self.member.name)
                self.framed = False
            stream = SharedStream(self._calls[method, self.framed], f"{self.member.name} {method}", self.framed,
                                  functools.partial(self._error, method, self.framed), heard=self._heard)
            self._streams[method] = stream
        self.placed += 1
        future = stream.submit(f"r{next(self._ids)}", request, image)
        future.add_done_callback(lambda _f: self._on_done())
        return future

    def _error(self, method: str, framed: bool, end: StreamEnd) -> LinkError:
        """What an item left on an ended stream fails with: on to another node, or again without frames."""
        message = f"{self.member.name} {method}: {end.reason}"
        return FramesUnsupported(message) if end.unimplemented and framed else LinkError(message)

    def _open_channel(self) -> grpc.aio.Channel:
        return aio_channel(self.member.address, tls=self._tls, options=[
            ("grpc.max_receive_message_length", frames.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", frames.MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
        ])

    def _renew_if_rotated(self) -> None:
        """A new channel when the TLS files changed since this one was made: a rotated client certificate reaches
        the node from the link's next stream on (a reconnection of the old channel would present the old one,
        perhaps expired). Streams open on the old channel go on; files caught half-written keep it until the next."""
        if self._tls is None or (stamp := self._tls.stamp()) == self._tls_stamp:
            return
        try:
            channel = self._open_channel()
        except TlsError as exc:
            log.warning("%s: TLS files changed but cannot be used yet; the link keeps the previous ones: %s",
                        self.member.name, exc)
            return
        log.info("%s: TLS files changed: new streams go on a channel with them", self.member.name)
        self._retired.append(self.channel)
        self.channel, self._tls_stamp, self._calls = channel, stamp, wire.item_calls(channel)

    async def close(self) -> None:
        if self._suspicion is not None:
            self._suspicion.cancel()
        for stream in self._streams.values():
            await stream.close()
        for channel in (*self._retired, self.channel):
            await channel.close()
