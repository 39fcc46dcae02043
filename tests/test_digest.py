"""Digest-first lookups (issue 17): an item that names its image by digest and carries none.

A node answers it from L1 or L2 by the exact key (hash and size), or with ``image_required``; it never
runs the model and never writes a cache for it. A router places it by its hint, else by the fingerprint
it remembers for the digest, else by the digest itself. The fast tests drive the node's and the router's
real servicers in this process (tests/fakes.py); tests/test_digest_nodes.py runs real node processes.
"""

from __future__ import annotations

import copy
import secrets

import grpc
import pytest

from ringserve.contract import fingerprint
from ringserve.contract.images import ImageLimits
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.imagegen import jpeg
from ringserve.router.servicer import RouterServicer
from ringserve.runtime.edge import CLASSIFY, EXTRACT, Method
from ringserve.server.servicer import InferenceServicer
from ringserve.server.settings import CacheMode, PolicyConfig
from tests.fakes import FakeModel, MemoryL2, metric_total, node_servicer, router_servicer, serving, start_batchers

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def digest_of(image: bytes, size: int | None = None) -> pb.ImageDigest:
    return pb.ImageDigest(blake3_128=fingerprint.digest(image), size_bytes=len(image) if size is None else size)


async def by_image(node: InferenceServicer, image: bytes, method: Method = EXTRACT, **fields):
    return await node.item(pb.ImageRequest(request_id="i", image=image, **fields), method)


async def by_digest(node: InferenceServicer, digest: pb.ImageDigest, method: Method = EXTRACT, **fields):
    return await node.item(pb.ImageRequest(request_id="d", digest=digest, **fields), method)


def started(model: FakeModel, node_id: str = "a", **kwargs) -> InferenceServicer:
    node = node_servicer(model, node_id, **kwargs)
    start_batchers(node)
    return node


def required(reply) -> bool:
    """``image_required`` exactly as the contract says: status OK and nothing else set."""
    return (reply.image_required and reply.status.code == 0 and not reply.HasField("provenance")
            and not (reply.HasField("feature") if isinstance(reply, pb.ExtractReply) else reply.classes))


# ---- the node --------------------------------------------------------------------------------------


async def test_a_digest_only_item_is_answered_from_l1_then_l2_with_the_images_own_feature():
    model, shared = FakeModel(), MemoryL2()
    first, second = started(model, "a", l2=shared), started(model, "b", l2=shared)
    image, other = jpeg(1), jpeg(2)
    computed, elsewhere = await by_image(first, image), await by_image(first, other)
    assert computed.feature.data != elsewhere.feature.data  # the fake's features tell these images apart
    stored = dict(shared.values)

    from_l1 = await by_digest(first, digest_of(image))
    assert from_l1.status.code == 0 and not from_l1.image_required
    assert from_l1.provenance.source == pb.SOURCE_L1 and from_l1.provenance.node == "a"
    assert from_l1.feature.data == computed.feature.data and not from_l1.provenance.perceptual

    from_l2 = await by_digest(second, digest_of(image))  # b never saw the bytes: the shared tier has them
    assert from_l2.provenance.source == pb.SOURCE_L2 and from_l2.feature.data == computed.feature.data
    again = await by_digest(second, digest_of(image))  # the L2 hit was copied into b's L1 as it was
    assert again.provenance.source == pb.SOURCE_L1 and again.feature.data == computed.feature.data
    assert (await by_digest(second, digest_of(other))).feature.data == elsewhere.feature.data
    assert model.images == 2 and shared.values == stored and not shared.locks
    assert metric_total(second.metrics.provider, "ringserve.cache.lookups", tier="l2", kind="digest",
                        result="hit") == 2
    assert metric_total(first.metrics.provider, "ringserve.cache.lookups", tier="l1", kind="digest",
                        result="hit") == 1


async def test_a_digest_only_miss_is_image_required_runs_no_model_and_changes_no_cache():
    model, shared = FakeModel(), MemoryL2()
    node = started(model, l2=shared)
    await by_image(node, jpeg(10), cache_policy=pb.CachePolicy(mode=pb.CACHE_MODE_PERCEPTUAL))  # writes all it can
    values, prints, entries, used = dict(shared.values), copy.deepcopy(shared.fingerprints), len(node.cache.l1), \
        node.cache.l1.bytes_used
    for method in (EXTRACT, CLASSIFY):
        assert required(await by_digest(node, digest_of(jpeg(11)), method))
    assert model.images == 1 and model.batches == 1
    assert shared.values == values and shared.fingerprints == prints and not shared.locks
    assert (len(node.cache.l1), node.cache.l1.bytes_used) == (entries, used)
    assert metric_total(node.metrics.provider, "ringserve.cache.lookups", tier="l2", kind="digest",
                        result="miss") == 2


class NextVersion(FakeModel):
    version = "v2"  # new weights: a new key namespace


@pytest.mark.parametrize("case", ["made_up", "wrong_size", "other_version", "reencoded"])
async def test_a_digest_that_names_no_cached_bytes_of_this_model_is_image_required(case):
    shared, image = MemoryL2(), jpeg(20, quality=90)
    await by_image(started(FakeModel(), "a", l2=shared), image)
    node = started(NextVersion() if case == "other_version" else FakeModel(), "b", l2=shared)
    digest = {
        "made_up": pb.ImageDigest(blake3_128=secrets.token_bytes(16), size_bytes=len(image)),
        "wrong_size": digest_of(image, size=len(image) + 1),  # the right hash is not enough: the key is both
        "other_version": digest_of(image),
        "reencoded": digest_of(jpeg(20, quality=60)),  # the same picture, other bytes
    }[case]
    assert required(await by_digest(node, digest))
    assert (await by_digest(node, digest_of(image))).image_required is (case == "other_version")


async def test_with_digest_lookups_switched_off_every_digest_only_item_is_image_required():
    shared, image = MemoryL2(), jpeg(30)
    node = started(FakeModel(), policy=PolicyConfig(digest_lookups=False), l2=shared)
    assert (await by_image(node, image)).status.code == 0
    assert (await by_image(node, image)).provenance.source == pb.SOURCE_L1  # it holds the feature
    for method in (EXTRACT, CLASSIFY):
        assert required(await by_digest(node, digest_of(image), method))
    assert metric_total(node.metrics.provider, "ringserve.cache.lookups", kind="digest") == 0


async def test_classify_by_digest_runs_the_head_on_the_cached_feature():
    model = FakeModel()
    node = started(model)
    image = jpeg(40)
    direct = await by_image(node, image, CLASSIFY, top_k=3)
    reply = await by_digest(node, digest_of(image), CLASSIFY, top_k=3)
    assert reply.status.code == 0 and not reply.image_required and reply.provenance.source == pb.SOURCE_L1
    assert len(reply.classes) == 3 and list(reply.classes) == list(direct.classes)
    assert model.images == 1


@pytest.mark.parametrize("mode, answered", [(pb.CACHE_MODE_PERCEPTUAL, True), (pb.CACHE_MODE_BYPASS, False)])
async def test_a_perceptual_policy_gets_an_exact_lookup_and_bypass_reads_no_cache(mode, answered):
    node = started(FakeModel(), policy=PolicyConfig(default_mode=CacheMode.PERCEPTUAL, default_radius=8))
    original = jpeg(50, quality=95)
    await by_image(node, original)
    policy = pb.CachePolicy(mode=mode, max_distance=8)
    reply = await by_digest(node, digest_of(original), cache_policy=policy)
    assert reply.image_required is not answered
    if answered:
        assert reply.provenance.source == pb.SOURCE_L1 and not reply.provenance.perceptual
    # no pixels, so no near match: another encoding of the same picture is not found by its digest
    assert required(await by_digest(node, digest_of(jpeg(50, quality=60)), cache_policy=policy))


@pytest.mark.parametrize("length", [0, 15, 17, 32])
async def test_a_digest_that_is_not_16_bytes_is_invalid_argument_naming_the_field(length):
    node = started(FakeModel())
    reply = await by_digest(node, pb.ImageDigest(blake3_128=b"\x01" * length, size_bytes=10))
    assert reply.status.code == INVALID_ARGUMENT and not reply.image_required
    assert "digest.blake3_128" in reply.status.message and f"has {length} bytes" in reply.status.message


# ---- through a router ------------------------------------------------------------------------------


def digest_key(image: bytes) -> int:
    return int.from_bytes(fingerprint.digest(image)[:8], "big")


def placed_apart(router: RouterServicer, key, seeds: range) -> bytes:
    """An image whose key under ``key`` and whose digest's key have different owners, so that a test can tell
    which of the two placed it (the digest's key alone would reach the right node half the time)."""
    ring = router.registry.ring
    for seed in seeds:
        image = jpeg(seed)
        if ring.owner(key(image)) != ring.owner(digest_key(image)):
            return image
    raise AssertionError("no image in range is placed apart from its digest")


def phash(image: bytes) -> int:
    return fingerprint.of_bytes(image, ImageLimits()).phash


async def call(target: str, requests: list[pb.ImageRequest], method: str = "Extract") -> dict[str, object]:
    """``requests`` on one raw stream of ``method``; the replies by request id, one per item."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        replies: dict[str, object] = {}
        async for reply in getattr(stub, method)(iter(requests), timeout=30):
            for item in reply.items if method.endswith("Frames") else [reply]:
                assert item.request_id not in replies, f"two replies for item {item.request_id}"
                replies[item.request_id] = item
    return replies


class Cluster:
    """Two fake nodes, each with its own L1 and no L2, behind a fake router: an L1 answer shows placement."""

    def __init__(self) -> None:
        self.models = {"n0": FakeModel(), "n1": FakeModel()}
        self.nodes = {name: started(model, name) for name, model in self.models.items()}

    async def __aenter__(self) -> Cluster:
        self._servers = [serving(node) for node in self.nodes.values()]
        targets = [await server.__aenter__() for server in self._servers]
        self.router = await router_servicer(dict(zip(self.nodes, targets, strict=True)))
        self._front = serving(self.router)
        self.target = await self._front.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._front.__aexit__(None, None, None)
        await self.router.registry.close()
        for server in self._servers:
            await server.__aexit__(None, None, None)

    @property
    def computed(self) -> int:
        return sum(model.images for model in self.models.values())


async def test_a_digest_only_item_with_its_hint_reaches_the_node_that_holds_it():
    async with Cluster() as cluster:
        image = placed_apart(cluster.router, phash, range(100, 200))
        hint = phash(image)
        owner = cluster.router.registry.ring.owner(hint)
        first = (await call(cluster.target, [pb.ImageRequest(request_id="i", image=image, phash_hint=hint)]))["i"]
        assert first.provenance.node == owner and first.provenance.source == pb.SOURCE_COMPUTED
        replies = await call(cluster.target, [pb.ImageRequest(request_id="d", digest=digest_of(image), phash_hint=hint),
                                              pb.ImageRequest(request_id="m", digest=digest_of(jpeg(99)), phash_hint=hint)])
        assert cluster.router.fingerprints.get(fingerprint.digest(image)) is None  # placed by the hint alone
    hit = replies["d"]
    assert hit.status.code == 0 and hit.provenance.source == pb.SOURCE_L1 and hit.provenance.node == owner
    assert hit.feature.data == first.feature.data and hit.request_id == "d"
    assert required(replies["m"]) and cluster.computed == 1  # passed back as it is: no retry, no model


async def test_a_digest_only_item_without_a_hint_follows_the_routers_memo_of_the_bytes():
    async with Cluster() as cluster:
        image = placed_apart(cluster.router, phash, range(200, 300))
        owner = cluster.router.registry.ring.owner(phash(image))
        first = (await call(cluster.target, [pb.ImageRequest(request_id="i", image=image)]))["i"]  # the router sees it
        assert first.provenance.node == owner
        replies = await call(cluster.target, [pb.ImageRequest(request_id="d", digest=digest_of(image)),
                                              pb.ImageRequest(request_id="u", digest=digest_of(jpeg(299)))])
        provider = cluster.router.metrics.provider
        sent, resent = metric_total(provider, "ringserve.router.placed"), metric_total(provider, "ringserve.router.retries")
    hit = replies["d"]
    assert hit.provenance.source == pb.SOURCE_L1 and hit.provenance.node == owner
    assert hit.feature.data == first.feature.data
    assert required(replies["u"]) and cluster.computed == 1  # never seen: placed by its digest, told to send it
    assert (sent, resent) == (3, 0)  # image_required is no failure: each item sent once, none again


async def test_a_digest_only_item_without_a_hint_goes_where_a_hinted_item_of_that_digest_went():
    """A client that sent an image with its hint and its digest (a miss it was asked to send) teaches the router
    where that digest's later items, sent by digest alone and without a hint, are to go; for placement only."""
    async with Cluster() as cluster:
        image = placed_apart(cluster.router, phash, range(300, 400))
        hint = phash(image)
        owner = cluster.router.registry.ring.owner(hint)
        first = (await call(cluster.target, [pb.ImageRequest(request_id="i", image=image, phash_hint=hint,
                                                              digest=digest_of(image))]))["i"]
        assert first.provenance.node == owner
        again = (await call(cluster.target, [pb.ImageRequest(request_id="d", digest=digest_of(image))]))["d"]
        assert cluster.router.fingerprints.get(fingerprint.digest(image)) is None  # a hint is never a fingerprint
    assert again.provenance.source == pb.SOURCE_L1 and again.provenance.node == owner
    assert again.feature.data == first.feature.data and cluster.computed == 1


async def test_extract_frames_with_digest_only_items_answer_each_item_on_its_own():
    images = [jpeg(400 + i) for i in range(4)]
    async with Cluster() as cluster:
        seen = await call(cluster.target, [pb.ImageRequest(request_id=str(i), image=image)
                                           for i, image in enumerate(images[:3])])
        frames = [pb.ItemFrame(items=[pb.ImageRequest(request_id=f"d{i}", digest=digest_of(image))
                                      for i, image in enumerate(images)]),
                  pb.ItemFrame(items=[pb.ImageRequest(request_id="bad", digest=pb.ImageDigest(blake3_128=b"x")),
                                      pb.ImageRequest(request_id="img", image=images[3])])]
        replies = await call(cluster.target, frames, "ExtractFrames")
        framed = [cluster.router.registry.get(name).link.framed for name in cluster.nodes]
    assert len({seen[str(i)].feature.data for i in range(3)}) == 3  # three images, three features
    for i in range(3):
        assert replies[f"d{i}"].provenance.source == pb.SOURCE_L1
        assert replies[f"d{i}"].feature.data == seen[str(i)].feature.data
    assert required(replies["d3"]) and replies["bad"].status.code == INVALID_ARGUMENT
    assert replies["img"].provenance.source == pb.SOURCE_COMPUTED and cluster.computed == 4
    assert any(framed)


async def test_an_l1_hit_answered_in_the_reading_turn_is_counted_by_its_kind():
    """The stream engine's immediate answer (``item_now``) counts a digest-only hit as a digest lookup, as the
    whole path does, and a hit by image as an exact one."""
    node = node_servicer(FakeModel())
    start_batchers(node)
    image = jpeg(31)
    await by_image(node, image)
    by_name = node.item_now(pb.ImageRequest(request_id="d", digest=digest_of(image)), EXTRACT)
    again = node.item_now(pb.ImageRequest(request_id="i", image=image), EXTRACT)
    assert by_name is not None and again is not None and by_name.feature.data == again.feature.data
    lookups = "ringserve.cache.lookups"
    assert metric_total(node.metrics.provider, lookups, tier="l1", kind="digest", result="hit") == 1
    assert metric_total(node.metrics.provider, lookups, tier="l1", kind="exact", result="hit") == 1
