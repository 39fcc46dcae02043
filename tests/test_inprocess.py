"""The fast tier: the node's and the router's real servicers in this process, with a fake model.

No child processes and no Redis (an L2 in memory stands in): each test walks one
step of the request path, or forces one interleaving or one failure, and asserts
what the caller sees.
"""

from __future__ import annotations

import asyncio
import functools
import threading

import grpc
import pytest

from ringserve.contract import codec, fingerprint
from ringserve.contract.images import ImageLimits
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.imagegen import jpeg
from ringserve.router.config import PlacementConfig
from ringserve.router.link import LinkError, NodeLink
from ringserve.router.membership.base import Member
from ringserve.runtime.edge import CLASSIFY, EXTRACT
from ringserve.runtime.streams import ItemStreams
from ringserve.server.batcher import BatcherConfig
from ringserve.server.keys import Namespace, exact_digest
from ringserve.server.l2 import Pointer
from ringserve.server.servicer import InferenceServicer
from ringserve.server.settings import CacheMode, PolicyConfig
from tests.fakes import (
    FakeModel,
    MemoryL2,
    extract,
    metric_total,
    node_servicer,
    router_servicer,
    serving,
    start_batchers,
    wait_until,
)

INTERNAL = grpc.StatusCode.INTERNAL.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def one(node: InferenceServicer, image: bytes, method: str = "extract", **fields) -> object:
    """One item through the node's request path, as its stream engine would hand it over."""
    request = pb.ImageRequest(request_id="x", image=image, **fields)
    return await node.item(request, EXTRACT if method == "extract" else CLASSIFY)


async def test_a_node_handler_that_raises_answers_its_item_internal_and_the_stream_goes_on():
    node = node_servicer(FakeModel())
    start_batchers(node)
    real = node.item

    async def item(request, **kwargs):
        if request.request_id == "boom":
            raise KeyError("injected")
        return await real(request, **kwargs)

    node.item = item
    async with serving(node) as target:
        replies = await extract(target, [jpeg(1), jpeg(2), jpeg(3)], ids=["a", "boom", "c"], timeout_s=10)
    assert replies["boom"].status.code == INTERNAL
    assert "KeyError" in replies["boom"].status.message and "injected" in replies["boom"].status.message
    assert replies["a"].status.code == 0 and replies["c"].status.code == 0
    assert metric_total(node.metrics.provider, "ringserve.internal_errors", type="KeyError") == 1


async def test_a_router_handler_that_raises_answers_its_item_internal_and_the_stream_goes_on():
    node = node_servicer(FakeModel())
    start_batchers(node)
    async with serving(node) as node_target:
        router = await router_servicer({"n0": node_target})
        real = router.key_of
        poison = jpeg(2)

        async def key_of(request):
            if request.image == poison:
                raise KeyError("ring and peers disagree")
            return await real(request)

        router.key_of = key_of
        async with serving(router) as target:
            replies = await extract(target, [jpeg(1), poison, jpeg(3)], timeout_s=10)
        await router.registry.close()
    assert replies["1"].status.code == INTERNAL and "KeyError: 'ring and peers disagree'" in replies["1"].status.message
    assert replies["0"].status.code == 0 and replies["2"].status.code == 0
    assert metric_total(router.metrics.provider, "ringserve.router.errors", reason="internal", type="KeyError") == 1


class _StreamContext:
    """The part of a grpc.aio servicer context the stream engine uses: the call's final status."""

    code: grpc.StatusCode | None = None
    details = ""

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted {code}: {details}")


async def test_a_stream_opened_as_the_drain_begins_ends_at_once_not_after_the_grace():
    # The interleaving: a call registers its stream and creates its reader, and the drain cancels that
    # reader before the reader's first step, so nothing inside the reader ever runs.
    streams = ItemStreams("node t")
    read: list[str] = []

    async def requests():
        read.append("started")
        yield pb.ImageRequest(request_id="never-admitted", image=jpeg(1))

    async def handle(request: pb.ImageRequest) -> pb.ExtractReply:
        return pb.ExtractReply(request_id=request.request_id)

    context = _StreamContext()
    replies = streams.serve(requests(), context, handle, pb.ExtractReply)
    first = asyncio.ensure_future(replies.__anext__())
    await asyncio.sleep(0)  # the call runs up to its first wait; its reader is queued and has not run
    assert streams.open_streams == 1 and read == []
    await streams.drain(timeout_s=5.0)
    assert streams.open_streams == 0, "the drain waited out its grace for a stream that had nothing to answer"
    assert read == [] and streams.received == 0
    try:
        await first
        raise AssertionError("the cut stream yielded a reply for an item it never read")
    except StopAsyncIteration:
        pass
    assert context.code == grpc.StatusCode.UNAVAILABLE and "draining" in context.details


async def test_an_item_on_a_link_closed_before_its_stream_first_ran_fails_over_instead_of_hanging():
    # A node leaves and its link closes in the same loop turn as an item opened a fresh stream to it:
    # the stream's task is cancelled before its first step, so nothing inside it ever runs.
    link = NodeLink(Member("gone", "127.0.0.1:1"))
    future = link.send("Extract", pb.ImageRequest(model="m"), jpeg(1))
    assert link.inflight == 1
    await link.close()
    try:
        await asyncio.wait_for(future, 5.0)
        raise AssertionError("a stream that never ran answered an item")
    except LinkError as exc:
        assert "gone Extract: stream closed" in str(exc)
    assert link.inflight == 0


async def test_the_ring_is_the_registrys_members_on_the_ring_in_the_same_loop_turn():
    """The ring is derived from the registry alone: a member that leaves, is ejected or is admitted again is
    on or off the ring before any other item can be placed, so no name on the ring lacks an entry."""
    node = node_servicer(FakeModel())
    start_batchers(node)
    async with serving(node) as node_target:
        router = await router_servicer({"n0": node_target, "n1": node_target})
        registry = router.registry
        assert set(registry.ring.members) == {"n0", "n1"}
        registry.update([Member("n0", node_target)])
        assert set(registry.ring.members) == {"n0"} and registry.get("n1") is None
        router.health.eject(registry.get("n0").health, "a test")
        assert len(registry.ring) == 0 and registry.pick(1, (), 10) is None
        router.health.admit(registry.get("n0").health)
        assert [n.name for n in registry.serving()] == ["n0"]
        async with serving(router) as target:
            replies = await extract(target, [jpeg(i) for i in range(20)], timeout_s=10)
        await registry.close()
    assert all(r.status.code == 0 and r.provenance.node == "fake-node" for r in replies.values())


async def test_an_internal_value_error_is_internal_not_the_callers_fault():
    node = node_servicer(FakeModel(fail=ValueError("operands could not be broadcast together")))
    start_batchers(node)
    reply = await one(node, jpeg(1))
    assert reply.status.code == INTERNAL and "ValueError: operands could not" in reply.status.message


@pytest.mark.parametrize("timeout_ms", [0, 60_000])
async def test_a_timeout_error_that_is_not_the_items_deadline_is_the_nodes_failure(timeout_ms):
    """Only the item's own deadline is DEADLINE_EXCEEDED; a TimeoutError from inside the node is INTERNAL."""
    node = node_servicer(FakeModel(fail=TimeoutError("a socket inside the model timed out")))
    start_batchers(node)
    reply = await one(node, jpeg(1), timeout_ms=timeout_ms)
    assert reply.status.code == INTERNAL and "TimeoutError: a socket inside" in reply.status.message


async def test_caller_mistakes_map_to_their_own_codes():
    node = node_servicer(FakeModel())
    start_batchers(node)
    bad = await one(node, b"not an image")
    assert bad.status.code == INVALID_ARGUMENT and bad.status.message.startswith("bad image:")
    too_many = await one(node, jpeg(1), method="classify", top_k=10_000)
    assert too_many.status.code == INVALID_ARGUMENT and "top_k 10000" in too_many.status.message
    too_far = await one(node, jpeg(1), cache_policy=pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL, max_distance=9))
    assert too_far.status.code == INVALID_ARGUMENT and "radius 9" in too_far.status.message
    unknown = await one(node, jpeg(1), model="resnet9000")
    assert unknown.status.code == NOT_FOUND and "resnet9000" in unknown.status.message


async def test_a_miss_that_enters_the_flight_after_another_computed_the_bytes_reads_l1_not_the_model():
    model = FakeModel()
    node = node_servicer(model)
    start_batchers(node)
    image = jpeg(7)
    release = asyncio.Event()
    real = node.cache._prepare
    calls = 0

    async def prepare(*args):
        nonlocal calls
        calls += 1
        if calls == 1:  # the first request has missed L1; hold it until the second has computed
            await release.wait()
        return await real(*args)

    node.cache._prepare = prepare
    first = asyncio.ensure_future(one(node, image))
    await wait_until(lambda: calls == 1)
    second = await one(node, image)
    assert second.status.code == 0 and second.provenance.source == pb.SOURCE_COMPUTED
    release.set()
    late = await first
    assert late.status.code == 0 and late.provenance.source == pb.SOURCE_L1
    assert late.feature.data == second.feature.data
    assert model.images == 1


async def test_an_item_whose_deadline_passes_in_the_queue_never_reaches_the_model():
    gate = threading.Event()
    model = FakeModel(gate=gate)
    node = node_servicer(model, batcher=BatcherConfig(max_batch=1, max_delay_ms=0.0))
    start_batchers(node)
    try:
        running = asyncio.ensure_future(one(node, jpeg(1)))
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 10)  # the model is busy
        late = await one(node, jpeg(2), timeout_ms=100)  # queued behind it
        assert late.status.code == DEADLINE_EXCEEDED
    finally:
        gate.set()
    assert (await running).status.code == 0
    batcher = node.slots[model.name].batcher
    await wait_until(lambda: batcher.depth == 0)
    await asyncio.sleep(0.05)
    assert model.images == 1 and batcher.items == 1


async def test_items_over_a_nodes_share_wait_at_the_router_and_all_are_served():
    gate = threading.Event()
    model = FakeModel(gate=gate)
    node = node_servicer(model, batcher=BatcherConfig(max_batch=1, max_delay_ms=0.0))
    start_batchers(node)
    async with serving(node) as node_target:
        router = await router_servicer({"n0": node_target}, placement=PlacementConfig(max_node_inflight=2))
        async with serving(router) as target:
            sending = asyncio.ensure_future(extract(target, [jpeg(100 + i) for i in range(6)], timeout_s=20))
            try:
                await wait_until(lambda: router.registry.waiting == 4 and node.streams.received == 2)
                await asyncio.sleep(0.1)
                assert node.streams.received == 2  # the node holds this router's share, the rest wait here
            finally:
                gate.set()
            replies = await sending
        await router.registry.close()
    assert len(replies) == 6 and all(r.status.code == 0 for r in replies.values())
    assert model.images == 6 and router.registry.waiting == 0


def two_nodes_sharing_l2() -> tuple[FakeModel, MemoryL2, InferenceServicer, InferenceServicer]:
    """Two started nodes with their own L1, one model (counting for both) and one L2 between them."""
    shared = MemoryL2()
    model = FakeModel()
    # The verifier's threshold these small pictures' re-encodings pass (docs/fidelity.md: 60 dB for photos).
    policy = PolicyConfig(verify_min_psnr=40)
    first, second = node_servicer(model, "a", l2=shared, policy=policy), node_servicer(model, "b", l2=shared,
                                                                                      policy=policy)
    start_batchers(first)
    start_batchers(second)
    return model, shared, first, second


async def test_the_request_path_step_by_step_computed_l1_l2_and_redis_down():
    model, shared, first, second = two_nodes_sharing_l2()
    image, other = jpeg(300), jpeg(301)
    computed = await one(first, image)
    assert computed.provenance.source == pb.SOURCE_COMPUTED and model.images == 1
    assert (await one(first, image)).provenance.source == pb.SOURCE_L1  # these bytes, this node's memory
    from_l2 = await one(second, image)  # another node: its L1 is empty, the shared L2 holds it
    assert from_l2.provenance.source == pb.SOURCE_L2 and from_l2.feature.data == computed.feature.data
    assert (await one(second, image)).provenance.source == pb.SOURCE_L1  # kept in L1 on the way
    shared.down = True  # Redis away: a miss is computed, never an error
    alone = await one(second, other)
    assert alone.status.code == 0 and alone.provenance.source == pb.SOURCE_COMPUTED and model.images == 2
    assert alone.feature.data != computed.feature.data  # the fake's features tell images apart too
    # counted where Prometheus reads them (tallied in a dict on the hit path, observed at scrape time)
    assert metric_total(first.metrics.provider, "ringserve.cache.lookups", tier="l1", kind="exact", result="hit") == 1
    assert metric_total(second.metrics.provider, "ringserve.requests", method="extract", status="OK") == 3


async def test_a_perceptual_hit_is_kept_under_its_fingerprint_never_the_requesters_exact_key():
    model, _, first, second = two_nodes_sharing_l2()
    original, reencoded = jpeg(400, quality=95), jpeg(400, quality=60)
    near = pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL, max_distance=8)
    await one(first, original, cache_policy=near)  # an item that asks for perceptual reuse writes its fingerprint
    hit = await one(second, reencoded, cache_policy=near)
    assert hit.provenance.source == pb.SOURCE_L2 and hit.provenance.perceptual
    exact = await one(second, reencoded)  # exact-only: the neighbour's feature must not answer it
    assert exact.provenance.source == pb.SOURCE_COMPUTED and model.images == 2


@pytest.mark.parametrize("policy, asks, writes_fingerprint", [
    (PolicyConfig(), pb.CACHE_MODE_EXACT, False),  # the default deployment: the feature once, nothing else
    (PolicyConfig(), pb.CACHE_MODE_PERCEPTUAL, True),  # an item that asks for perceptual reuse
    (PolicyConfig(perceptual_index=True), pb.CACHE_MODE_EXACT, True),  # a deployment that writes every one
    (PolicyConfig(default_mode=CacheMode.PERCEPTUAL), pb.CACHE_MODE_EXACT, True),
])
async def test_a_miss_stores_its_feature_once_and_its_fingerprint_only_where_perceptual_reuse_is_used(
        policy, asks, writes_fingerprint):
    shared, model = MemoryL2(), FakeModel()
    node = node_servicer(model, "a", policy=policy, l2=shared)
    start_batchers(node)
    image = jpeg(410)
    reply = await one(node, image, cache_policy=pb.CachePolicy(mode=asks, max_distance=4))
    assert reply.status.code == 0 and reply.provenance.source == pb.SOURCE_COMPUTED
    ns = Namespace(model.name, model.version)
    phash = fingerprint.of_bytes(image, ImageLimits()).phash
    exact, pointer = ns.exact(exact_digest(image)), ns.perceptual(phash)
    assert set(shared.values) == ({exact, pointer} if writes_fingerprint else {exact})
    assert codec.decode(shared.values[exact], model.version).tobytes() == reply.feature.data
    assert bool(shared.fingerprints.get(ns)) is writes_fingerprint
    # L1 follows the same rule: the exact entry, and its perceptual twin only where perceptual reuse is used
    assert len(node.cache.l1) == (2 if writes_fingerprint else 1)
    if writes_fingerprint:  # a pointer to the exact key, not a second copy of the feature
        assert Pointer.decode(shared.values[ns.perceptual(phash)]).digest == exact_digest(image)
        other = node_servicer(model, "b", l2=shared, policy=PolicyConfig(verify_min_psnr=40))
        start_batchers(other)
        near = await one(other, jpeg(410, quality=60), cache_policy=pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL,
                                                                                     max_distance=8))
        assert near.provenance.source == pb.SOURCE_L2 and near.provenance.perceptual
        assert near.feature.data == reply.feature.data


async def test_a_fingerprint_whose_feature_expired_is_a_miss_and_is_pruned():
    model, shared, first, second = two_nodes_sharing_l2()
    near = pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL, max_distance=8)
    original = jpeg(420, quality=95)
    await one(first, original, cache_policy=near)
    ns = Namespace(model.name, model.version)
    del shared.values[ns.exact(exact_digest(original))]  # the feature expired before its fingerprint
    miss = await one(second, jpeg(420, quality=60), cache_policy=near)
    assert miss.provenance.source == pb.SOURCE_COMPUTED and model.images == 2
    phash = fingerprint.of_bytes(original, ImageLimits()).phash
    assert phash not in shared.fingerprints[ns]


async def test_a_repeated_image_without_a_hint_is_fingerprinted_once_by_the_router(monkeypatch):

    decoded = []
    real = fingerprint.of_bytes
    monkeypatch.setattr(fingerprint, "of_bytes", lambda data, limits: decoded.append(data) or real(data, limits))
    node = node_servicer(FakeModel())
    start_batchers(node)
    async with serving(node) as node_target:
        router = await router_servicer({"n0": node_target})
        async with serving(router) as target:
            replies = await extract(target, [jpeg(500)] * 5 + [jpeg(501)] * 3 + [b"junk"] * 2, timeout_s=10)
        await router.registry.close()
    assert [r.status.code for r in replies.values()].count(0) == 8  # the junk is the node's to refuse
    assert len(decoded) == 3  # one decode per distinct bytes, though all ten arrived together
    key = await router.key_of(pb.ImageRequest(image=jpeg(500)))  # a later repeat: from the memo
    assert key == real(jpeg(500), ImageLimits()).phash and len(decoded) == 3


async def extract_frames(target: str, frames: list[list[bytes]]) -> dict[str, pb.ExtractReply]:
    """Send ``frames`` (lists of images) on one ExtractFrames stream; the replies by id, one per item."""
    requests = [pb.ItemFrame(items=[pb.ImageRequest(request_id=f"{f}.{i}", image=image) for i, image in enumerate(frame)])
                for f, frame in enumerate(frames)]
    replies: dict[str, pb.ExtractReply] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        async for frame in pb_grpc.InferenceStub(channel).ExtractFrames(iter(requests), timeout=30):
            for reply in frame.items:
                assert reply.request_id not in replies, f"two replies for item {reply.request_id}"
                replies[reply.request_id] = reply
    return replies


async def test_frames_and_one_item_messages_get_the_same_answers_item_by_item_through_router_and_node():
    node = node_servicer(FakeModel())
    start_batchers(node)
    images = [jpeg(600 + i) for i in range(6)]
    async with serving(node) as node_target:
        router = await router_servicer({"n0": node_target})
        async with serving(router) as target:
            framed = await extract_frames(target, [images[:4], [b"not an image", *images[4:]]])
            single = await extract(target, images)  # an existing caller, one image per message
        framed_to_node = router.registry.get("n0").link.framed
        await router.registry.close()
    assert len(framed) == 7 and framed["1.0"].status.code == INVALID_ARGUMENT  # its own status, the rest go on
    by_image = [framed[f"0.{i}"] for i in range(4)] + [framed["1.1"], framed["1.2"]]
    assert all(r.status.code == 0 for r in by_image)
    assert [r.feature.data for r in by_image] == [single[str(i)].feature.data for i in range(6)]
    assert len({r.feature.data for r in by_image}) == 6
    assert framed_to_node  # the router spoke frames to the node


async def test_client_and_router_fall_back_to_one_item_per_message_for_a_node_without_frames():
    from ringserve.client import AsyncClient

    node = node_servicer(FakeModel())
    start_batchers(node)
    node.ExtractFrames = functools.partial(pb_grpc.InferenceServicer.ExtractFrames, node)  # as a node from before
    images = [jpeg(700 + i) for i in range(5)]
    async with serving(node) as node_target:
        async with AsyncClient(node_target) as client:
            direct = await client.extract_detailed(images)
            assert not client._framed
        router = await router_servicer({"n0": node_target})
        async with serving(router) as target, AsyncClient(target) as client:
            routed = await client.extract_detailed(images)
            assert client._framed  # the router serves frames; its link to the node does not use them
        link = router.registry.get("n0").link
        await router.registry.close()
    assert not link.framed
    assert [f.vector.tobytes() for f in direct] == [f.vector.tobytes() for f in routed]


# ---- what must not change (pinned here, in the fast tier) ------------------------------------------


async def test_a_spoofed_hint_never_becomes_a_perceptual_key():
    """B's bytes sent with A's fingerprint as their hint: B is computed and kept under B's own pHash, so a
    re-encoding of A is not served B's feature, and a re-encoding of B is (cache poisoning refused)."""

    # A deployment that keeps every feature findable by its fingerprint; the threshold small pictures pass.
    node = node_servicer(FakeModel(), l2=MemoryL2(), policy=PolicyConfig(verify_min_psnr=40, perceptual_index=True))
    start_batchers(node)
    a, b = jpeg(3, quality=95), jpeg(4, quality=95)
    perceptual = {"cache_policy": pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL, max_distance=6)}
    spoofed = await one(node, b, phash_hint=fingerprint.phash_bytes(a))
    assert spoofed.provenance.source == pb.SOURCE_COMPUTED
    near_a = await one(node, jpeg(3, quality=60), **perceptual)
    assert near_a.provenance.source == pb.SOURCE_COMPUTED and not near_a.provenance.perceptual
    near_b = await one(node, jpeg(4, quality=60), **perceptual)
    assert near_b.provenance.perceptual and near_b.feature.data == spoofed.feature.data


@pytest.mark.parametrize("bad", ["payload-shorter-than-shape", "wrong-length", "wrong-dtype", "other-version"])
async def test_a_stored_value_that_does_not_fit_is_a_miss_counted_corrupt(bad):
    import struct
    import zlib

    import numpy as np

    from ringserve.contract import codec
    from tests.fakes import FEATURE_DIM

    l2 = MemoryL2()
    model = FakeModel()
    node = node_servicer(model, l2=l2)
    start_batchers(node)
    image = jpeg(21)
    if bad == "payload-shorter-than-shape":  # a header that says 12 values over a payload of 11, checksum intact
        blob = bytearray(codec.encode(np.ones(FEATURE_DIM, np.float16), model.version))
        blob = blob[:-2]
        body = bytes(blob[codec._FIXED.size:])
        struct.pack_into("<I", blob, codec._FIXED.size - 4, zlib.crc32(body))
        blob = bytes(blob)
    elif bad == "wrong-length":
        blob = codec.encode(np.ones(FEATURE_DIM + 1, np.float16), model.version)
    elif bad == "wrong-dtype":
        blob = codec.encode(np.ones(FEATURE_DIM, np.float32), model.version)
    else:
        blob = codec.encode(np.ones(FEATURE_DIM, np.float16), "an-older-model")
    l2.values[Namespace(model.name, model.version).exact(exact_digest(image))] = blob
    reply = await one(node, image)
    assert reply.status.code == 0 and reply.provenance.source == pb.SOURCE_COMPUTED and model.images == 1
    assert metric_total(node.metrics.provider, "ringserve.l2.events", event="corrupt") == 1


@pytest.mark.parametrize("limit", ["budget", "deadline"])
async def test_the_retry_round_ends_at_the_budget_and_at_the_callers_deadline(limit):
    """No node on the ring: the item is re-sent in rounds, and answered UNAVAILABLE when time is up, not never."""
    from ringserve.router.retry import RetryConfig

    router = await router_servicer({}, retry=RetryConfig(budget_s=0.3 if limit == "budget" else 60.0))
    request = pb.ImageRequest(request_id="lost", image=jpeg(1))
    deadline = None
    if limit == "deadline":
        deadline = asyncio.get_running_loop().time() + 0.3
    reply = await asyncio.wait_for(router.item(request, EXTRACT, deadline=deadline), 30)
    assert reply.status.code in (grpc.StatusCode.UNAVAILABLE.value[0], DEADLINE_EXCEEDED), reply.status
    await router.registry.close()


async def test_a_client_item_answered_unavailable_is_sent_again_and_served():
    """A node that answers an item UNAVAILABLE (draining, not ready) leaves it to the client to send again."""
    from ringserve.client import AsyncClient

    seen: dict[str, int] = {}

    class Flaky(pb_grpc.InferenceServicer):
        async def Extract(self, request_iterator, context):
            async for request in request_iterator:
                seen[request.image] = seen.get(request.image, 0) + 1
                if seen[request.image] == 1:
                    yield pb.ExtractReply(request_id=request.request_id, status=pb.ItemStatus(
                        code=grpc.StatusCode.UNAVAILABLE.value[0], message="draining"))
                else:
                    yield pb.ExtractReply(request_id=request.request_id, status=pb.ItemStatus(code=0),
                                          feature=pb.Tensor(data=b"\0\0" * 4, dtype="float16", shape=[4]),
                                          provenance=pb.Provenance(source=pb.SOURCE_COMPUTED))

    server = grpc.aio.server()
    pb_grpc.add_InferenceServicer_to_server(Flaky(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        images = [jpeg(i) for i in range(3)]
        async with AsyncClient(f"127.0.0.1:{port}", retries=3, timeout_s=20, hints=False) as client:
            results = await client.extract_detailed(images)
        assert all(r.vector.shape == (4,) for r in results), results
        assert sorted(seen.values()) == [2, 2, 2]  # each sent again once, and answered once
    finally:
        await server.stop(None)


@pytest.mark.parametrize("call", ["index", "search"])
async def test_a_search_call_ends_by_its_deadline_however_many_retries_it_may_use(call):
    """One deadline for the whole call: re-sends stop when the next back-off would pass it (an index() call
    used to start a fresh timeout on every try, and ran for about retries x timeout)."""
    from ringserve.client import AsyncClient, Unavailable
    from ringserve.contract.v1 import search_pb2 as spb
    from ringserve.contract.v1 import search_pb2_grpc as spb_grpc

    tries = []

    class Unready(spb_grpc.SearchServicer):
        async def Index(self, request_iterator, context):
            tries.append("index")
            async for request in request_iterator:
                yield spb.IndexReply(request_id=request.request_id, id=request.id, status=pb.ItemStatus(
                    code=grpc.StatusCode.UNAVAILABLE.value[0], message="search views are still loading"))

        async def Search(self, request, context):
            tries.append("search")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "search views are still loading")

    server = grpc.aio.server()
    spb_grpc.add_SearchServicer_to_server(Unready(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{port}", retries=100, timeout_s=2.0, backoff_s=0.2, backoff_max_s=0.4) as c:
            loop = asyncio.get_running_loop()
            began = loop.time()
            if call == "index":
                results = await c.index(["a", "b"], [jpeg(1), jpeg(2)], collection="c")
                assert all(isinstance(r, Unavailable) and "still loading" in r.message for r in results)
            else:
                with pytest.raises(Unavailable, match="still loading"):
                    await c.search("c", id="a")
            took = loop.time() - began
        assert took < 2.0 + 1.0, took  # by the deadline (and one back-off's slack), not retries x timeout
        assert len(tries) >= 3  # it did send again while there was time
    finally:
        await server.stop(None)


async def test_an_l1_hit_is_answered_in_the_turn_that_read_it_and_a_miss_takes_the_whole_path():
    """A busy node's commonest item, an Extract L1 hit (by image or by digest), costs no task of its own."""
    node = node_servicer(FakeModel())
    start_batchers(node)
    images = [jpeg(i) for i in range(6)]
    async with serving(node) as target:
        first = await extract(target, images[:4])
        assert all(r.provenance.source == pb.SOURCE_COMPUTED for r in first.values())
        real = node.item
        awaited: list[str] = []

        async def item(request, **kwargs):
            awaited.append(request.request_id)
            return await real(request, **kwargs)

        node.item = item
        again = await extract(target, images)  # four hits, two misses
    assert [again[str(i)].provenance.source for i in range(6)] == [pb.SOURCE_L1] * 4 + [pb.SOURCE_COMPUTED] * 2
    assert sorted(awaited) == ["4", "5"]  # only the misses went through item's task
    assert all(again[str(i)].feature.data == first[str(i)].feature.data for i in range(4))
    assert node.admission.inflight == 0 and node.streams.received == 10


async def test_an_item_that_asks_for_perceptual_reuse_keeps_its_fingerprint_when_an_exact_flight_ended_first():
    """The race ``_load``'s second look at L1 covers: a perceptual item decoded and missed, and before its own
    flight began an exact-only flight stored the feature (no twin, no pointer). It keeps both; no model run."""
    shared, model = MemoryL2(), FakeModel()
    node = node_servicer(model, "a", l2=shared)
    start_batchers(node)
    image = jpeg(431)
    assert (await one(node, image)).provenance.source == pb.SOURCE_COMPUTED  # exact: the feature only
    slot, cache = node.slots[model.name], node.cache
    ns, digest = slot.ns, exact_digest(image)
    assert len(cache.l1) == 1 and set(shared.values) == {ns.exact(digest)}
    prepared = await cache._prepare(slot, digest, image, perceptual=True)
    served = await cache._load(slot, digest, prepared, perceptual=True)
    assert served.source == pb.SOURCE_L1 and model.images == 1
    pointer = Pointer.decode(shared.values[ns.perceptual(prepared.phash)])
    assert pointer.digest == digest and pointer.verifier == prepared.verifier
    assert len(cache.l1) == 2 and next(cache.l1.near(ns, prepared.phash, 0)).verifier == prepared.verifier
    bytes_used = cache.l1.bytes_used
    await cache._load(slot, digest, prepared, perceptual=True)  # again: held with its twin, nothing churns
    assert (len(cache.l1), cache.l1.bytes_used) == (2, bytes_used)


@pytest.mark.parametrize("perceptual_index", [False, True])
async def test_an_exact_only_miss_computes_no_fingerprint_unless_the_node_keeps_every_images(monkeypatch,
                                                                                            perceptual_index):
    # A fingerprint and a verifier cost about an eighth of a miss at 640x480; an exact-only miss writes neither.
    fingerprinted = []
    real = fingerprint.of_image
    monkeypatch.setattr(fingerprint, "of_image", lambda image: fingerprinted.append(image.size) or real(image))
    shared, model = MemoryL2(), FakeModel()
    node = node_servicer(model, "a", l2=shared, policy=PolicyConfig(perceptual_index=perceptual_index))
    start_batchers(node)
    exact = await one(node, jpeg(432))
    assert exact.provenance.source == pb.SOURCE_COMPUTED and len(fingerprinted) == int(perceptual_index)
    ns = Namespace(model.name, model.version)
    assert bool(shared.fingerprints.get(ns)) == perceptual_index  # an index entry only where the node keeps them
    near = await one(node, jpeg(433), cache_policy=pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL))
    assert near.provenance.source == pb.SOURCE_COMPUTED and len(fingerprinted) == int(perceptual_index) + 1
    assert model.images == 2


async def test_an_item_that_asks_for_perceptual_reuse_writes_its_fingerprint_though_another_items_flight_computed_it():
    gate = threading.Event()
    shared, model = MemoryL2(), FakeModel(gate=gate)
    node = node_servicer(model, "a", l2=shared)
    start_batchers(node)
    image = jpeg(430)
    try:
        exact = asyncio.ensure_future(one(node, image))  # the default policy: its flight writes the feature only
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 10)
        near = asyncio.ensure_future(one(node, image, cache_policy=pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL)))
        await asyncio.sleep(0.05)  # it joins the flight in progress
    finally:
        gate.set()
    assert (await exact).provenance.source == (await near).provenance.source == pb.SOURCE_COMPUTED
    assert model.images == 1
    ns, phash = Namespace(model.name, model.version), fingerprint.of_bytes(image, ImageLimits()).phash
    pointer = Pointer.decode(shared.values[ns.perceptual(phash)])
    assert pointer.digest == exact_digest(image) and pointer.verifier and phash in shared.fingerprints[ns]
    near_in_l1 = next(node.cache.l1.near(ns, phash, 0))  # and L1 keeps its twin, with the verifier, for the next
    assert near_in_l1.verifier == pointer.verifier and len(node.cache.l1) == 2
