"""The client's one long-lived stream per method to its target, shared by every call (``contract.multiplex``).

A call of one image on a stream of its own cost this machine's Python client about 1 ms of CPU, and the node
as much; on a stream already open an item costs each a fraction of that, and the items of calls made at once
share frames. So each call's items go on the client's shared stream for their method, each under a client-wide
id and with its call's remaining deadline (``timeout_ms``); a call waits for its own replies alone. A call whose
caller traces (OpenTelemetry) keeps a stream of its own, whose metadata carries the trace.

When the shared stream ends, the items it left unanswered end their call's try as a stream of their own would:
with the status it ended with, or UNAVAILABLE when it ended without one (a draining server), which ``resend``
sends again; the next item opens a fresh stream.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ringserve.contract import frames
from ringserve.contract.multiplex import SharedStream, StreamEnd
from ringserve.contract.v1 import inference_pb2 as pb


class StreamEnded(Exception):
    """An item's shared stream ended before its reply came (``end`` says how)."""

    def __init__(self, end: StreamEnd) -> None:
        super().__init__(end.reason)
        self.end = end


class SharedStreams:
    """The client's shared ``Extract``/``Classify`` frame streams to its target, opened on first use and again
    after an end."""

    def __init__(self, calls: dict[tuple[str, bool], Any]) -> None:
        """``calls``: the target channel's item methods (``wire.item_calls``), by (method, framed)."""
        self._calls = calls
        self._streams: dict[str, SharedStream] = {}
        self._ids = itertools.count()

    @property
    def inflight(self) -> int:
        """Items sent or queued on these streams and not answered yet."""
        return sum(stream.inflight for stream in self._streams.values() if not stream.closed)

    def _stream(self, method: str) -> SharedStream:
        stream = self._streams.get(method)
        if stream is None or stream.closed:
            stream = SharedStream(self._calls[method, True], f"client {method}", True, StreamEnded)
            self._streams[method] = stream
        return stream

    async def carry(self, method: str, items: AsyncIterator[frames.Item], take: Callable[[Any], None],
                    time_left: float | None) -> None:
        """One try of a call (or of its items for one node, with client placement): ``items`` on the shared
        ``method`` stream, each reply to ``take``.

        Returns once ``items`` has ended and every item sent has its reply.

        Raises:
            grpc.aio.AioRpcError: the stream ended before every item sent was answered (its status, UNIMPLEMENTED
                for a server without frames, or UNAVAILABLE), or ``time_left`` passed (DEADLINE_EXCEEDED).
        """
        loop = asyncio.get_running_loop()
        deadline = None if time_left is None else loop.time() + time_left
        waiting: dict[asyncio.Future, str] = {}  # an item's reply to come -> the call's id for it
        finished = loop.create_future()
        sending = True

        def end(error: BaseException) -> None:
            if not finished.done():
                finished.set_exception(_as_status(error.end) if isinstance(error, StreamEnded) else error)

        def settle(future: asyncio.Future) -> None:
            request_id = waiting.pop(future)
            if future.cancelled():
                return
            if future.exception() is not None:
                end(future.exception())
                return
            reply = future.result()
            reply.request_id = request_id
            try:
                take(reply)
            except Exception as exc:  # a bug where the reply is taken: the try ends with it, raised to the caller
                end(exc)
                return
            if not sending and not waiting and not finished.done():
                finished.set_result(None)

        async def send() -> None:
            nonlocal sending
            try:
                async for request, image in items:
                    if finished.done():
                        return
                    item = pb.ImageRequest()
                    item.CopyFrom(request)  # the call's request keeps the call's id; this one gets the stream's
                    if deadline is not None:
                        item.timeout_ms = max(1, int((deadline - loop.time()) * 1000))
                    future = self._stream(method).submit(f"c{next(self._ids)}", item, image)
                    waiting[future] = request.request_id
                    future.add_done_callback(settle)
            except StreamEnded as exc:
                end(exc)
            finally:
                sending = False
            if not waiting and not finished.done():
                finished.set_result(None)

        sender = asyncio.ensure_future(send())
        try:
            async with asyncio.timeout(time_left):
                await finished
        except TimeoutError:
            raise _status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        finally:
            sender.cancel()
            for future in list(waiting):  # abandoned: never sent if still queued, a late reply dropped
                future.cancel()

    async def close(self) -> None:
        for stream in self._streams.values():
            await stream.close()
        self._streams.clear()


def _as_status(end: StreamEnd) -> grpc.aio.AioRpcError:
    """The status a call's try ends with when its shared stream ended: as if the stream had been the call's own."""
    if end.unimplemented:
        return _status(grpc.StatusCode.UNIMPLEMENTED, end.reason)
    if end.status is not None:
        status = end.status
        return grpc.aio.AioRpcError(status.code(), status.initial_metadata(), status.trailing_metadata(),
                                    status.details(), status.debug_error_string())
    return _status(grpc.StatusCode.UNAVAILABLE, f"the stream ended before answering ({end.reason}); sent again")


def _status(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A status of the client's own making, as a call's stream would have ended with it (no metadata)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
