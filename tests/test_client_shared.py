"""The client's shared stream (client/shared.py): every call's items on one long-lived stream per method, each
with its call's own deadline, against the counting fake Inference server of test_client_digest; and a server's
edge that takes an item's own deadline (``timeout_ms``) as the item's, as a router must for such a client."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from ringserve.client import AsyncClient, DeadlineExceeded, RingserveError, digests
from ringserve.client.inputs import hint
from ringserve.client.placement import Membership
from ringserve.client.shared import SharedStreams
from ringserve.contract import fingerprint
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.runtime.edge import EXTRACT, Admission, ItemEdge
from tests.fakes import serving
from tests.test_client_digest import IMAGES, FakeServer, client, expected, vectors


@dataclass
class RecordingServer(FakeServer):
    """The fake, also keeping each item's ``timeout_ms`` and refusing its next ``refuse`` streams outright."""

    timeouts: list[int] = field(default_factory=list)
    refuse: int = 0

    def answer(self, request, reply_type):
        self.timeouts.append(request.timeout_ms)
        return super().answer(request, reply_type)

    async def ExtractFrames(self, request_iterator, context):
        if self.refuse:
            self.refuse -= 1
            self.streams += 1
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not this caller")
        async for frame in super().ExtractFrames(request_iterator, context):
            yield frame


@pytest.mark.parametrize("shared", [True, False])
async def test_calls_made_at_once_share_one_stream_and_each_gets_its_own_answers(shared):
    fake = RecordingServer()
    async with serving(fake) as target, client(target, digest_first_min_bytes=None, shared_stream=shared) as c:
        singles = await asyncio.gather(*(c.extract_detailed([image]) for image in IMAGES * 2))
        later = await c.extract_detailed(IMAGES[::-1])
    assert [vectors(r) for r in singles] == [[v] for v in expected(IMAGES * 2)]
    assert vectors(later) == expected(IMAGES[::-1])
    assert len(set(expected(IMAGES))) == len(IMAGES)  # the answers tell the images apart
    # one stream for 25 calls; a stream per call without it
    assert fake.streams == (1 if shared else len(IMAGES) * 2 + 1)


async def test_each_item_carries_its_own_calls_remaining_deadline():
    fake = RecordingServer()
    async with serving(fake) as target:
        async with client(target, digest_first_min_bytes=None, timeout_s=20) as c:
            await c.extract_detailed(IMAGES[:3])
            await c.extract_detailed(IMAGES[3:6], timeout_s=2)
        async with client(target, digest_first_min_bytes=None, timeout_s=None) as c:
            await c.extract_detailed(IMAGES[6:8])
    assert all(15_000 < t <= 20_000 for t in fake.timeouts[:3]), fake.timeouts
    assert all(1_000 < t <= 2_000 for t in fake.timeouts[3:6]), fake.timeouts
    assert fake.timeouts[6:] == [0, 0]  # no deadline, none sent


async def test_a_call_past_its_deadline_leaves_the_others_on_the_stream_answered():
    fake = RecordingServer(never_answer_images=True)
    async with serving(fake) as target, client(target, timeout_s=20) as c:
        fake.cache[(fingerprint.digest(IMAGES[0]), len(IMAGES[0]))] = b"\1\2"  # a hit by digest; the rest hang
        started = time.monotonic()
        late, hit = await asyncio.gather(c.extract_detailed(IMAGES[1:4], timeout_s=0.5),
                                         c.extract_detailed(IMAGES[:1]))
        took = time.monotonic() - started
        after = await c.extract_detailed(IMAGES[:1])  # the stream outlives the call that timed out
    assert all(isinstance(r, DeadlineExceeded) for r in late), late
    assert hit[0].vector.tolist() == [1, 2] and after[0].vector.tolist() == [1, 2]
    assert took < 10
    assert fake.streams == 1


async def test_a_stream_refused_outright_answers_its_items_with_the_refusal_and_the_next_call_opens_another():
    fake = RecordingServer(refuse=1)
    async with serving(fake) as target, client(target, digest_first_min_bytes=None) as c:
        refused = await c.extract_detailed(IMAGES[:3])
        answered = await c.extract_detailed(IMAGES[:3])
    assert [type(r) for r in refused] == [RingserveError] * 3, refused
    assert {r.code for r in refused} == {grpc.StatusCode.PERMISSION_DENIED}
    assert "not this caller" in str(refused[0])
    assert vectors(answered) == expected(IMAGES[:3])
    assert fake.streams == 2


async def test_a_server_without_frames_gets_every_call_one_item_per_message():
    fake = RecordingServer(frames=False)
    async with serving(fake) as target, client(target, digest_first_min_bytes=None) as c:
        first = await c.extract_detailed(IMAGES[:4])
        second = await asyncio.gather(*(c.extract_detailed([image]) for image in IMAGES[4:8]))
    assert vectors(first) + [v for r in second for v in vectors(r)] == expected(IMAGES[:8])
    # the shared frame stream refused once (UNIMPLEMENTED: not counted), then a stream per call, unframed
    assert fake.streams == 5


async def test_a_traced_call_keeps_a_stream_of_its_own():
    fake = RecordingServer()
    tracer = TracerProvider().get_tracer("test")
    async with serving(fake) as target, client(target, digest_first_min_bytes=None) as c:
        await c.extract_detailed(IMAGES[:2])
        with tracer.start_as_current_span("caller"):
            traced = await c.extract_detailed(IMAGES[2:4])
        await c.extract_detailed(IMAGES[4:6])
    assert vectors(traced) == expected(IMAGES[2:4])
    assert fake.streams == 2  # the shared one, and the traced call's own (its trace in the metadata)


async def test_a_reply_that_cannot_be_taken_ends_the_try_with_that_error():
    # ``take`` runs in a future's callback, where an exception would only be logged: the try must raise it instead.
    fake = RecordingServer()

    async def items():
        yield pb.ImageRequest(request_id="mine"), IMAGES[0]

    def take(reply):
        raise RuntimeError(f"cannot take {reply.request_id}")

    async with serving(fake) as target, client(target, digest_first_min_bytes=None) as c:
        shared = SharedStreams(c._calls)
        with pytest.raises(RuntimeError, match="cannot take mine"):
            await shared.carry("Extract", items(), take, 10)
        await shared.close()
    assert fake.streams == 1


def _members(target: str, *names: str) -> cpb.MembersReply:
    return cpb.MembersReply(load_factor=1.25, members=[
        cpb.Member(name=n, address=target, weight=1, state=cpb.MEMBER_STATE_SERVING) for n in names])


async def _one_item(image: bytes):
    yield pb.ImageRequest(request_id="x"), image


async def test_a_departed_nodes_shared_stream_is_closed_once_idle_or_when_the_client_closes():
    fake = RecordingServer(never_answer_images=True)  # an item with its image waits for ever: held in flight
    async with serving(fake) as target:
        channel = grpc.aio.insecure_channel(target)
        membership = Membership(channel, grpc.aio.insecure_channel, interval_s=60)
        membership._apply(_members(target, "a", "b", "c"), 0.0)
        a, b, c = (membership.routes[n] for n in "abc")
        fake.cache[(fingerprint.digest(IMAGES[0]), len(IMAGES[0]))] = b"\1\2"
        named = pb.ImageRequest(request_id="x")
        digests.name(named, fingerprint.digest(IMAGES[0]), len(IMAGES[0]))

        async def answered():  # a digest hit: answered at once
            yield named, b""

        await a.shared.carry("Extract", answered(), lambda _r: None, 5)
        await c.shared.carry("Extract", answered(), lambda _r: None, 5)
        held = asyncio.ensure_future(b.shared.carry("Extract", _one_item(IMAGES[1]), lambda _r: None, None))
        while not b.shared.inflight:
            await asyncio.sleep(0.01)
        (sa,), (sb,), (sc,) = (list(r.shared._streams.values()) for r in (a, b, c))
        membership._apply(_members(target, "c"), 0.0)  # a (idle) and b (an item in flight) depart
        for _ in range(200):
            if sa.closed:
                break
            await asyncio.sleep(0.01)
        assert sa.closed and not sb.closed and not sc.closed  # b waits for its item, up to the grace
        await membership.close()
        assert all(s.closed and s._task.done() for s in (sa, sb, sc))
        with pytest.raises(grpc.aio.AioRpcError):
            await held  # its stream closed under it: UNAVAILABLE, sent again by its call
        await channel.close()


async def test_a_learned_placement_key_places_the_bytes_but_is_never_their_hint():
    async with AsyncClient("127.0.0.1:9", placement="client") as c:  # never dialled
        data = IMAGES[0]
        request = pb.ImageRequest(request_id="0")
        digests.name(request, fingerprint.digest(data), len(data))
        c._learn_key(request, 12345)  # a key a router may have made of the digest
        later = pb.ImageRequest()
        later.CopyFrom(request)
        assert c._key_of(later, True) == 12345 and later.phash_hint == 12345
        assert c._key_of(request, False) is None  # a call without hints places nothing itself
        # the bytes' hint is still their pHash (and, once known, it places them rather than the learned key)
        assert hint(data, c._hints) == fingerprint.phash_bytes(data) != 12345
        assert c._key_of(request, True) == fingerprint.phash_bytes(data)


class _Recorder(ItemEdge):
    """An edge whose items record the deadline they were given."""

    def __init__(self) -> None:
        super().__init__("node t", "node", Admission("node t", 8, "wait"), None, False, lambda _name: None)
        self.deadlines: list[float | None] = []

    async def answer(self, request, method, deadline, span):
        self.deadlines.append(deadline)
        return method.reply(request_id=request.request_id)


@pytest.mark.fast
async def test_an_items_own_deadline_bounds_it_at_the_edge_with_the_calls():
    edge = _Recorder()
    now = time.monotonic()
    await edge.item(pb.ImageRequest(request_id="a", timeout_ms=1500), EXTRACT)  # no call deadline: the item's
    await edge.item(pb.ImageRequest(request_id="b", timeout_ms=1500), EXTRACT, deadline=now + 0.2)  # the call's
    await edge.item(pb.ImageRequest(request_id="c", timeout_ms=1500), EXTRACT, deadline=now + 60)  # the item's
    await edge.item(pb.ImageRequest(request_id="d"), EXTRACT, deadline=now + 60)  # none of its own: the call's
    await edge.item(pb.ImageRequest(request_id="e"), EXTRACT)
    a, b, c, d, e = edge.deadlines
    assert now + 1.4 < a < now + 1.6 + 5 and c == pytest.approx(a, abs=1)
    assert (b, d, e) == (now + 0.2, now + 60, None)
