"""contract.wire, contract.frames and contract.tensor: what goes on the wire parses as the messages it
stands for, items share a frame by one rule, and a reply's tensor reads back as the values sent."""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest

from ringserve.contract import frames, wire
from ringserve.contract.tensor import from_array, to_array
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


MB = 1024 * 1024


def _packed(sizes: list[int], not_ready_after: set[int] = frozenset()) -> list[list[str]]:
    """The request ids of each frame ``frames.pack`` makes of items with images of ``sizes`` bytes, the sender
    having nothing more ready after taking the items numbered (from 1) in ``not_ready_after``."""
    taken = 0

    async def items():
        nonlocal taken
        for i, size in enumerate(sizes):
            taken = i + 1
            yield _request(i), bytes(size)

    async def run() -> list[list[str]]:
        return [[item.request_id for item in pb.ItemFrame.FromString(frame).items]
                async for frame in frames.pack(items(), ready=lambda: taken not in not_ready_after)]

    return asyncio.run(run())


@pytest.mark.parametrize("sizes, not_ready_after, expected", [
    ([10, 20, 30], set(), [["r0", "r1", "r2"]]),  # everything ready at once: one frame
    ([10, 20, 30], {1}, [["r0"], ["r1", "r2"]]),  # nothing more ready: the frame leaves as it is
    ([MB + MB // 2] * 5, set(), [["r0", "r1"], ["r2", "r3"], ["r4"]]),  # never past FRAME_BYTES
    ([MB] * 5, set(), [["r0", "r1", "r2", "r3"], ["r4"]]),  # closed once it holds FRAME_BYTES
    ([4 * MB], set(), [["r0"]]),  # exactly a frame's worth
    ([5 * MB, 10], set(), [["r0"], ["r1"]]),  # an image bigger than a frame opens one and fills it alone
    ([10, 5 * MB, 10], set(), [["r0"], ["r1"], ["r2"]]),  # ... and never joins a frame it would overflow
    ([], set(), []),
])
def test_frames_hold_what_is_ready_up_to_frame_bytes(sizes, not_ready_after, expected) -> None:
    assert _packed(sizes, not_ready_after) == expected


def test_a_frame_of_items_without_images_closes_at_frame_items() -> None:
    """Digest-only items carry no image: their count, not their bytes, bounds the frame."""
    packed = _packed([0] * (2 * frames.FRAME_ITEMS + 1))
    assert [len(frame) for frame in packed] == [frames.FRAME_ITEMS, frames.FRAME_ITEMS, 1]


def test_a_server_accepts_a_whole_frame_and_its_largest_image_alone() -> None:
    """A frame of small images before a near-limit one once reached FRAME_BYTES + one image, over the servers'
    receive limit (image limit + 1 MiB): the whole frame was refused, not the one item."""
    big = 20 * MB
    sizes = [2 * 1024] * 1000 + [big - 1]
    largest = max(sum(sizes[int(r[1:])] for r in frame) for frame in _packed(sizes))
    assert largest <= frames.receive_limit(big) - frames.MESSAGE_OVERHEAD_BYTES
    assert frames.receive_limit(1024) > frames.FRAME_BYTES  # a small image limit still takes a whole frame


def test_a_window_closes_the_frame_when_it_has_no_room() -> None:
    """The client's packing: every item its window lets go at once, and the next frame waits for room."""

    async def run() -> tuple[list[str], bool]:
        window = asyncio.Semaphore(3)

        async def released():
            for i in range(5):
                await window.acquire()
                yield _request(i), b"x"

        packed = frames.pack(released(), ready=lambda: not window.locked())
        first = pb.ItemFrame.FromString(await anext(packed))
        second = asyncio.ensure_future(anext(packed))
        await asyncio.sleep(0.01)
        waiting = not second.done()
        second.cancel()
        return [item.request_id for item in first.items], waiting

    assert asyncio.run(run()) == (["r0", "r1", "r2"], True)


def test_an_item_queued_in_the_next_turn_of_the_loop_joins_the_frame() -> None:
    """A frame lingers one loop turn: an item put by a callback the loop runs in that turn (a caller woken by the
    last reply) goes in the same frame; one put a turn later starts the next frame."""

    async def run(turns: int) -> list[list[str]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def items():
            for _ in range(2):
                yield await queue.get()

        def put_after(n: int) -> None:  # r1 is put by the n-th callback in a chain, one per loop turn
            if n > 1:
                loop.call_soon(put_after, n - 1)
            else:
                queue.put_nowait((_request(1), b"y"))

        queue.put_nowait((_request(0), b"x"))
        packed = frames.pack(items(), ready=lambda: not queue.empty())
        loop.call_soon(put_after, turns)
        out = []
        async for frame in packed:
            out.append([item.request_id for item in pb.ItemFrame.FromString(frame).items])
        return out

    assert asyncio.run(run(1)) == [["r0", "r1"]]
    assert asyncio.run(run(2)) == [["r0"], ["r1"]]


def test_singles_send_one_item_per_message() -> None:
    async def run() -> list[pb.ImageRequest]:
        async def items():
            for i in range(3):
                yield _request(i), bytes([i]) * 3

        return [pb.ImageRequest.FromString(m) async for m in frames.singles(items())]

    assert asyncio.run(run()) == [_with_image(_request(i), bytes([i]) * 3) for i in range(3)]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_a_tensor_reads_back_as_the_values_sent_in_native_byte_order(dtype: str) -> None:
    sent = np.arange(12, dtype=dtype).reshape(3, 4) / 7
    tensor = pb.Tensor(data=sent.astype(sent.dtype.newbyteorder("<")).tobytes(), dtype=dtype, shape=sent.shape)
    got = to_array(tensor)
    assert got.dtype == np.dtype(dtype) and got.dtype.byteorder in ("=", "|", "<" if sys.byteorder == "little" else ">")
    np.testing.assert_array_equal(got, sent)
    assert got.flags.writeable  # a copy, not a view of the message's bytes
    as_half = to_array(tensor, np.float16)
    assert as_half.dtype == np.float16 and np.array_equal(as_half, sent.astype(np.float16))


@pytest.mark.parametrize("order", ["<", ">"])
def test_an_array_written_as_a_tensor_is_little_endian_on_the_wire_and_reads_back_the_same(order: str) -> None:
    values = (np.arange(6, dtype=np.float32) / 3).astype(np.dtype(np.float32).newbyteorder(order))
    tensor = from_array(values)
    assert tensor.dtype == "float32" and list(tensor.shape) == [6]
    assert tensor.data == values.astype("<f4").tobytes()
    np.testing.assert_array_equal(to_array(tensor), values)
