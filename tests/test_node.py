"""Integration: real node processes, a real Redis, the small torch model, the real client."""

from __future__ import annotations

import asyncio
import functools
import time

import grpc
import numpy as np
import pytest
import redis as redis_py

from ringserve.client import AsyncClient, Client, InvalidImage, Overloaded
from ringserve.contract import fingerprint
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.imagegen import encode, jpeg, picture, png_bomb
from ringserve.server.keys import Namespace, exact_digest
from tests.conftest import extract_one


def sources(results) -> list[str]:
    return [r.provenance.source for r in results]


def test_miss_then_l1_then_l2_after_restart_with_the_same_feature(nodes, redis_db):
    node = nodes("a", "--redis-url", redis_db.url)
    images = [jpeg(i) for i in range(4)]
    with Client(node.target) as c:
        first = c.extract_detailed(images)
        assert sources(first) == ["computed"] * 4
        assert sources(c.extract_detailed(images)) == ["l1"] * 4
    assert node.stop() == 0  # drained: flushed its L2 writes
    node = nodes("a", "--redis-url", redis_db.url)
    with Client(node.target) as c:
        again = c.extract_detailed(images)
        assert sources(again) == ["l2"] * 4
        for before, after in zip(first, again, strict=True):
            assert np.array_equal(before.vector, after.vector) and after.vector.dtype == np.float16
            assert after.provenance.node == "a" and after.provenance.model == "mobilenet_v3_small"
        assert sources(c.extract_detailed(images)) == ["l1"] * 4  # the L2 hit filled L1


def test_exact_policy_refuses_a_perceptual_match_that_perceptual_policy_serves(nodes, redis_db):
    # A deployment that uses perceptual reuse writes every computed feature's fingerprint to Redis.
    # The verifier's threshold these small pictures' re-encodings pass (docs/fidelity.md: 60 dB for photos).
    node = nodes("a", "--redis-url", redis_db.url, "--cache-default-radius", "6", "--cache-perceptual-index",
                 "--cache-verify-min-psnr", "40")
    original, reencoded, other = jpeg(10, quality=95), jpeg(10, quality=70), jpeg(11)
    distance = fingerprint.hamming(fingerprint.phash_bytes(original), fingerprint.phash_bytes(reencoded))
    assert 0 < distance <= 6 or distance == 0
    with Client(node.target) as c:
        base = c.extract_detailed([original])[0]
        near = c.extract_detailed([reencoded], cache_mode="perceptual")[0]
        assert near.provenance.source == "l1" and near.provenance.perceptual
        assert near.provenance.verified and near.provenance.verifier_score > 0  # what the client shows of the check
        assert near.provenance.distance == distance
        assert np.array_equal(near.vector, base.vector)  # served the original's feature
        exact = c.extract_detailed([reencoded], cache_mode="exact")[0]
        assert exact.provenance.source == "computed" and not exact.provenance.perceptual
        assert c.extract_detailed([other], cache_mode="perceptual")[0].provenance.source == "computed"
        assert c.extract_detailed([reencoded])[0].provenance.source == "l1"  # the exact key is its own now
    node.stop()
    # A fresh node (empty L1) finds the neighbour through the Redis multi-index.
    node = nodes("a", "--redis-url", redis_db.url, "--cache-default-radius", "6", "--cache-verify-min-psnr", "40")
    third = jpeg(10, quality=80)
    with Client(node.target) as c:
        hit = c.extract_detailed([third], cache_mode="perceptual", radius=6)[0]
        assert hit.provenance.source == "l2" and hit.provenance.perceptual
        assert c.extract_detailed([third], cache_mode="exact")[0].provenance.source == "computed"


@pytest.mark.parametrize("perceptual_index", [False, True])
def test_l1_evicts_by_bytes(nodes, perceptual_index):
    # An image is its exact entry (576 float16 values = 1152 bytes, plus overhead); where a deployment uses
    # perceptual reuse, also its perceptual twin, which shares that vector and counts its 768-byte verifier and
    # overhead alone. Room for 8 images either way.
    per_image = (1152 + 200) + (768 + 200 if perceptual_index else 0)
    node = nodes("a", "--l1-max-bytes", str(8 * per_image), *(["--cache-perceptual-index"] if perceptual_index else []))
    images = [jpeg(100 + i) for i in range(20)]
    with Client(node.target) as c:
        for image in images:  # one at a time: stored in this order, so the LRU order is known
            c.extract_detailed([image])
        assert node.metric("ringserve_l1_bytes") <= 8 * per_image
        assert node.metric("ringserve_l1_entries") == (16 if perceptual_index else 8)
        assert c.extract_detailed([images[-1]])[0].provenance.source == "l1"
        assert c.extract_detailed([images[-8]])[0].provenance.source == "l1"  # the eighth newest still fits
        assert c.extract_detailed([images[0]])[0].provenance.source == "computed"  # evicted


async def test_concurrent_requests_for_one_new_image_run_the_backbone_once(nodes):
    node = nodes("a")
    image = jpeg(200)
    before = node.metric("ringserve_backbone_images_total")
    async with AsyncClient(node.target) as c:
        # 12 separate streams and 12 items in one stream, all for the same new bytes
        separate = [c.extract_detailed([image]) for _ in range(12)]
        together = c.extract_detailed([image] * 12)
        results = await asyncio.gather(*separate, together)
    flat = [r for group in results for r in group]
    assert len(flat) == 24 and all(np.array_equal(r.vector, flat[0].vector) for r in flat)
    assert node.metric("ringserve_backbone_images_total") - before == 1
    assert node.metric("ringserve_singleflight_shared_total") >= 1


def test_two_nodes_share_one_computation_through_the_redis_lock(nodes, redis_db):
    a = nodes("a", "--redis-url", redis_db.url, "--max-delay-ms", "50")
    b = nodes("b", "--redis-url", redis_db.url, "--max-delay-ms", "50")
    images = [jpeg(300 + i) for i in range(6)]

    async def both():
        async with AsyncClient(a.target) as ca, AsyncClient(b.target) as cb:
            return await asyncio.gather(ca.extract_detailed(images), cb.extract_detailed(images))

    ra, rb = asyncio.run(both())
    computed = a.metric("ringserve_backbone_images_total") + b.metric("ringserve_backbone_images_total")
    assert computed < 12  # without the lock both would compute all six
    assert all(np.array_equal(x.vector, y.vector) for x, y in zip(ra, rb, strict=True))
    assert "l2" in sources(ra) + sources(rb)


def test_redis_stopped_mid_stream_node_keeps_serving_and_recovers(nodes, workdir):
    from ringserve.local.processes import RedisProcess

    redis = RedisProcess(workdir / "redis-flaky").start()
    node = nodes("a", "--redis-url", redis.url, "--redis-breaker-reset-s", "0.5", "--redis-timeout-s", "0.1")
    images = [jpeg(400 + i) for i in range(60)]
    got: list[pb.ExtractReply] = []
    try:
        with grpc.insecure_channel(node.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            sent = 0

            def requests():
                nonlocal sent
                for i, image in enumerate(images):
                    if i == 20:
                        while len(got) < 20:  # wait for replies, then pull Redis out from under the stream
                            pass
                        redis.kill()
                    sent += 1
                    yield pb.ImageRequest(request_id=str(i), image=image)

            for reply in stub.Extract(requests(), timeout=120):
                got.append(reply)
        assert len(got) == 60 and all(r.status.code == 0 for r in got)
        assert node.metric("ringserve_cache_lookups_total", tier="l2", result="error") >= 1
        # Redis comes back on the same port: writes resume by themselves once the breaker probes it.
        redis = RedisProcess(workdir / "redis-flaky", port=redis.port).start()
        r = redis_py.Redis(port=redis.port)
        ns = Namespace("mobilenet_v3_small", got[0].provenance.model_version)
        recovered = False
        with Client(node.target) as c:
            for attempt in range(50):
                image = jpeg(500 + attempt)
                assert c.extract_detailed([image])[0].provenance.source == "computed"
                time.sleep(0.2)
                if r.exists(ns.exact(exact_digest(image))):
                    recovered = True
                    break
        assert recovered, "L2 writes did not resume after Redis came back"
        assert node.metric("ringserve_l2_events_total", event="write_ok") >= 1
    finally:
        redis.stop(5)


def test_corrupt_value_in_redis_is_a_miss_not_an_error(nodes, redis_db):
    node = nodes("a", "--redis-url", redis_db.url)
    image = jpeg(700)
    with Client(node.target) as c:
        good = c.extract_detailed([image])[0]
    node.stop()
    key = Namespace("mobilenet_v3_small", good.provenance.model_version).exact(exact_digest(image))
    r = redis_py.Redis(port=redis_db.port)
    assert r.exists(key)
    r.set(key, b"RSF\x01garbage that fails its checksum")
    node = nodes("a", "--redis-url", redis_db.url)
    with Client(node.target) as c:
        again = c.extract_detailed([image])[0]
    assert again.provenance.source == "computed"
    assert np.array_equal(again.vector, good.vector)
    assert node.metric("ringserve_l2_events_total", event="corrupt") == 1


def test_overload_fails_fast_with_resource_exhausted_and_memory_stays_flat(nodes):
    import psutil

    node = nodes("a", "--max-inflight", "8", "--max-queue", "4", "--max-batch", "2")
    images = [jpeg(800 + i, size=(224, 224)) for i in range(16)]
    proc = psutil.Process(node.pid)

    def blast() -> list:
        with Client(node.target, window=400) as c:
            return c.extract_detailed(images * 25, cache_mode="bypass")

    rss = []
    for _ in range(4):
        results = blast()
        assert len(results) == 400
        rejected = [r for r in results if isinstance(r, Overloaded)]
        served = [r for r in results if not isinstance(r, Exception)]
        assert rejected and served and len(rejected) + len(served) == 400
        assert "in flight" in rejected[0].message or "queue is full" in rejected[0].message
        rss.append(proc.memory_info().rss)
    assert rss[-1] - rss[1] < 64 * 1024 * 1024, f"node memory grew under overload: {rss}"


def test_each_bad_input_fails_its_own_item_and_the_stream_goes_on(nodes):
    from PIL import Image

    node = nodes("a", "--image-max-bytes", "300K")
    good = [jpeg(900), encode(picture(901), "PNG"), encode(picture(902), "GIF"), encode(picture(903), "WEBP")]
    bad = {
        "empty": b"",
        "not an image": b"%PDF-1.4 definitely not a picture",
        "truncated": jpeg(904)[:300],
        "decompression bomb": png_bomb(),
        "over the limit": encode(Image.new("RGB", (17000, 1)), "PNG"),
        "bytes is over": np.random.default_rng(0).bytes(400 * 1024),
    }
    items = [good[0], *bad.values(), *good[1:]]
    with Client(node.target) as c:
        results = c.extract_detailed(items)
    assert not isinstance(results[0], Exception) and all(not isinstance(r, Exception) for r in results[-3:])
    for (reason, _), result in zip(bad.items(), results[1:-3], strict=True):
        assert isinstance(result, InvalidImage), (reason, result)
        assert reason.split()[0] in result.message.lower(), (reason, result.message)


def test_spoofed_hint_costs_nothing_but_placement(nodes):
    node = nodes("a")
    a, b = jpeg(1000), jpeg(1001)
    with grpc.insecure_channel(node.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        one = functools.partial(extract_one, stub, mode=pb.CACHE_MODE_EXACT)
        truth_a = one(a, mode=pb.CACHE_MODE_BYPASS)
        truth_b = one(b, mode=pb.CACHE_MODE_BYPASS)
        spoofed = one(a, hint=fingerprint.phash_bytes(b))
        assert spoofed.feature.data == truth_a.feature.data
        # and the cache was not poisoned: b (exact or perceptual at radius 0) is not served a's feature
        assert one(b).feature.data == truth_b.feature.data
        hostile = one(b, hint=fingerprint.phash_bytes(a), mode=pb.CACHE_MODE_PERCEPTUAL, max_distance=0)
        assert hostile.feature.data == truth_b.feature.data


def test_sigterm_during_a_stream_answers_every_accepted_item(nodes):
    node = nodes("a", "--max-batch", "1", "--drain-delay-s", "0.3")
    images = [jpeg(1100 + i, size=(224, 224)) for i in range(120)]
    replies: list[pb.ExtractReply] = []
    status = None
    with grpc.insecure_channel(node.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        requests = (pb.ImageRequest(request_id=str(i), image=img) for i, img in enumerate(images))
        call = stub.Extract(requests, timeout=120)
        try:
            for reply in call:
                replies.append(reply)
                if len(replies) == 3:
                    node.signal(15)  # SIGTERM mid-stream
        except grpc.RpcError as exc:
            status = exc.code()
    assert node.proc.wait(60) == 0
    log = node.log_path.read_text()
    received = int(log.rsplit("received=", 1)[1].split()[0])
    answered = int(log.rsplit("answered=", 1)[1].split()[0])
    ids = [r.request_id for r in replies]
    assert len(ids) == len(set(ids)), "an item was answered twice"
    assert received == answered == len(replies)
    assert all(r.status.code == 0 for r in replies)
    assert len(replies) > 3, "items in flight at SIGTERM were not answered"
    if len(replies) < len(images):
        assert status == grpc.StatusCode.UNAVAILABLE  # the caller knows to re-send the rest


def test_classify_runs_the_head_on_cached_features(nodes):
    node = nodes("a")
    image = jpeg(1200)
    with Client(node.target) as c:
        first = c.classify(image, top_k=3)
        second = c.classify(image, top_k=3)
        many = c.classify([image, jpeg(1201)], top_k=7)
    assert first.provenance.source == "computed" and second.provenance.source == "l1"
    assert list(first.indices) == list(second.indices) and len(first.names) == 3
    assert np.all(np.diff(first.scores) <= 0) and 0 < first.scores[0] <= 1
    assert len(many) == 2 and len(many[1].names) == 7
    assert list(many[0].indices[:3]) == list(first.indices)
    np.testing.assert_allclose(many[0].scores[:3], first.scores, rtol=1e-5)
    # the head ran in its own batcher, once per item
    assert node.metric("ringserve_head_batch_size_sum") == 4
    assert 1 <= node.metric("ringserve_head_batch_size_count") <= 4


def test_health_reflection_and_list_models(nodes):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    node = nodes("a")
    with grpc.insecure_channel(node.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ringserve.v1.Inference"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == 1
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "ringserve.v1.Inference" in services and "grpc.health.v1.Health" in services
    with Client(node.target) as c:
        info = c.list_models()
    assert info.default_model == "mobilenet_v3_small" and info.node == "a"
    assert info.models[0].feature_dim == 576 and not info.models[0].random_weights  # the test weights file


def test_unknown_model_is_not_found(nodes):
    from ringserve.client import NotFound

    node = nodes("a")
    with Client(node.target) as c, pytest.raises(NotFound, match="not served here"):
        c.extract(jpeg(1), model="resnet9000")


def test_command_line_extract_classify_models(nodes, tmp_path):
    import json
    import subprocess
    import sys

    node = nodes("a")
    files = []
    for i in range(3):
        f = tmp_path / f"img{i}.jpg"
        f.write_bytes(jpeg(1300 + i))
        files.append(str(f))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    run = [sys.executable, "-m", "ringserve.client.cli"]
    out = subprocess.run([*run, "extract", *files, str(bad), "--target", node.target, "--out", str(tmp_path / "f.npz")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr  # one image failed
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["ok"] for x in lines] == [True, True, True, False]
    assert lines[0]["source"] == "computed" and lines[0]["dim"] == 576
    assert lines[3]["code"] == "INVALID_ARGUMENT" and "not an image" in lines[3]["error"]
    saved = np.load(tmp_path / "f.npz")
    assert sorted(saved.files) == sorted(files) and saved[files[0]].shape == (576,)
    out = subprocess.run([*run, "classify", files[0], "--top-k", "2", "--target", node.target],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and len(json.loads(out.stdout)["classes"]) == 2
    assert json.loads(out.stdout)["source"] == "l1"
    out = subprocess.run([*run, "models", "--target", node.target], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["name"] == "mobilenet_v3_small"
    for cmd in (["--help"], ["extract", "--help"], ["classify", "--help"]):
        assert subprocess.run([*run, *cmd], capture_output=True, timeout=60).returncode == 0


def test_client_retries_across_a_node_restart_and_loses_nothing(nodes):
    import threading

    node = nodes("a", "--max-batch", "1", "--drain-delay-s", "0.2")
    images = [jpeg(1400 + i, size=(224, 224)) for i in range(80)]
    restarted = threading.Event()

    def restart():
        time.sleep(1.0)
        node.stop()  # drains: its streams end UNAVAILABLE, unanswered items go back to the client
        node.start()
        restarted.set()

    t = threading.Thread(target=restart)
    t.start()
    # A restart takes 4 to 7 s here (drain, then torch and the model load); 30 retries at 0.5 s with
    # jitter could run out after 7 s, so give the client 80 (20 to 40 s).
    with Client(node.target, retries=80, backoff_max_s=0.5, window=8) as c:
        results = c.extract_detailed(images)
    t.join()
    assert restarted.is_set()
    assert all(not isinstance(r, Exception) for r in results), [r for r in results if isinstance(r, Exception)][:3]
    with Client(node.target) as c:
        truth = c.extract(images, cache_mode="bypass")
    assert np.array_equal(np.stack([r.vector for r in results]), truth)


def test_expired_values_are_pruned_from_the_perceptual_index(nodes, redis_db):
    from ringserve.server import mih

    node = nodes("a", "--redis-url", redis_db.url, "--cache-default-radius", "8", "--cache-perceptual-index")
    original = jpeg(1500, quality=95)
    target = fingerprint.phash_bytes(original)
    reencoded = next(e for e in (jpeg(1500, quality=q) for q in range(90, 20, -5))
                     if 0 < fingerprint.hamming(fingerprint.phash_bytes(e), target) <= 8)
    with Client(node.target) as c:
        version = c.extract_detailed([original])[0].provenance.model_version
    node.stop()
    ns = Namespace("mobilenet_v3_small", version)
    r = redis_py.Redis(port=redis_db.port)
    chunk_keys = [ns.chunk(i, v) for i, v in enumerate(mih.chunks(target))]
    assert all(r.sismember(k, f"{target:016x}") for k in chunk_keys)
    r.delete(ns.perceptual(target))  # the fingerprint's pointer expires before its index entry
    node = nodes("a", "--redis-url", redis_db.url, "--cache-default-radius", "8")
    with Client(node.target) as c:
        miss = c.extract_detailed([reencoded], cache_mode="perceptual")[0]
    assert miss.provenance.source == "computed"
    deadline = time.monotonic() + 10
    while any(r.sismember(k, f"{target:016x}") for k in chunk_keys):
        assert time.monotonic() < deadline, "the stale index entry was not pruned"
        time.sleep(0.05)


def test_transparent_and_featureless_images_through_a_real_node(nodes, redis_db):
    """A shape drawn only in alpha reaches the model as that shape, and different shapes get different
    features; a flat image is answered, marked low-information, and never served to another flat one."""
    from ringserve.local.imagegen import alpha_shape, featureless

    node = nodes("a", "--redis-url", redis_db.url, "--cache-default-radius", "8")
    shapes = [encode(alpha_shape(s, (255, 255, 255), (224, 224)), "PNG") for s in ("disc", "bar", "ring")]
    blank = encode(featureless("flat-255-255-255", (224, 224)), "PNG")
    with Client(node.target) as c:
        # An exact-only miss of a low-information picture: no fingerprint computed (none would be written), so the
        # node says nothing of it.
        gradient = encode(featureless("hgradient", (224, 224)), "PNG")
        assert fingerprint.of_bytes(gradient).low_information
        exact = c.extract_detailed([gradient])[0]
        assert exact.provenance.source == "computed" and not exact.provenance.low_information
        found = c.extract_detailed([*shapes, blank], cache_mode="perceptual")
        vectors = [f.vector.astype(np.float32) for f in found]
        for i in range(4):
            for j in range(i + 1, 4):
                cos = float(vectors[i] @ vectors[j] / np.linalg.norm(vectors[i]) / np.linalg.norm(vectors[j]))
                assert cos < 0.99, (i, j, cos)  # blank, and each other, before alpha was composited
        assert [f.provenance.low_information for f in found] == [False, False, False, True]
        grey = encode(featureless("flat-250-250-250", (224, 224)), "PNG")
        other = c.extract_detailed([grey], cache_mode="perceptual")[0]
        assert other.provenance.source == "computed" and other.provenance.low_information
        assert not other.provenance.perceptual
    node.stop()
