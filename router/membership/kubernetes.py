"""Members from the Kubernetes API: the EndpointSlices of the nodes' headless Service.

List, then watch from the list's resourceVersion; every event updates the slice
set and yields the ready endpoints, named by their Pod (the StatefulSet pod
name, so a restarted pod keeps its arc). A watch that ends, an ERROR event (410
Gone after a compaction) or an API error re-lists after a pause: the last good
list stays in force meanwhile, so an API hiccup never empties the ring.
Needs RBAC to get, list and watch endpointslices in the namespace (k8s/base).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from ringserve.router.membership.base import Member

log = logging.getLogger(__name__)
SERVICE_LABEL = "kubernetes.io/service-name"


def members_of(slices: dict[str, Any], port_name: str) -> list[Member]:
    """Ready endpoints of every slice, identified by Pod name."""
    out: dict[str, Member] = {}
    for endpoint_slice in slices.values():
        ports = endpoint_slice.ports or []
        port = next((p.port for p in ports if p.name == port_name), None)
        if port is None and len(ports) == 1:
            port = ports[0].port
        if port is None:
            log.warning("EndpointSlice %s has no port named %r", endpoint_slice.metadata.name, port_name)
            continue
        for endpoint in endpoint_slice.endpoints or []:
            conditions = endpoint.conditions
            ready = conditions is None or conditions.ready is None or conditions.ready
            if not ready or not endpoint.addresses:
                continue
            ref = endpoint.target_ref
            name = ref.name if ref is not None and ref.kind == "Pod" else endpoint.hostname or endpoint.addresses[0]
            host = endpoint.addresses[0]
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            out[name] = Member(name=name, address=address)
    return sorted(out.values())


class EndpointSliceSource:
    def __init__(self, namespace: str, service: str, port_name: str = "grpc", api_url: str | None = None,
                 retry_s: float = 1.0, watch_timeout_s: int = 300) -> None:
        self.namespace = namespace
        self.service = service
        self.port_name = port_name
        self.api_url = api_url
        self.retry_s = retry_s
        self.watch_timeout_s = watch_timeout_s

    async def _api_client(self) -> Any:
        from kubernetes_asyncio import client, config

        if self.api_url:  # an explicit API server (tests, kubectl proxy)
            configuration = client.Configuration(host=self.api_url)
            return client.ApiClient(configuration)
        config.load_incluster_config()
        return client.ApiClient()

    async def watch(self) -> AsyncIterator[list[Member]]:
        import aiohttp
        from kubernetes_asyncio import client, watch
        from kubernetes_asyncio.client.exceptions import ApiException

        selector = f"{SERVICE_LABEL}={self.service}"
        last: list[Member] | None = None
        api_client = await self._api_client()
        try:
            api = client.DiscoveryV1Api(api_client)
            while True:
                try:
                    listed = await api.list_namespaced_endpoint_slice(self.namespace, label_selector=selector)
                    slices = {s.metadata.name: s for s in listed.items}
                    members = members_of(slices, self.port_name)
                    if members != last:
                        last = members
                        yield members
                    stream = watch.Watch().stream(
                        api.list_namespaced_endpoint_slice, self.namespace, label_selector=selector,
                        resource_version=listed.metadata.resource_version, timeout_seconds=self.watch_timeout_s,
                        allow_watch_bookmarks=True,
                    )
                    async with stream as events:
                        async for event in events:
                            kind = event["type"]
                            if kind == "ERROR":
                                log.info("EndpointSlice watch: %s; re-listing", event.get("raw_object"))
                                break
                            if kind == "BOOKMARK":
                                continue
                            obj = event["object"]
                            if kind == "DELETED":
                                slices.pop(obj.metadata.name, None)
                            else:
                                slices[obj.metadata.name] = obj
                            members = members_of(slices, self.port_name)
                            if members != last:
                                last = members
                                yield members
                except (TimeoutError, ApiException, aiohttp.ClientError, OSError, ValueError) as exc:
                    log.warning("EndpointSlice list/watch of %s/%s failed (%s); keeping the last list, retrying",
                                self.namespace, self.service, exc)
                    await asyncio.sleep(self.retry_s)
        finally:
            await api_client.close()
