"""contract.wire: requests written by hand with their image passed through parse as the messages they stand for."""

from __future__ import annotations

import pytest

from ringserve.contract import wire
from ringserve.contract.v1 import inference_pb2 as pb


def _request(i: int) -> pb.ImageRequest:
    return pb.ImageRequest(request_id=f"r{i}", model="m", phash_hint=(1 << 64) - 1 - i, top_k=3, timeout_ms=250,
                           cache_policy=pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL, max_distance=4),
                           trace_context={"traceparent": f"00-{i:032x}-{i:016x}-01"})


def _with_image(request: pb.ImageRequest, image: bytes) -> pb.ImageRequest:
    full = pb.ImageRequest()
    full.CopyFrom(request)
    full.image = image
    return full


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 300_001])
def test_a_request_parses_as_the_same_message(size: int) -> None:
    image = bytes(i % 251 for i in range(size))
    request = _request(size)
    assert pb.ImageRequest.FromString(wire.encode_request(request, image)) == _with_image(request, image)


def test_a_frame_parses_as_the_same_frame_item_for_item() -> None:
    items = [(_request(i), bytes([i]) * (i * 1000)) for i in range(6)]
    frame = pb.ItemFrame.FromString(wire.encode_frame(items))
    assert list(frame.items) == [_with_image(r, img) for r, img in items]
    assert pb.ItemFrame.FromString(wire.encode_frame([])) == pb.ItemFrame()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32 - 1, 2**63])
def test_varint_round_trips_through_protobuf(value: int) -> None:
    # timeout_ms is a uint32 and phash_hint a fixed64: read a varint back through a uint64-typed path.
    encoded = b"\x30" + wire.varint(value)  # field 6 (top_k) is a varint field
    if value < 2**32:
        assert pb.ImageRequest.FromString(encoded).top_k == value
    else:
        assert len(wire.varint(value)) == (value.bit_length() + 6) // 7


def test_the_one_backoff_doubles_to_its_ceiling_with_jitter_down_by_half():
    from ringserve.contract.backoff import backoff_s

    for retry, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)):
        waits = [backoff_s(retry, 0.1, 0.5) for _ in range(200)]
        assert all(ceiling * 0.5 <= w <= ceiling for w in waits), (retry, min(waits), max(waits))
        assert max(waits) - min(waits) > ceiling * 0.2  # jittered, not in step
