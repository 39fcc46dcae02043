"""Serving a bidirectional stream of items: read, handle each concurrently, answer in completion order.

Shared by the node and the router. Each item gets exactly one reply; a drain
stops reading new items on every open stream, lets the admitted ones finish,
and ends the cut streams with UNAVAILABLE so callers re-send the rest elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)
_READER_DONE = object()


class _Stream:
    def __init__(self) -> None:
        self.reader: asyncio.Task[None] | None = None
        self.cut = False


class ItemStreams:
    """All open item streams of one server, so they can be drained together."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.draining = False
        # Items read from streams and replies written back, over the server's life.
        self.received = 0
        self.answered = 0
        self._streams: set[_Stream] = set()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                    handle: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[Any]:
        """Yield ``await handle(item)`` for every item read, as each completes."""
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
            try:
                async for request in requests:
                    outstanding += 1
                    self.received += 1
                    task = asyncio.ensure_future(handle(request))
                    tasks.add(task)
                    task.add_done_callback(done)
            finally:
                out.put_nowait(_READER_DONE)

        stream.reader = asyncio.ensure_future(read())
        reader_done = False
        try:
            while not (reader_done and outstanding == 0):
                message = await out.get()
                if message is _READER_DONE:
                    reader_done = True
                    if not stream.reader.cancelled() and stream.reader.exception() is not None:
                        raise stream.reader.exception()
                    continue
                outstanding -= 1
                yield message
                self.answered += 1
            if stream.cut:
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details(f"{self.who} is draining: every item it read was answered; re-send the rest elsewhere")
        finally:
            self._streams.discard(stream)
            stream.reader.cancel()
            for task in list(tasks):
                task.cancel()

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
