"""Who is on the ring: each node's grpc.health.v1 status, and outlier ejection.

A node is on the ring when its health Watch says SERVING and it is not ejected.
NOT_SERVING (a node draining on SIGTERM) or a broken watch (a node that died)
takes it off at once. Consecutive forwarding failures eject it for a time that
doubles with every ejection (Envoy's outlier detection), so a node that keeps
failing cannot flap the ring; after that time it comes back only if its health
check says SERVING. It keeps no table of its own: each node's ``NodeHealth``
lives in the registry's entry for it, and ``on_change`` is told whenever a node
may have joined or left the ring.
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

from ringserve.contract.tls import ClientTls, TlsError, aio_channel
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
    """Health policy over ``NodeHealth`` records it is handed: watches, failures, ejections."""

    def __init__(self, config: HealthConfig, on_change: Callable[[], None],
                 on_eject: Callable[[str], None] | None = None, tls: ClientTls | None = None) -> None:
        """``tls``: the watches' TLS and client certificate, the links' own (None: plaintext)."""
        self.config = config
        self.tls = tls
        self.on_change = on_change
        self._on_eject = on_eject or (lambda _name: None)

    def watch(self, health: NodeHealth) -> None:
        """Start following the node's grpc.health.v1 status (until ``forget``)."""
        health.watcher = asyncio.get_running_loop().create_task(self._watch(health), name=f"health-{health.member.name}")

    @staticmethod
    async def forget(health: NodeHealth) -> None:
        """Stop following a node that left the membership."""
        if health.watcher is not None:
            health.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health.watcher

    # ---- what forwarding tells us --------------------------------------------------------

    def failure(self, health: NodeHealth, reason: str) -> None:
        health.failures += 1
        if health.failures >= self.config.failures_to_eject and not health.ejected:
            self.eject(health, f"{health.failures} consecutive failures, last: {reason}")

    @staticmethod
    def success(health: NodeHealth) -> None:
        health.failures = 0

    def eject(self, health: NodeHealth, reason: str) -> None:
        health.ejections += 1
        duration = min(self.config.max_ejection_s, self.config.base_ejection_s * 2 ** (health.ejections - 1))
        health.ejected_until = time.monotonic() + duration
        health.reason = f"ejected for {duration:.0f}s: {reason}"
        health.failures = 0
        log.warning("node %s %s", health.member.name, health.reason)
        self._on_eject(health.member.name)
        asyncio.get_running_loop().call_later(duration, self._ejection_over, health)
        self.on_change()

    def admit(self, health: NodeHealth) -> None:
        """End an ejection now (an operator's override); the node still needs SERVING to be on the ring."""
        health.ejected_until = 0.0
        self.on_change()

    def _ejection_over(self, health: NodeHealth) -> None:
        if not health.ejected:
            name = health.member.name
            log.info("node %s ejection over; %s", name, "back on the ring" if health.serving else "not SERVING yet")
            self.on_change()

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
            self.on_change()

    async def _watch(self, health: NodeHealth) -> None:
        member = health.member
        while True:
            try:
                channel = aio_channel(member.address, tls=self.tls)
            except TlsError as exc:  # files caught mid-rotation: off the ring until a channel can be made
                self._set_serving(health, False, f"no channel to its health service: {exc}")
                await asyncio.sleep(self.config.watch_retry_s)
                continue
            async with channel:
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
