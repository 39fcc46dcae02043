"""One long-lived item stream shared by many callers' items, for every sender of items (router and client).

Opening a stream per call costs both ends far more than the items on it: on this machine a call of one
L1 hit cost a Python client about 1 ms of CPU and the node as much, where an item on a stream already open
costs each a tenth of that. So a router keeps one ``Extract`` and one ``Classify`` stream to each node,
and the client one to its target, and each item goes on it under an id made by the sender; replies are
matched back to the waiting item whatever their order. An item's own deadline and trace travel in its
request (``timeout_ms``, ``trace_context``), since the stream's metadata and deadline belong to no one call.

When the stream ends (the server died, or drained and ended it, or refused the call), every item still
waiting on it fails with the sender's error for that end, and the sender opens a fresh stream for the
next item. Knows nothing of where the stream goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from ringserve.contract import frames
from ringserve.contract.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)
_CLOSE = object()


class StreamEnd:
    """How a shared stream ended, for the items it left unanswered."""

    def __init__(self, reason: str, status: grpc.aio.AioRpcError | None, unimplemented: bool) -> None:
        self.reason = reason  # one line: the status and its details, "stream ended", "closed"
        self.status = status  # the call's own status when it ended with one, else None (ended OK, or cancelled)
        # The server has no such method (frames from an older server): the call never served an item.
        self.unimplemented = unimplemented


class SharedStream:
    """One bidirectional item call, shared by many items.

    Framed (``ExtractFrames``/``ClassifyFrames``): every item queued when the call is ready to send leaves in
    one message, as ``contract.frames`` packs them, and reply frames are taken apart. Unframed (a server that
    predates frames): one item per message. Either way an item's image bytes are copied once and never
    re-encoded (``contract.wire``).
    """

    def __init__(self, rpc: grpc.aio.StreamStreamMultiCallable, name: str, framed: bool,
                 error: Callable[[StreamEnd], Exception], heard: Callable[[], None] = lambda: None) -> None:
        """
        Args:
            rpc: the method's multi-callable (``wire.item_calls``), framed or not as ``framed`` says.
            name: what the stream is, for logs ("node-1 Extract").
            error: the exception each item left unanswered fails with, made from how the stream ended.
            heard: told whenever the server says anything on this call: replies, or its end.
        """
        self.name = name
        self.framed = framed
        self._error = error
        self._heard = heard
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pending: dict[str, asyncio.Future] = {}
        self.closed = False
        self.unimplemented = False  # the server has no such method (frames on an older server)
        self.replied = False  # a reply came on this call
        self._status: grpc.aio.AioRpcError | None = None
        self._reason = "stream ended"  # why the call ended, for the items it leaves unanswered
        self._task = asyncio.get_running_loop().create_task(self._run(rpc), name=f"stream-{name}")
        # However the call ends, even cancelled before its first step, no item is left waiting on it.
        self._task.add_done_callback(self._ended)

    @property
    def inflight(self) -> int:
        return len(self._pending)

    def submit(self, item_id: str, request: pb.ImageRequest, image: bytes) -> asyncio.Future:
        """Queue one item now under ``item_id``; the future gets its reply, or the stream's error if it ends first.

        ``request`` holds every field but the image, which travels beside it; its request_id is overwritten
        with ``item_id`` as it is written. Cancelling the future abandons the item: if it is still queued it
        is never sent, and a late reply finds no one waiting and is dropped.

        Raises:
            the stream's error: the stream has ended; open another.
        """
        if self.closed:
            raise self._error(StreamEnd(f"{self._reason} (closed)", self._status, self.unimplemented))
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[item_id] = future
        future.add_done_callback(lambda _f: self._pending.pop(item_id, None))  # answered, failed or abandoned
        self._queue.put_nowait((item_id, request, image))
        return future

    async def _items(self) -> AsyncIterator[frames.Item]:
        """The queued items until close, each request carrying its stream id as it is written (a retry re-stamps
        it); an item abandoned while queued is left out."""
        while True:
            item = await self._queue.get()
            if item is _CLOSE:
                return
            item_id, request, image = item
            if item_id not in self._pending:
                continue
            request.request_id = item_id
            yield request, image

    def _ready(self) -> bool:
        return not self._queue.empty()

    def _answered(self, reply: pb.ExtractReply | pb.ClassifyReply) -> None:
        future = self._pending.get(reply.request_id)
        if future is not None and not future.done():
            future.set_result(reply)

    async def _run(self, rpc: grpc.aio.StreamStreamMultiCallable) -> None:
        try:
            if self.framed:  # every item queued when the call can send leaves in one frame
                async for frame in rpc(frames.pack(self._items(), ready=self._ready)):
                    self.replied = True
                    self._heard()
                    for reply in frame.items:
                        self._answered(reply)
            else:
                async for reply in rpc(frames.singles(self._items())):
                    self.replied = True
                    self._heard()
                    self._answered(reply)
        except grpc.aio.AioRpcError as exc:
            self._status = exc
            self._reason = f"{exc.code().name}: {exc.details()}"
            # A server without the method answers UNIMPLEMENTED, or, when the items already sent race that answer,
            # gRPC's own INTERNAL before any reply: either way the call never served an item.
            self.unimplemented = exc.code() == grpc.StatusCode.UNIMPLEMENTED or (
                exc.code() == grpc.StatusCode.INTERNAL and not self.replied)
        finally:
            self.closed = True  # at once, so no item is queued on a call that has ended

    def _ended(self, task: asyncio.Task) -> None:
        """Fail every item still waiting on the ended call, so its sender can send it again (or elsewhere)."""
        self.closed = True
        self._heard()  # a call that ended is news too: the next item opens a fresh one and tests the server again
        reason = self._reason
        if task.cancelled():
            reason = "stream closed"
        elif task.exception() is not None:
            exc = task.exception()
            log.error("%s: the stream failed", self.name, exc_info=exc)
            reason = f"{type(exc).__name__}: {exc}"
        end = StreamEnd(reason, self._status, self.unimplemented)
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(self._error(end))

    async def close(self) -> None:
        self._queue.put_nowait(_CLOSE)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
