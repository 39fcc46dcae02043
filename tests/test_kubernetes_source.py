"""The EndpointSlice membership source against a fake API server speaking list/watch."""

from __future__ import annotations

import asyncio

import pytest

from ringserve.router.membership.kubernetes import EndpointSliceSource
from tests.fake_kube import FakeKubeAPI, endpoint_slice


@pytest.fixture
async def api():
    server = await FakeKubeAPI().start()
    yield server
    await server.stop()


async def next_members(agen, wait_s=5.0):
    return await asyncio.wait_for(agen.__anext__(), wait_s)


async def test_lists_then_follows_watch_events_ready_pods_only(api):
    api.apply(endpoint_slice("node-abc", "ringserve-node", {"ringserve-node-0": ("10.0.0.1", True),
                                                           "ringserve-node-1": ("10.0.0.2", False)}))
    api.apply(endpoint_slice("other", "something-else", {"x-0": ("10.9.9.9", True)}))
    agen = EndpointSliceSource("default", "ringserve-node", api_url=api.url, retry_s=0.05).watch()
    first = await next_members(agen)
    assert [(m.name, m.address) for m in first] == [("ringserve-node-0", "10.0.0.1:50051")]
    # pod 1 becomes ready: a MODIFIED event
    api.apply(endpoint_slice("node-abc", "ringserve-node", {"ringserve-node-0": ("10.0.0.1", True),
                                                           "ringserve-node-1": ("10.0.0.2", True)}))
    assert [m.name for m in await next_members(agen)] == ["ringserve-node-0", "ringserve-node-1"]
    # a second slice is ADDED (scale-out past one slice), then DELETED
    api.apply(endpoint_slice("node-def", "ringserve-node", {"ringserve-node-2": ("10.0.0.3", True)}))
    assert [m.name for m in await next_members(agen)] == ["ringserve-node-0", "ringserve-node-1", "ringserve-node-2"]
    api.delete("node-def")
    assert [m.name for m in await next_members(agen)] == ["ringserve-node-0", "ringserve-node-1"]
    # a restarted pod comes back with a new IP under the same name: same identity
    api.apply(endpoint_slice("node-abc", "ringserve-node", {"ringserve-node-0": ("10.0.0.7", True),
                                                           "ringserve-node-1": ("10.0.0.2", True)}))
    restarted = await next_members(agen)
    assert restarted[0].name == "ringserve-node-0" and restarted[0].address == "10.0.0.7:50051"
    await agen.aclose()


async def test_relists_after_410_gone_and_after_api_errors(api):
    api.apply(endpoint_slice("s", "ringserve-node", {"p-0": ("10.0.0.1", True)}))
    agen = EndpointSliceSource("default", "ringserve-node", api_url=api.url, retry_s=0.05).watch()
    assert [m.name for m in await next_members(agen)] == ["p-0"]
    waiter = asyncio.ensure_future(next_members(agen))
    await asyncio.sleep(0.2)
    # the watch expires; meanwhile the slice changed and the next list fails once
    api.fail_next_lists = 1
    api.expire_watches()
    api.slices["s"] = endpoint_slice("s", "ringserve-node", {"p-0": ("10.0.0.1", True), "p-1": ("10.0.0.2", True)})
    api.slices["s"]["metadata"]["resourceVersion"] = "500"
    assert [m.name for m in await waiter] == ["p-0", "p-1"]
    assert api.lists >= 3  # the first, the failed one, the good one
    # and a fresh watch follows changes again
    api.apply(endpoint_slice("s", "ringserve-node", {"p-1": ("10.0.0.2", True)}))
    assert [m.name for m in await next_members(agen)] == ["p-1"]
    assert api.watches >= 2
    await agen.aclose()


async def test_router_follows_kubernetes_membership(api, workdir, nodes):
    """End to end: a real router process learns real nodes from the fake API server."""
    from ringserve.client import Client
    from ringserve.local.imagegen import jpeg
    from ringserve.local.processes import RouterProcess

    a = nodes("ringserve-node-0")
    b = nodes("ringserve-node-1")
    api.apply(endpoint_slice("s", "ringserve-node", {"ringserve-node-0": ("127.0.0.1", True)}, port=a.port))
    router = RouterProcess(workdir / "k8s", args=["--members-k8s-service", "default/ringserve-node", "--members-k8s-api", api.url,
                                                  "--drain-delay-s", "0"])
    router.members = None
    try:
        await asyncio.to_thread(router.start)
        await asyncio.to_thread(router.wait_members, 1)
        # the second pod lives on another port: a second slice for it
        api.apply(endpoint_slice("s2", "ringserve-node", {"ringserve-node-1": ("127.0.0.1", True)}, port=b.port))
        await asyncio.to_thread(router.wait_members, 2)
        with Client(router.target) as client:
            results = await asyncio.to_thread(client.extract_detailed, [jpeg(i) for i in range(20)])
        assert {r.provenance.node for r in results} == {"ringserve-node-0", "ringserve-node-1"}
    finally:
        await asyncio.to_thread(router.stop)
