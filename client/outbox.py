"""What one item stream sends, in the order it leaves: at most ``window`` items unanswered at a time.

An item the server answered ``image_required`` goes again with its image ahead of the items not yet
sent, so a miss costs its item one round trip more, not a place at the back of the queue. The sending
side of the stream stays open while any item sent digest-only awaits its answer (that answer may ask
for the image), and ends once none does and nothing is left to send.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from ringserve.contract import frames
from ringserve.contract.v1 import inference_pb2 as pb


class Outbox:
    """The items of one stream and the window they share.

    ``outgoing(request)`` says what goes as its image now and whether that is digest-only (no image).
    """

    def __init__(self, items: list[pb.ImageRequest], outgoing: Callable[[pb.ImageRequest], tuple[bytes, bool]],
                 window: int) -> None:
        self._fresh = deque(items)
        self._again: deque[pb.ImageRequest] = deque()  # asked for their image: they leave first
        self._outgoing = outgoing
        self._window = asyncio.Semaphore(window)
        self._named: set[str] = set()  # sent digest-only on this stream, not answered yet
        self._wake = asyncio.Event()  # something to send, or nothing left to wait for
        self._closed = False

    async def items(self) -> AsyncIterator[frames.Item]:
        """Each item with what goes as its image, once the window has room; ends when nothing can follow."""
        while not self._closed:
            if not (self._again or self._fresh):
                if not self._named:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._window.acquire()
            if self._closed:
                return
            request = self._again.popleft() if self._again else self._fresh.popleft()
            image, named = self._outgoing(request)
            if named:
                self._named.add(request.request_id)
            yield request, image

    def ready(self) -> bool:
        """Whether ``items`` yields its next item, or ends, without waiting (``frames.pack`` closes a frame if not)."""
        if self._again or self._fresh:
            return not self._window.locked()
        return not self._named

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

    def close(self) -> None:
        """The stream ended: stop ``items`` wherever it waits."""
        self._closed = True
        self._wake.set()
        self._window.release()
