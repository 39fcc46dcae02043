"""The client's digest-first lookups through real nodes, a router and Redis (the slow tier; the fast one is
tests/test_client_digest.py): a second pass over the same images sends none of their bytes."""

from __future__ import annotations

from collections import Counter

from ringserve.client import Client
from ringserve.local.cluster import LocalCluster
from ringserve.local.imagegen import jpeg
from tests.conftest import SMALL_MODEL


def counted(client: Client) -> Counter:
    """The bytes of every request message ``client``'s item streams send from now on (as serialised)."""
    sent: Counter = Counter()

    def wrap(call):
        async def messages(source):
            async for message in source:
                sent["bytes"] += len(message)
                sent["messages"] += 1
                yield message

        return lambda source, **kwargs: call(messages(source), **kwargs)

    inner = client._client
    inner._calls = {key: wrap(call) for key, call in inner._calls.items()}
    if inner._shared is not None:  # the shared stream opens its calls from the same methods
        inner._shared._calls = inner._calls
    return sent


def test_a_second_pass_through_router_and_node_sends_no_image_bytes(workdir, request, redis_db):
    images = [jpeg(7_000 + i, size=(320, 240)) for i in range(16)]
    assert min(len(i) for i in images) > 4_000
    cluster = LocalCluster(workdir / request.node.name, redis_db.url, SMALL_MODEL, ["--drain-delay-s", "0"])
    try:
        cluster.add("node-0", "node-1")
        cluster.start_router()
        with Client(cluster.router.target, digest_first_min_bytes=0, window=8) as c:
            sent = counted(c)
            first = c.extract_detailed(images)
            assert sent["bytes"] > sum(len(i) for i in images)  # every image asked for, and sent once
            sent.clear()
            again = c.extract_detailed(images)
        routed = sent["bytes"]
        with Client(cluster.nodes["node-1"].target, digest_first_min_bytes=0) as c:  # straight to a node: L1 or L2
            sent = counted(c)
            direct = c.extract_detailed(images)
    finally:
        cluster.stop()
    assert [r.provenance.source for r in first] == ["computed"] * len(images)
    assert {r.provenance.source for r in again} == {"l1"} and {r.provenance.source for r in direct} <= {"l1", "l2"}
    assert [r.vector.tobytes() for r in again] == [r.vector.tobytes() for r in first]
    assert [r.vector.tobytes() for r in direct] == [r.vector.tobytes() for r in first]
    # no image: a digest, a hint, an id and a policy per item (under 100 bytes), never one image's 4 KB
    assert routed < 100 * len(images) and sent["bytes"] < 100 * len(images), (routed, sent)
