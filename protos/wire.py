"""Requests on the wire with their image bytes passed through, never re-encoded.

A router forwards an item's image untouched: it needs only the item's id, hint,
model and policy. Building an ``ItemFrame`` message and serialising it costs
upb two copies of every image (31 and 63 microseconds per 100 KB item, measured
here; 225 and 151 at 666 KB), more than the rest of the router's work on an
item. Protobuf's wire format lets a message be written as the concatenation of
its fields in any order, so an item is its other fields serialised (a few dozen
bytes) followed by the image field written by hand, and a frame is its items,
each written as a length-delimited field. The result parses as the same
``ImageRequest`` / ``ItemFrame`` on any protobuf implementation. Which items share
a frame, and the message limits, are ``contract.frames``.
"""

from __future__ import annotations

from typing import Any

from ringserve.contract.v1 import inference_pb2 as pb

# Field numbers from protos/ringserve/v1/inference.proto, checked against the descriptors at import.
_IMAGE_FIELD = 2  # ImageRequest.image
_ITEMS_FIELD = 1  # ItemFrame.items
_LENGTH_DELIMITED = 2
if (pb.ImageRequest.DESCRIPTOR.fields_by_name["image"].number, pb.ItemFrame.DESCRIPTOR.fields_by_name["items"].number) \
        != (_IMAGE_FIELD, _ITEMS_FIELD):
    raise ImportError("ringserve/v1/inference.proto renumbered ImageRequest.image or ItemFrame.items; "
                      "update protos/wire.py")
_IMAGE_TAG = bytes([_IMAGE_FIELD << 3 | _LENGTH_DELIMITED])
_ITEMS_TAG = bytes([_ITEMS_FIELD << 3 | _LENGTH_DELIMITED])


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def request_parts(request: pb.ImageRequest, image: bytes) -> list[bytes]:
    """The wire form of ``request`` with ``image`` as its image, as pieces to join.

    Args:
        request: every field but the image (its own ``image`` must be empty).
        image: the image bytes, written as they are.
    Returns:
        Byte strings whose concatenation is a serialised ``ImageRequest``.
    """
    return [request.SerializeToString(), _IMAGE_TAG, varint(len(image)), image]


def encode_request(request: pb.ImageRequest, image: bytes) -> bytes:
    """A serialised ``ImageRequest``: ``request``'s fields with ``image`` as its image."""
    return b"".join(request_parts(request, image))


def encode_frame(items: list[tuple[pb.ImageRequest, bytes]]) -> bytes:
    """A serialised ``ItemFrame`` of ``(request without image, image)`` pairs; the images are copied once."""
    parts: list[bytes] = []
    for request, image in items:
        item = request_parts(request, image)
        parts += [_ITEMS_TAG, varint(sum(len(p) for p in item)), *item]
    return b"".join(parts)


def item_calls(channel: Any) -> dict[tuple[str, bool], Any]:
    """The item streams of ``channel`` (a ``grpc.aio.Channel``) that send bytes written here.

    Returns:
        ``(method, framed) -> stream_stream`` callable, for method "Extract" or "Classify" and framed
        (``ExtractFrames``/``ClassifyFrames``) or not; replies are parsed as usual.
    """
    calls = {}
    for method, reply, frame in (("Extract", pb.ExtractReply, pb.ExtractFrame),
                                 ("Classify", pb.ClassifyReply, pb.ClassifyFrame)):
        for framed in (True, False):
            calls[method, framed] = channel.stream_stream(
                f"/{pb.DESCRIPTOR.package}.Inference/{method}{'Frames' if framed else ''}",
                request_serializer=_as_is, response_deserializer=(frame if framed else reply).FromString)
    return calls


def _as_is(message: bytes) -> bytes:
    return message
