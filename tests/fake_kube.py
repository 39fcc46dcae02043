"""A fake Kubernetes API server that speaks the real list/watch protocol for EndpointSlices.

The Kubernetes API is the one boundary that cannot run here; this serves the
same HTTP paths, JSON shapes, resourceVersions, chunked watch streams, ERROR
events (410 Gone) and failures that a real API server does, for one resource.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

PATH = "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"


def endpoint_slice(name: str, service: str, pods: dict[str, tuple[str, bool]], port: int = 50051) -> dict:
    """An EndpointSlice with one endpoint per pod: name -> (ip, ready)."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}, {"name": "metrics", "port": 9464}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": not ready},
             "hostname": pod, "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}}
            for pod, (ip, ready) in pods.items()
        ],
    }


class FakeKubeAPI:
    def __init__(self) -> None:
        self.slices: dict[str, dict] = {}
        self.version = 100
        self.watchers: list[asyncio.Queue] = []
        self.history: list[tuple[int, dict]] = []  # (resourceVersion, event): replayed to a watch that starts behind
        self.fail_next_lists = 0
        self.lists = 0
        self.watches = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeKubeAPI:
        app = web.Application()
        app.router.add_get(PATH, self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        for q in self.watchers:
            q.put_nowait(None)
        await self.runner.cleanup()

    def _bump(self, obj: dict) -> dict:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return obj

    def apply(self, obj: dict) -> None:
        kind = "MODIFIED" if obj["metadata"]["name"] in self.slices else "ADDED"
        self.slices[obj["metadata"]["name"]] = self._bump(obj)
        self._send({"type": kind, "object": obj})

    def delete(self, name: str) -> None:
        obj = self._bump(self.slices.pop(name))
        self._send({"type": "DELETED", "object": obj})

    def expire_watches(self) -> None:
        """What an API server does after compaction: 410 Gone on the open watches."""
        self._send({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                 "reason": "Expired", "code": 410, "message": "too old resource version"}})

    def _send(self, event: dict) -> None:
        if event["type"] != "ERROR":
            self.history.append((self.version, event))
        for q in self.watchers:
            q.put_nowait(event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        selector = request.query.get("labelSelector", "")
        label = "kubernetes.io/service-name"
        matching = [s for s in self.slices.values()
                    if selector in ("", f"{label}={s['metadata']['labels'][label]}")]
        if request.query.get("watch") not in ("true", "1", "True"):
            self.lists += 1
            if self.fail_next_lists:
                self.fail_next_lists -= 1
                return web.json_response({"kind": "Status", "status": "Failure", "code": 500,
                                          "message": "etcd is sad"}, status=500)
            return web.json_response({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                                      "metadata": {"resourceVersion": str(self.version)}, "items": matching})
        self.watches += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        q: asyncio.Queue = asyncio.Queue()
        since = int(request.query.get("resourceVersion") or self.version)
        for version, event in self.history:
            if version > since:
                q.put_nowait(event)
        self.watchers.append(q)
        try:
            while True:
                event = await q.get()
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
                if event["type"] == "ERROR":
                    break
        finally:
            self.watchers.remove(q)
        return response
