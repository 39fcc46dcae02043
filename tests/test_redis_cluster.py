"""The L2 tier against a real 3-master Redis Cluster on loopback."""

from __future__ import annotations

import numpy as np
import pytest
import redis as redis_py

from ringserve.client import Client
from ringserve.local.imagegen import jpeg
from ringserve.server.keys import Namespace, exact_digest

pytestmark = pytest.mark.cluster


def test_node_on_redis_cluster_serves_l2_hits_exact_and_perceptual(nodes, redis_cluster):
    url = redis_cluster.url
    node = nodes("a", "--redis-url", url, "--cache-default-radius", "6", "--cache-perceptual-index",
                 "--cache-verify-min-psnr", "40")  # what these small pictures' re-encodings pass
    images = [jpeg(2000 + i, quality=95) for i in range(8)]
    with Client(node.target) as c:
        first = c.extract_detailed(images)
    assert all(f.provenance.source == "computed" for f in first)
    assert node.stop() == 0
    # keys spread over the masters
    ns = Namespace("mobilenet_v3_small", first[0].provenance.model_version)
    client = redis_py.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    assert all(client.exists(ns.exact(exact_digest(i))) for i in images)
    holders = {client.keyslot(ns.exact(exact_digest(i))) // 5462 for i in images}
    assert len(holders) >= 2
    node = nodes("b", "--redis-url", url, "--cache-default-radius", "6", "--cache-verify-min-psnr", "40")
    with Client(node.target) as c:
        again = c.extract_detailed(images)
        near = c.extract_detailed([jpeg(2000, quality=75)], cache_mode="perceptual")[0]
    assert [a.provenance.source for a in again] == ["l2"] * 8
    assert all(np.array_equal(a.vector, f.vector) for a, f in zip(again, first, strict=True))
    assert near.provenance.source in ("l2", "l1") and near.provenance.perceptual
