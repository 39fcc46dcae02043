"""Serving a bidirectional stream of items: read, handle each concurrently, answer in completion order.

One item per message (``serve``) or many (``serve_frames``: the replies ready at one turn leave
in one frame); the engine is the same.

Shared by the node and the router. Each item gets exactly one reply: a handler
that raises answers its item INTERNAL with the exception's type and message (the
traceback goes to the log, the count to ``on_error``), and the stream goes on. A
drain stops reading new items on every open stream, lets the admitted ones finish,
and ends the cut streams with UNAVAILABLE so callers re-send the rest elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from ringserve.contract.status import error_reply

log = logging.getLogger(__name__)
_READER_DONE = object()


class _Stream:
    def __init__(self) -> None:
        self.reader: asyncio.Task[None] | None = None
        self.cut = False


class ItemStreams:
    """All open item streams of one server, so they can be drained together."""

    def __init__(self, who: str, on_error: Callable[[str], None] | None = None) -> None:
        self.who = who
        # Told the exception type of every item a handler failed on (a metric).
        self._on_error = on_error or (lambda _kind: None)
        self.draining = False
        # Items read from streams and replies written back, over the server's life.
        self.received = 0
        self.answered = 0
        self._streams: set[_Stream] = set()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                    handle: Callable[[Any], Awaitable[Any]], reply_type: type) -> AsyncIterator[Any]:
        """Yield ``await handle(item)`` for every item read, as each completes.

        Args:
            requests: the call's request stream, one item per message.
            context: the call's context, for aborting and the final status.
            handle: answers one item; whatever it raises becomes that item's INTERNAL reply.
            reply_type: the reply message type, for those INTERNAL replies.
        """
        async for replies in self._answers(requests, context, handle, reply_type, lambda request: (request,)):
            for reply in replies:
                yield reply

    async def serve_frames(self, frames: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                           handle: Callable[[Any], Awaitable[Any]], reply_type: type,
                           frame_type: type) -> AsyncIterator[Any]:
        """As ``serve``, many items per message each way: every reply ready at once leaves in one frame.

        Args:
            frames: the call's request stream of frames, each with ``items``.
            frame_type: the reply frame message type (its ``items`` are ``reply_type``).
        """
        async for replies in self._answers(frames, context, handle, reply_type, lambda frame: frame.items):
            yield frame_type(items=replies)

    async def _answers(self, messages: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                       handle: Callable[[Any], Awaitable[Any]], reply_type: type,
                       items_of: Callable[[Any], Iterable[Any]]) -> AsyncIterator[list[Any]]:
        """The engine: read every message's items, answer each once, yield the replies ready at each turn."""
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.who} is draining; send to another server")
        out: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()
        stream = _Stream()
        self._streams.add(stream)
        outstanding = 0

        def done(task: asyncio.Task) -> None:
            tasks.discard(task)
            if not task.cancelled():
                out.put_nowait(task.result())

        async def read() -> None:
            nonlocal outstanding
            async for message in messages:
                for request in items_of(message):  # no await inside: a frame is admitted whole or not at all
                    outstanding += 1
                    self.received += 1
                    task = asyncio.ensure_future(self._answer(handle, request, reply_type))
                    tasks.add(task)
                    task.add_done_callback(done)

        stream.reader = asyncio.ensure_future(read())
        # Told however the reader ends, even cancelled by a drain before its first step (when a
        # ``finally`` inside it would never run and the stream would wait out the whole grace).
        stream.reader.add_done_callback(lambda _reader: out.put_nowait(_READER_DONE))
        reader_done = False
        try:
            while not (reader_done and outstanding == 0):
                ready = [await out.get()]
                while not out.empty():
                    ready.append(out.get_nowait())
                replies = []
                for message in ready:
                    if message is _READER_DONE:
                        reader_done = True
                        if not stream.reader.cancelled() and stream.reader.exception() is not None:
                            raise stream.reader.exception()
                    else:
                        replies.append(message)
                if not replies:
                    continue
                outstanding -= len(replies)
                yield replies
                self.answered += len(replies)
            if stream.cut:
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details(f"{self.who} is draining: every item it read was answered; re-send the rest elsewhere")
        finally:
            self._streams.discard(stream)
            stream.reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def _answer(self, handle: Callable[[Any], Awaitable[Any]], request: Any, reply_type: type) -> Any:
        try:
            return await handle(request)
        except Exception as exc:  # answered and logged: an unanswered item would hang its caller
            log.exception("%s failed on item %r", self.who, request.request_id)
            self._on_error(type(exc).__name__)
            return error_reply(reply_type, request, grpc.StatusCode.INTERNAL,
                               f"{self.who} failed on this item: {type(exc).__name__}: {exc}")

    async def drain(self, timeout_s: float) -> None:
        """Stop reading new items on every stream; wait until every item read is answered."""
        self.draining = True
        for stream in list(self._streams):
            if stream.reader is not None and not stream.reader.done():
                stream.cut = True
                stream.reader.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._streams and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._streams:
            log.warning("%s: drain timed out with %d streams open", self.who, len(self._streams))
        log.info("drained: received=%d answered=%d", self.received, self.answered)
