"""Members from DNS: a Kubernetes headless Service, re-resolved every few seconds.

With an SRV name (``_grpc._tcp.ringserve-node.default.svc.cluster.local``)
each record's target is a pod's own DNS name (``ringserve-node-0.ringserve-node...``),
whose first label is the pod name: a stable identity, so a restarted pod comes
back to its own arc. With a plain name, A records give addresses only, and the
address is the identity (fine for fixed hosts, not for pods that move). A
resolution failure keeps the last list: DNS hiccups must not empty the ring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import dns.asyncresolver
import dns.exception
import dns.resolver

from ringserve.router.membership.base import Member

log = logging.getLogger(__name__)


class DnsSource:
    def __init__(self, name: str, port: int = 50051, interval_s: float = 5.0,
                 nameserver: str | None = None, nameserver_port: int = 53, timeout_s: float = 2.0) -> None:
        self.name = name
        self.port = port
        self.interval_s = interval_s
        self.resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self.resolver.nameservers = [nameserver]
            self.resolver.port = nameserver_port
        self.resolver.lifetime = timeout_s

    async def resolve(self) -> list[Member]:
        if self.name.startswith("_"):
            answer = await self.resolver.resolve(self.name, "SRV")
            members = []
            for record in answer:
                target = record.target.to_text(omit_final_dot=True)
                members.append(Member(name=target.split(".", 1)[0], address=f"{target}:{record.port}",
                                      weight=max(1, record.weight)))
            return sorted(set(members))
        answer = await self.resolver.resolve(self.name, "A")
        return sorted({Member(name=r.address, address=f"{r.address}:{self.port}") for r in answer})

    async def watch(self) -> AsyncIterator[list[Member]]:
        last: list[Member] | None = None
        while True:
            try:
                members = await self.resolve()
            except dns.resolver.NXDOMAIN:
                members = []  # the Service has no ready pods: that is a real, empty answer
            except (dns.exception.DNSException, OSError) as exc:
                log.warning("DNS lookup of %s failed (%s); keeping the last list", self.name, exc)
                members = last
            if members is not None and members != last:
                last = members
                yield members
            await asyncio.sleep(self.interval_s)
