"""The client's digest-first lookups against a fake Inference server on loopback that counts what it is sent.

The fake follows the contract of ``ImageRequest.digest`` (protos/ringserve/v1/inference.proto): an item
with its image is answered from the image and its digest remembered; an item named by its digest alone is
answered from what it remembers, else ``image_required``. As an older server it refuses a digest-only item
as an empty image. No process and no model: what the client sends, and what it hands its caller, is all
that is asserted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from ringserve.client import AsyncClient, Client, DeadlineExceeded, ServerError, Unavailable
from ringserve.contract import fingerprint
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.imagegen import jpeg
from tests.fakes import serving

OK, INVALID_ARGUMENT, UNAVAILABLE = 0, grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.UNAVAILABLE.value[0]


@dataclass
class FakeServer(pb_grpc.InferenceServicer):
    """An Inference server that knows digests (unless ``old``) and counts every byte and item it is sent."""

    old: bool = False  # a server from before digest lookups
    frames: bool = True  # serves ExtractFrames / ClassifyFrames
    # Items whose first reply (digest-only or not) is UNAVAILABLE, by the image's digest.
    unavailable_once: set[bytes] = field(default_factory=set)
    # Streams that end UNAVAILABLE right after asking for an image (a node going away mid-miss).
    cut_after_image_required: int = 0
    never_answer_images: bool = False  # a node that hangs on every image (deadlines)
    ask_even_with_image: bool = False  # a broken server: image_required for an item that carried its image
    cache: dict[tuple[bytes, int], bytes] = field(default_factory=dict)
    image_bytes: int = 0
    items: Counter = field(default_factory=Counter)  # "digest" (digest-only), "image"
    streams: int = 0
    hinted: int = 0  # items that carried a routing hint
    hinted_digests: int = 0  # digest-only items that carried one

    def answer(self, request: pb.ImageRequest, reply_type: type) -> object | None:
        """The reply to one item, or None to end the stream (``cut_after_image_required``)."""
        key = (fingerprint.digest(request.image), len(request.image)) if request.image else \
            (request.digest.blake3_128, request.digest.size_bytes)
        self.items["image" if request.image else "digest"] += 1
        self.hinted += request.HasField("phash_hint")
        self.hinted_digests += not request.image and request.HasField("phash_hint")
        self.image_bytes += len(request.image)
        reply = reply_type(request_id=request.request_id, status=pb.ItemStatus(code=OK))
        if key[0] in self.unavailable_once:
            self.unavailable_once.discard(key[0])
            reply.status.code, reply.status.message = UNAVAILABLE, "draining"
        elif not request.image and (self.old or not request.HasField("digest")):
            reply.status.code = INVALID_ARGUMENT
            reply.status.message = "bad image: empty image: the request carried no bytes"
        elif request.image and not self.ask_even_with_image:
            source = pb.SOURCE_L1 if key in self.cache else pb.SOURCE_COMPUTED
            self.cache[key] = key[0]
            self._fill(reply, key[0], source)
        elif key in self.cache:
            self._fill(reply, self.cache[key], pb.SOURCE_L1)
        else:
            reply.image_required = True
        return reply

    @staticmethod
    def _fill(reply, data: bytes, source: int) -> None:
        if isinstance(reply, pb.ExtractReply):
            reply.feature.CopyFrom(pb.Tensor(data=np.frombuffer(data, np.uint8).astype(np.float16).tobytes(),
                                             dtype="float16", shape=[len(data)]))
        else:
            reply.classes.add(index=data[0], name=f"class-{data[0]}", score=1.0)
        reply.provenance.source = source

    async def _replies(self, requests, reply_type, context) -> AsyncIterator[list]:
        self.streams += 1
        async for message in requests:
            batch = list(message.items) if isinstance(message, pb.ItemFrame) else [message]
            replies = []
            for request in batch:
                if request.image and self.never_answer_images:
                    continue
                replies.append(self.answer(request, reply_type))
            yield replies
            if self.cut_after_image_required and any(r.image_required for r in replies):
                self.cut_after_image_required -= 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, "node going away")
        if self.never_answer_images:
            await asyncio.sleep(60)  # still "working" on them: the stream ends by the caller's deadline

    async def Extract(self, request_iterator, context):
        async for replies in self._replies(request_iterator, pb.ExtractReply, context):
            for reply in replies:
                yield reply

    async def ExtractFrames(self, request_iterator, context):
        if not self.frames:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no frames here")
        async for replies in self._replies(request_iterator, pb.ExtractReply, context):
            yield pb.ExtractFrame(items=replies)

    async def ClassifyFrames(self, request_iterator, context):
        async for replies in self._replies(request_iterator, pb.ClassifyReply, context):
            yield pb.ClassifyFrame(items=replies)


IMAGES = [jpeg(900 + i) for i in range(12)]
TOTAL = sum(len(i) for i in IMAGES)


def client(target: str, **overrides) -> AsyncClient:
    settings = dict(digest_first_min_bytes=0, hints=False, timeout_s=20, retries=3, backoff_s=0.01)
    return AsyncClient(target, **{**settings, **overrides})


def expected(images: list[bytes]) -> list[bytes]:
    """The fake's feature of each image: its digest's bytes as float16."""
    return [np.frombuffer(fingerprint.digest(i), np.uint8).astype(np.float16).tobytes() for i in images]


def vectors(results) -> list[bytes]:
    return [r.vector.tobytes() for r in results]


@pytest.mark.parametrize("framed", [True, False])
async def test_a_cached_image_is_answered_without_its_bytes_and_a_miss_on_the_same_stream_with_them(framed):
    fake = FakeServer(frames=framed)
    async with serving(fake) as target, client(target, frames=framed) as c:
        first = await c.extract_detailed(IMAGES)
        # every item named first, asked for, and sent once with its image, all on one stream
        assert (fake.items["digest"], fake.items["image"], fake.image_bytes) == (12, 12, TOTAL)
        assert fake.streams == 1
        assert vectors(first) == expected(IMAGES)
        fake.image_bytes, fake.items = 0, Counter()
        again = await c.extract_detailed([*IMAGES[::-1], IMAGES[0]])  # a repeat within the call too
    assert fake.image_bytes == 0 and fake.items == {"digest": 13}
    assert vectors(again) == vectors(first)[::-1] + vectors(first)[:1]


async def test_a_classify_miss_comes_back_with_its_image_and_one_answer_per_image():
    fake = FakeServer()
    async with serving(fake) as target, client(target) as c:
        mixed = [IMAGES[0], IMAGES[1]]
        await c.classify_detailed(mixed[:1])  # the first is cached, the second is not
        results = await c.classify_detailed(mixed + mixed, top_k=1)
    assert [r.names[0] for r in results] == [f"class-{fingerprint.digest(i)[0]}" for i in mixed + mixed]
    assert fake.image_bytes == len(IMAGES[0]) + 2 * len(IMAGES[1])  # the second's twins, each asked for once


async def test_an_old_server_gets_every_image_and_no_digests_after_its_first_refusal(caplog):
    fake = FakeServer(old=True)
    with caplog.at_level(logging.WARNING, "ringserve.client"):
        async with serving(fake) as target, client(target, window=4) as c:
            first = await c.extract_detailed(IMAGES)
            sent = fake.items["digest"]
            second = await c.extract_detailed(IMAGES)
    assert all(not isinstance(r, Exception) for r in first + second) and vectors(first) == vectors(second)
    assert 1 <= sent <= 4  # the window's first items at most, before the refusal came back
    assert fake.items["digest"] == sent and fake.items["image"] == 24
    said = [r for r in caplog.records if "digest" in r.getMessage()]
    assert len(said) == 1 and target in said[0].getMessage()


@pytest.mark.parametrize("framed", [True, False])
async def test_re_sends_keep_each_items_form_and_give_one_answer(framed):
    """A digest-only item answered UNAVAILABLE goes again digest-only; a stream cut after asking for an image
    leaves its item to the next stream, which sends the image."""
    fake = FakeServer(frames=framed)
    async with serving(fake) as target, client(target, frames=framed) as c:
        await c.extract_detailed(IMAGES[:6])  # six cached, six not
        fake.image_bytes, fake.items = 0, Counter()
        fake.unavailable_once = {fingerprint.digest(i) for i in IMAGES[4:8]}
        fake.cut_after_image_required = 1
        results = await c.extract_detailed(IMAGES)
    assert vectors(results) == expected(IMAGES)
    assert fake.image_bytes == sum(len(i) for i in IMAGES[6:])  # each miss's bytes once, no hit's
    assert fake.streams >= 2


async def test_a_deadline_ends_a_call_whose_images_are_never_answered_with_one_error_each():
    fake = FakeServer(never_answer_images=True)
    async with serving(fake) as target, client(target, timeout_s=0.5) as c:
        await asyncio.sleep(0)
        fake.cache[(fingerprint.digest(IMAGES[0]), len(IMAGES[0]))] = b"\1\2"
        started = asyncio.get_running_loop().time()
        results = await c.extract_detailed(IMAGES[:4])
        took = asyncio.get_running_loop().time() - started
    assert results[0].vector.tolist() == [1, 2]  # the hit, answered by digest
    assert all(isinstance(r, DeadlineExceeded) for r in results[1:]), results
    assert took < 3


async def test_small_images_go_with_their_bytes_and_none_go_digest_first_when_it_is_off():
    small, big = jpeg(1, size=(16, 16)), jpeg(2, size=(320, 240))
    fake = FakeServer()
    async with serving(fake) as target:
        async with client(target, digest_first_min_bytes=len(small) + 1) as c:
            await c.extract_detailed([small, big])
        assert fake.items == {"image": 2, "digest": 1}
        fake.items = Counter()
        async with client(target, digest_first_min_bytes=None) as c:
            await c.extract_detailed([small, big])
    assert fake.items == {"image": 2}


async def test_a_server_that_asks_for_an_image_it_was_sent_gets_no_second_copy():
    fake = FakeServer(ask_even_with_image=True)
    async with serving(fake) as target, client(target) as c:
        results = await c.extract_detailed(IMAGES[:3])
    assert all(isinstance(r, ServerError) and "asked for the image" in r.message for r in results)
    assert fake.items == {"digest": 3, "image": 3}


async def test_a_digest_only_item_unavailable_every_time_ends_unavailable_not_never():
    fake = FakeServer()
    digest = fingerprint.digest(IMAGES[0])

    class Always(set):
        def discard(self, _value) -> None:  # never forgets: UNAVAILABLE on every try
            pass

    fake.unavailable_once = Always({digest})
    async with serving(fake) as target, client(target, retries=2) as c:
        results = await c.extract_detailed(IMAGES[:2])
    assert isinstance(results[0], Unavailable) and not isinstance(results[1], Exception)
    assert fake.items["digest"] >= 3 + 1 and fake.image_bytes == len(IMAGES[1])


async def test_batch_over_the_same_folder_into_a_new_output_sends_no_image_bytes(tmp_path):
    from ringserve.client.batch import BatchConfig, run

    root = tmp_path / "photos"
    root.mkdir()
    for i, data in enumerate(IMAGES):
        (root / f"{i:02d}.jpg").write_bytes(data)
    fake = FakeServer()
    async with serving(fake) as target:
        with Client(target, digest_first_min_bytes=0) as c:
            first = await asyncio.to_thread(run, c, BatchConfig(root=root, out=tmp_path / "one", chunk=5), False)
            sent = fake.image_bytes
            second = await asyncio.to_thread(run, c, BatchConfig(root=root, out=tmp_path / "two", chunk=5), False)
    assert (first.done, first.errors, second.done, second.errors) == (12, 0, 12, 0)
    assert sent == TOTAL and fake.image_bytes == TOTAL
    assert fake.items == {"digest": 24, "image": 12}


def test_the_threshold_is_a_flag_with_sizes_and_empty_for_never():
    from ringserve.client.cli import CLIENT_FLAGS, build_parser
    from ringserve.client.config import DIGEST_FIRST_MIN_BYTES

    parser = build_parser()
    read = [CLIENT_FLAGS.read(parser, parser.parse_args(["models", *argv]), env).digest_first_min_bytes
            for argv, env in ((["--digest-first-min-bytes", "64K"], {}), ([], {}),
                              ([], {"RINGSERVE_CLIENT_DIGEST_FIRST_MIN_BYTES": ""}))]
    assert read == [65536, DIGEST_FIRST_MIN_BYTES, None]


def test_a_refusal_pauses_digests_for_a_while_not_for_the_clients_life():
    """An old node met during a roll refuses a digest; once the roll is over the client sends digests again."""
    from ringserve.client.digests import PAUSE_S, DigestFirst
    from ringserve.contract.images import BAD_IMAGE

    now = [100.0]
    first = DigestFirst(64 * 1024, "router:1", clock=lambda: now[0])
    assert first.wanted(100_000) and not first.wanted(1_000)
    first.refused("model not found")  # not about the absent image: no pause
    assert first.wanted(100_000)
    first.refused(f"{BAD_IMAGE}: cannot identify image file")
    assert not first.wanted(100_000)
    now[0] += PAUSE_S - 1
    assert not first.wanted(100_000)
    now[0] += 2
    assert first.wanted(100_000)


@pytest.fixture
def decoded(monkeypatch) -> list[int]:
    """The sizes of the images the client decodes (for their hints), in order."""
    from ringserve.client import inputs

    sizes: list[int] = []
    real = inputs.fingerprint.of_bytes
    monkeypatch.setattr(inputs.fingerprint, "of_bytes", lambda data, *a: sizes.append(len(data)) or real(data, *a))
    return sizes


async def test_an_image_sent_digest_first_costs_the_client_no_decode(decoded):
    """A hit by digest must not pay the decode it saves: its hint comes from the client's memo or not at all (the
    router places it by the fingerprint it remembers); a miss is decoded for its hint when its image is asked for,
    before the image goes, and an image sent with its bytes gets its hint as before."""
    fake = FakeServer()
    async with serving(fake) as target:
        async with AsyncClient(target, digest_first_min_bytes=0, hints=True) as c:
            await c.extract(IMAGES[:4])  # misses: each decoded for its hint only once its image is asked for
            assert len(decoded) == 4 and fake.hinted == 4
            await c.extract(IMAGES[:4])  # hits by digest, hinted from the memo the misses filled
            assert len(decoded) == 4 and fake.hinted == 8
        async with AsyncClient(target, digest_first_min_bytes=0, hints=True) as c:
            await c.extract(IMAGES[:4])  # hits by a fresh client: no decode, no hint (the router places them)
        assert len(decoded) == 4 and fake.hinted == 8 and fake.items["digest"] == 12 and fake.items["image"] == 4
        async with AsyncClient(target, digest_first_min_bytes=None, hints=True) as c:
            await c.extract(IMAGES[4:6])  # with the image: hinted as before
    assert len(decoded) == 6


async def test_many_items_of_one_image_asked_for_at_once_are_decoded_once_for_their_hint(decoded):
    fake = FakeServer()
    async with serving(fake) as target:
        async with AsyncClient(target, digest_first_min_bytes=0, hints=True) as c:
            results = await c.extract([IMAGES[7]] * 6)
    assert len(results) == 6 and len(decoded) == 1 and fake.hinted == fake.items["image"] == 6


def test_digests_stop_while_the_recent_answers_are_mostly_misses_and_come_back_with_the_hits():
    from ringserve.client.digests import RECENT, TRUSTED_AFTER, DigestFirst

    def reply(source: int, perceptual: bool = False, code: int = OK) -> pb.ExtractReply:
        return pb.ExtractReply(status=pb.ItemStatus(code=code),
                               provenance=pb.Provenance(source=source, perceptual=perceptual))

    first = DigestFirst(1000, "router:1", min_hit_ratio=0.1)
    for _ in range(TRUSTED_AFTER - 1):
        first.answered(5000, reply(pb.SOURCE_COMPUTED))
    assert first.wanted(5000)  # too few answers yet to say
    first.answered(5000, reply(pb.SOURCE_COMPUTED))
    assert not first.wanted(5000) and not first.paying and first.taken and first.eligible(5000)
    # what says nothing about digest-first: small images, failed items, perceptual hits (a digest finds exact only)
    for _ in range(RECENT):
        first.answered(10, reply(pb.SOURCE_L1))
        first.answered(5000, reply(pb.SOURCE_L1, code=INVALID_ARGUMENT))
    first.answered(5000, reply(pb.SOURCE_L2, perceptual=True))
    assert not first.wanted(5000)
    for _ in range(2):  # 2 hits in 19 answers: over 1 in 10
        first.answered(5000, reply(pb.SOURCE_L2))
    assert first.wanted(5000)
    for _ in range(RECENT):  # the hits fall out of the window as misses come
        first.answered(5000, reply(pb.SOURCE_COMPUTED))
    assert not first.wanted(5000)
    always = DigestFirst(1000, "router:1")  # 0 (Index's): whatever the answers
    for _ in range(RECENT):
        always.answered(5000, reply(pb.SOURCE_COMPUTED))
    assert always.wanted(5000)


async def test_a_client_of_new_images_sends_their_bytes_at_once_and_digests_again_once_they_repeat(decoded):
    """After the misses of its first call, a client sending new images sends their bytes (hinted) without the
    digest's round trip; hits seen in the answers to such bytes (images another client sent) bring digests back."""
    fake = FakeServer()
    new = [[jpeg(2000 + 100 * n + i) for i in range(24)] for n in range(3)]
    shared = [jpeg(3000 + i) for i in range(24)]
    async with serving(fake) as target:
        async with AsyncClient(target, digest_first_min_bytes=None) as other:
            await other.extract(shared)
        sent = Counter(fake.items)
        async with AsyncClient(target, digest_first_min_bytes=0, hints=True, window=64) as c:
            for images, digests, with_bytes in ((new[0], 24, 24),  # all missed, each asked for its image
                                                (new[1], 0, 24),  # new again: bytes at once, no digest first
                                                (shared, 0, 24),  # bytes, and the answers say they were hits
                                                (new[2][:12], 12, 12)):  # so digests go again
                assert vectors(await c.extract_detailed(images)) == expected(images)
                assert fake.items - sent == Counter(digest=digests, image=with_bytes)
                sent = Counter(fake.items)
    assert fake.hinted == fake.items["image"] == 24 + 84  # every image that went with its bytes went hinted


async def test_a_second_pass_over_images_that_all_missed_goes_digest_first():
    """The ratio says digests do not pay after a pass of misses; but bytes this client sent are cached now."""
    fake = FakeServer()
    images = [jpeg(5000 + i) for i in range(24)]
    async with serving(fake) as target, AsyncClient(target, digest_first_min_bytes=0, hints=True) as c:
        await c.extract_detailed(images)
        assert fake.items == {"digest": 24, "image": 24}
        assert vectors(await c.extract_detailed(images)) == expected(images)
    assert fake.items == {"digest": 48, "image": 24}


async def test_a_long_call_of_new_images_stops_naming_them_mid_call_and_hints_each_once(decoded):
    fake = FakeServer()
    fresh = [jpeg(4000 + i) for i in range(40)]
    async with serving(fake) as target, AsyncClient(target, digest_first_min_bytes=0, hints=True, window=4) as c:
        assert vectors(await c.extract_detailed(fresh)) == expected(fresh)
    assert 16 <= fake.items["digest"] < 40 and fake.items["image"] == 40
    assert fake.hinted == 40 and len(decoded) == 40  # every image's bytes went hinted, each decoded once


def test_the_hit_ratio_is_a_flag_and_a_share():
    from ringserve.client import InvalidArgument
    from ringserve.client.cli import CLIENT_FLAGS, build_parser
    from ringserve.client.config import DIGEST_FIRST_MIN_HIT_RATIO, ClientConfig

    parser = build_parser()
    read = [CLIENT_FLAGS.read(parser, parser.parse_args(["models", *argv]), {}).digest_first_min_hit_ratio
            for argv in (["--digest-first-min-hit-ratio", "0"], [])]
    assert read == [0.0, DIGEST_FIRST_MIN_HIT_RATIO]
    with pytest.raises(InvalidArgument, match="from 0 to 1"):
        ClientConfig(digest_first_min_hit_ratio=1.5)


async def test_known_images_go_by_digest_and_readied_ones_with_their_bytes_whatever_the_ratio_does_mid_call(decoded):
    """A call of new images that stops paying mid-call: the images the client sent before still go by digest (their
    hits then push the ratio back up), and an image hinted to go with its bytes goes with them, not by digest."""
    fake = FakeServer()
    known = [jpeg(6000 + i) for i in range(8)]
    new = [jpeg(6100 + i) for i in range(40)]
    async with serving(fake) as target, AsyncClient(target, digest_first_min_bytes=0, hints=True, window=4) as c:
        await c.extract_detailed(known)  # 8 misses: known (and hinted) from now on; too few answers to judge
        sent = Counter(fake.items)
        order = new[:20] + known + new[20:]
        assert vectors(await c.extract_detailed(order)) == expected(order)
    assert (fake.items - sent)["image"] == 40  # every new image's bytes once; no known image's
    assert fake.hinted_digests == 8  # only the known went by digest with a hint: no readied image did
    assert len(decoded) == 48


async def test_a_bypass_call_names_no_image_and_says_nothing_of_the_cache():
    fake = FakeServer()
    async with serving(fake) as target, AsyncClient(target, digest_first_min_bytes=0, hints=False) as c:
        await c.extract_detailed([jpeg(7000 + i) for i in range(20)], cache_mode="bypass")
        assert fake.items == {"image": 20}  # a digest would only miss: bypass reads no cache
        await c.extract_detailed([jpeg(7100 + i) for i in range(20)])
    assert fake.items == {"image": 40, "digest": 20}  # digests still go: the bypass answers were not counted
