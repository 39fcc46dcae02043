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
    """One open call: its reader, the answers in flight, and the replies waiting to leave."""

    def __init__(self) -> None:
        self.reader: asyncio.Task[None] | None = None
        self.cut = False  # a drain stopped the reader: the call ends UNAVAILABLE once what it read is answered
        self._ready: asyncio.Queue = asyncio.Queue()  # replies as they complete, then _READER_DONE
        self._answering: set[asyncio.Task] = set()
        self._outstanding = 0  # items read and not yet handed out
        self._reader_done = False

    @property
    def finished(self) -> bool:
        """The reader has ended and every item it read was handed out."""
        return self._reader_done and self._outstanding == 0

    def start(self, messages: AsyncIterator[Any], items_of: Callable[[Any], Iterable[Any]],
              admit: Callable[[Any], Awaitable[Any]], now: Callable[[Any], Any | None]) -> None:
        """Read ``messages`` in a task of its own, answering each item with ``now(item)`` when it has the reply at
        once, else with ``admit(item)``, concurrently."""
        self.reader = asyncio.ensure_future(self._read(messages, items_of, admit, now))
        # Told however the reader ends, even cancelled by a drain before its first step (when a
        # ``finally`` inside it would never run and the stream would wait out the whole grace).
        self.reader.add_done_callback(lambda _reader: self._ready.put_nowait(_READER_DONE))

    async def _read(self, messages: AsyncIterator[Any], items_of: Callable[[Any], Iterable[Any]],
                    admit: Callable[[Any], Awaitable[Any]], now: Callable[[Any], Any | None]) -> None:
        async for message in messages:
            for request in items_of(message):  # no await inside: a frame is admitted whole or not at all
                self._outstanding += 1
                reply = now(request)
                if reply is not None:  # answered in this turn: no task, no scheduling
                    self._ready.put_nowait(reply)
                    continue
                task = asyncio.ensure_future(admit(request))
                self._answering.add(task)
                task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task) -> None:
        self._answering.discard(task)
        if not task.cancelled():
            self._ready.put_nowait(task.result())

    async def turn(self) -> list[Any]:
        """Every reply ready now, waiting for the first; [] when what came was only the reader's end.

        Raises:
            whatever ended the reader other than a cancel (the call's request stream failed).
        """
        ready = [await self._ready.get()]
        while not self._ready.empty():
            ready.append(self._ready.get_nowait())
        replies = []
        for message in ready:
            if message is _READER_DONE:
                self._reader_done = True
                if not self.reader.cancelled() and self.reader.exception() is not None:
                    raise self.reader.exception()
            else:
                replies.append(message)
        self._outstanding -= len(replies)
        return replies

    def stop(self) -> None:
        """The call has ended: stop reading, and cancel every answer still in flight."""
        self.reader.cancel()
        for task in list(self._answering):
            task.cancel()


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
                    handle: Callable[[Any], Awaitable[Any]], reply_type: type,
                    now: Callable[[Any], Any | None] | None = None) -> AsyncIterator[Any]:
        """Yield ``await handle(item)`` for every item read, as each completes.

        Args:
            requests: the call's request stream, one item per message.
            context: the call's context, for aborting and the final status.
            handle: answers one item; whatever it raises becomes that item's INTERNAL reply.
            reply_type: the reply message type, for those INTERNAL replies.
            now: the item's reply if it can be had without waiting, else None (then ``handle`` answers it);
                it must not raise.
        """
        async for replies in self._answers(requests, context, handle, reply_type, lambda request: (request,), now):
            for reply in replies:
                yield reply

    async def serve_frames(self, frames: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                           handle: Callable[[Any], Awaitable[Any]], reply_type: type,
                           frame_type: type, now: Callable[[Any], Any | None] | None = None) -> AsyncIterator[Any]:
        """As ``serve``, many items per message each way: every reply ready at once leaves in one frame.

        Args:
            frames: the call's request stream of frames, each with ``items``.
            frame_type: the reply frame message type (its ``items`` are ``reply_type``).
        """
        async for replies in self._answers(frames, context, handle, reply_type, lambda frame: frame.items, now):
            yield frame_type(items=replies)

    async def _answers(self, messages: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                       handle: Callable[[Any], Awaitable[Any]], reply_type: type,
                       items_of: Callable[[Any], Iterable[Any]],
                       now: Callable[[Any], Any | None] | None) -> AsyncIterator[list[Any]]:
        """The engine: read every message's items, answer each once, yield the replies ready at each turn."""
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.who} is draining; send to another server")
        stream = _Stream()
        self._streams.add(stream)
        stream.start(messages, items_of, lambda request: self._admit(handle, request, reply_type),
                     lambda request: self._now(now, request))
        try:
            while not stream.finished:
                replies = await stream.turn()
                if not replies:
                    continue
                yield replies
                self.answered += len(replies)
            if stream.cut:
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details(f"{self.who} is draining: every item it read was answered; re-send the rest elsewhere")
        finally:
            self._streams.discard(stream)
            stream.stop()

    def _admit(self, handle: Callable[[Any], Awaitable[Any]], request: Any, reply_type: type) -> Awaitable[Any]:
        """One item read: counted, and its answer to come."""
        self.received += 1
        return self._answer(handle, request, reply_type)

    def _now(self, now: Callable[[Any], Any | None] | None, request: Any) -> Any | None:
        """The item's reply at once, counted, or None; a ``now`` that raises (a bug) is logged, and the item
        takes the normal path, which answers it."""
        if now is None:
            return None
        try:
            reply = now(request)
        except Exception:
            log.exception("%s: the immediate answer of item %r failed; answering it the normal way", self.who,
                          getattr(request, "request_id", "?"))
            return None
        if reply is not None:
            self.received += 1
        return reply

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
