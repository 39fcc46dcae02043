"""Digest-first lookups through real node processes and a real Redis (the slow tier; tests/test_digest.py is
the fast one). Raw gRPC: the Python client's digest-first sending is its own work."""

from __future__ import annotations

import time

import grpc
import redis as redis_py

from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.imagegen import jpeg
from tests.test_digest import digest_of


def test_real_nodes_answer_a_digest_from_l1_and_redis_and_never_write_for_it(nodes, redis_db):
    image, unseen = jpeg(500), jpeg(501)
    a = nodes("a", "--redis-url", redis_db.url)
    b = nodes("b", "--redis-url", redis_db.url)
    off = nodes("c", "--redis-url", redis_db.url, "--no-cache-digest-lookups")

    def one(node, **fields) -> pb.ExtractReply:
        with grpc.insecure_channel(node.target) as channel:
            request = pb.ImageRequest(request_id="1", **fields)
            return next(iter(pb_grpc.InferenceStub(channel).Extract(iter([request]), timeout=60)))

    computed, elsewhere = one(a, image=image), one(a, image=unseen)
    assert computed.provenance.source == pb.SOURCE_COMPUTED and computed.feature.data != elsewhere.feature.data
    with redis_py.Redis(port=redis_db.port) as r:
        deadline = time.monotonic() + 10
        while len(r.keys("*:x:*")) < 2 or r.keys("*:lock:*"):  # the write-back is queued: wait until it lands
            assert time.monotonic() < deadline, "the node's write-back never landed"
            time.sleep(0.02)
        stored = {key: r.get(key) for key in r.keys("*")}
        hits = [one(a, digest=digest_of(image)), one(b, digest=digest_of(image)), one(b, digest=digest_of(image))]
        assert [h.provenance.source for h in hits] == [pb.SOURCE_L1, pb.SOURCE_L2, pb.SOURCE_L1]
        assert all(h.feature.data == computed.feature.data for h in hits)
        assert one(b, digest=digest_of(unseen)).feature.data == elsewhere.feature.data
        misses = [one(b, digest=digest_of(jpeg(502))), one(off, digest=digest_of(image))]
        assert all(m.image_required and m.status.code == 0 and not m.HasField("feature") for m in misses)
        assert {key: r.get(key) for key in r.keys("*")} == stored
