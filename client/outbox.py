"""What one item stream sends, in the order it leaves: at most ``window`` items unanswered at a time.

An item the server answered ``image_required`` goes again with its image ahead of the items not yet
sent, so a miss costs its item one round trip more, not a place at the back of the queue. The sending
side of the stream stays open while any item sent digest-only awaits its answer (that answer may ask
for the image), and ends once none does and nothing is left to send.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from ringserve.contract import frames
from ringserve.contract.v1 import inference_pb2 as pb

log = logging.getLogger("ringserve.client")


class Outbox:
    """The items of one stream and the window they share.

    ``outgoing(request)`` says what goes as its image now and whether that is digest-only (no image);
    ``unready(request)``, where given, whether an item must be readied before it leaves (its hint computed), and
    ``readying(request)`` readies it.
    """

    def __init__(self, items: list[pb.ImageRequest], outgoing: Callable[[pb.ImageRequest], tuple[bytes, bool]],
                 window: int, unready: Callable[[pb.ImageRequest], bool] = lambda _request: False,
                 readying: Callable[[pb.ImageRequest], Awaitable[None]] | None = None) -> None:
        self._fresh = deque(items)
        self._again: deque[pb.ImageRequest] = deque()  # asked for their image: they leave first
        self._outgoing = outgoing
        self._unready = unready
        self._readying = readying
        self._window = asyncio.Semaphore(window)
        self._named: set[str] = set()  # sent digest-only on this stream, not answered yet
        self._preparing: set[asyncio.Task[None]] = set()  # asked for their image, readied before they go again
        self._wake = asyncio.Event()  # something to send, or nothing left to wait for
        self._closed = False

    async def items(self) -> AsyncIterator[frames.Item]:
        """Each item with what goes as its image, once the window has room; ends when nothing can follow."""
        while not self._closed:
            if not (self._again or self._fresh):
                if not (self._named or self._preparing):
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._window.acquire()
            if self._closed:
                return
            request = self._again.popleft() if self._again else self._fresh.popleft()
            if self._must_ready(request):  # it gives its slot back, and goes once readied
                self._window.release()
                self.again_when(request, self._readying(request))
                continue
            image, named = self._outgoing(request)
            if named:
                self._named.add(request.request_id)
            yield request, image

    def ready(self) -> bool:
        """Whether ``items`` yields its next item, or ends, without waiting (``frames.pack`` closes a frame if not)."""
        if self._again:
            return not self._window.locked()
        if self._fresh:
            return not self._window.locked() and not self._must_ready(self._fresh[0])
        return not (self._named or self._preparing)

    def _must_ready(self, request: pb.ImageRequest) -> bool:
        return self._readying is not None and self._unready(request)

    def answered(self, request_id: str) -> bool:
        """One reply came: its window slot is free. Returns whether its item had gone digest-only."""
        self._window.release()
        named = request_id in self._named
        self._named.discard(request_id)
        self._wake.set()
        return named

    def again(self, request: pb.ImageRequest) -> None:
        """Send ``request`` again on this stream, ahead of the rest (call it in the turn of its ``answered``)."""
        self._again.append(request)
        self._wake.set()

    def again_when(self, request: pb.ImageRequest, readied: Awaitable[None]) -> None:
        """As ``again``, once ``readied`` is done (its hint computed): the stream stays open meanwhile."""
        async def ready_then_again() -> None:
            try:
                await readied
            finally:  # readied or not (a failure is logged below), the item goes, and is answered
                if not self._closed:
                    self.again(request)

        task = asyncio.ensure_future(ready_then_again())
        self._preparing.add(task)
        task.add_done_callback(self._prepared)

    def _prepared(self, task: asyncio.Task[None]) -> None:
        self._preparing.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("readying an item to go again failed; it went as it was", exc_info=task.exception())

    def close(self) -> None:
        """The stream ended: stop ``items`` wherever it waits."""
        for task in list(self._preparing):
            task.cancel()
        self._closed = True
        self._wake.set()
        self._window.release()
