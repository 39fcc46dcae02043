"""Frames: which items travel together in one message, for every sender of items (client and router).

A sender of ``ExtractFrames``/``ClassifyFrames`` packs into one ``ItemFrame`` every item
it can send without waiting (the client: what its window lets go; the router's link:
what is queued for the node), and closes the frame once it holds ``FRAME_BYTES`` of
images. An image is never split and never refused here: an item bigger than a frame
goes in the frame it opens, or closes the frame it joins (the receiver's image limit
is what refuses an image too big). A sender whose server serves no frames sends the
same items one per message (``singles``). The messages are written by
``contract.wire``, so an image is copied once and never re-encoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from ringserve.contract import wire
from ringserve.contract.v1 import inference_pb2 as pb

# Images per frame, in bytes: a frame is closed once it holds this much, well under gRPC's message limits.
FRAME_BYTES = 4 * 1024 * 1024
# gRPC's message limit on the item channels of client and router (one image is at most the server's image
# limit, 20 MB by default; a frame, FRAME_BYTES plus its last image).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# An item to send: its request without the image, and the image bytes beside it.
Item = tuple[pb.ImageRequest, bytes]


async def pack(items: AsyncIterator[Item], ready: Callable[[], bool]) -> AsyncIterator[bytes]:
    """Serialised ``ItemFrame``s of ``items``, each closed at ``FRAME_BYTES`` or when the next item is not ready.

    Args:
        items: the items in sending order; waits for the first of each frame, then is asked for more
            only while ``ready()``.
        ready: whether ``items`` yields its next item (or ends) without waiting.
    """
    frame: list[Item] = []
    size = 0
    async for item in items:
        frame.append(item)
        size += len(item[1])
        if size >= FRAME_BYTES or not ready():
            yield wire.encode_frame(frame)
            frame, size = [], 0
    if frame:
        yield wire.encode_frame(frame)


async def singles(items: AsyncIterator[Item]) -> AsyncIterator[bytes]:
    """Serialised ``ImageRequest``s of ``items``, one per message: for a server that serves no frames."""
    async for request, image in items:
        yield wire.encode_request(request, image)
