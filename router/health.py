"""Who is on the ring: each node's grpc.health.v1 status, and outlier ejection.

A node is on the ring when its health Watch says SERVING and it is not ejected.
NOT_SERVING (a node draining on SIGTERM) or a broken watch (a node that died)
takes it off at once. Consecutive forwarding failures eject it for a time that
doubles with every ejection (Envoy's outlier detection), so a node that keeps
failing cannot flap the ring; after that time it comes back only if its health
check says SERVING. Membership changes reach the ring through ``on_change``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ringserve.router.membership.base import Member

log = logging.getLogger(__name__)
SERVICE = "ringserve.v1.Inference"


@dataclass(frozen=True)
class HealthConfig:
    # Consecutive failed forwards that eject a node.
    failures_to_eject: int = 3
    base_ejection_s: float = 5.0
    max_ejection_s: float = 120.0
    # Pause between attempts to re-open a broken health watch.
    watch_retry_s: float = 0.5


@dataclass
class NodeHealth:
    member: Member
    serving: bool = False
    reason: str = "waiting for the first health check"
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    watcher: asyncio.Task | None = field(default=None, repr=False)

    @property
    def ejected(self) -> bool:
        return time.monotonic() < self.ejected_until

    @property
    def on_ring(self) -> bool:
        return self.serving and not self.ejected


class HealthTracker:
    def __init__(self, config: HealthConfig, on_change: Callable[[], None],
                 on_eject: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._on_change = on_change
        self._on_eject = on_eject or (lambda _name: None)
        self.nodes: dict[str, NodeHealth] = {}

    def on_ring(self) -> dict[str, Member]:
        return {name: h.member for name, h in self.nodes.items() if h.on_ring}

    def set_members(self, members: list[Member]) -> None:
        """Start watching new members, stop watching removed ones; a moved address is a new watch."""
        wanted = {m.name: m for m in members}
        for name in list(self.nodes):
            if name not in wanted or wanted[name] != self.nodes[name].member:
                self._forget(name)
        for name, member in wanted.items():
            if name not in self.nodes:
                health = NodeHealth(member)
                self.nodes[name] = health
                health.watcher = asyncio.get_running_loop().create_task(self._watch(health), name=f"health-{name}")
        self._on_change()

    def _forget(self, name: str) -> None:
        health = self.nodes.pop(name)
        if health.watcher is not None:
            health.watcher.cancel()

    # ---- what forwarding tells us --------------------------------------------------------

    def failure(self, name: str, reason: str) -> None:
        health = self.nodes.get(name)
        if health is None:
            return
        health.failures += 1
        if health.failures >= self.config.failures_to_eject and not health.ejected:
            self.eject(name, f"{health.failures} consecutive failures, last: {reason}")

    def success(self, name: str) -> None:
        health = self.nodes.get(name)
        if health is not None:
            health.failures = 0

    def eject(self, name: str, reason: str) -> None:
        health = self.nodes[name]
        health.ejections += 1
        duration = min(self.config.max_ejection_s, self.config.base_ejection_s * 2 ** (health.ejections - 1))
        health.ejected_until = time.monotonic() + duration
        health.reason = f"ejected for {duration:.0f}s: {reason}"
        health.failures = 0
        log.warning("node %s %s", name, health.reason)
        self._on_eject(name)
        asyncio.get_running_loop().call_later(duration, self._ejection_over, name)
        self._on_change()

    def admit(self, name: str) -> None:
        """End an ejection now (an operator's override); the node still needs SERVING to be on the ring."""
        health = self.nodes[name]
        health.ejected_until = 0.0
        self._on_change()

    def _ejection_over(self, name: str) -> None:
        health = self.nodes.get(name)
        if health is not None and not health.ejected:
            log.info("node %s ejection over; %s", name, "back on the ring" if health.serving else "not SERVING yet")
            self._on_change()

    # ---- grpc.health.v1 Watch --------------------------------------------------------------

    def _set_serving(self, health: NodeHealth, serving: bool, reason: str) -> None:
        if health.serving == serving and health.reason == reason:
            return
        was = health.on_ring
        health.serving = serving
        if not health.ejected:
            health.reason = reason
        if health.on_ring != was:
            log.info("node %s %s the ring: %s", health.member.name, "joins" if health.on_ring else "leaves", reason)
            self._on_change()

    async def _watch(self, health: NodeHealth) -> None:
        member = health.member
        while True:
            async with grpc.aio.insecure_channel(member.address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                try:
                    async for reply in stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE)):
                        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                        self._set_serving(health, reply.status == health_pb2.HealthCheckResponse.SERVING,
                                          f"health {status}")
                    self._set_serving(health, False, "health watch ended")
                except grpc.aio.AioRpcError as exc:
                    self._set_serving(health, False, f"health watch failed: {exc.code().name}")
            await asyncio.sleep(self.config.watch_retry_s)

    async def close(self) -> None:
        for name in list(self.nodes):
            task = self.nodes[name].watcher
            self._forget(name)
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
