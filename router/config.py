"""Router configuration: one dataclass per component, and the router's flags made from them (``contract.flags``).

Every field is a flag named after it, and every flag can also come from the environment as
RINGSERVE_ROUTER_<FLAG> (``--members-static`` is ``RINGSERVE_ROUTER_MEMBERS_STATIC``); a flag on the
command line wins.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ringserve.contract import ring
from ringserve.contract.flags import Flags, setting
from ringserve.contract.images import ImageLimits
from ringserve.contract.tls import ClientTls, ServerTls
from ringserve.router.health import HealthConfig
from ringserve.router.hedging import HedgingConfig
from ringserve.router.membership.base import Member, parse_members
from ringserve.router.placement import PlacementPolicy
from ringserve.router.retry import RetryConfig
from ringserve.search.config import SearchConfig

ENV_PREFIX = "RINGSERVE_ROUTER_"
SOURCES = ("--members-static", "--members-file", "--members-dns-name", "--members-k8s-service")


@dataclass(frozen=True)
class MembershipConfig:
    """Exactly one source: a static list, a watched file, a DNS name, or Kubernetes EndpointSlices."""

    static: tuple[Member, ...] = setting((), parse=lambda text: tuple(parse_members(text)),
                                         metavar="NAME=HOST:PORT[*WEIGHT],...", help="a fixed list of nodes")
    file: Path | None = setting(None, help="file of name=host:port lines, re-read on change")
    dns_name: str | None = setting(
        None, help="DNS name: _grpc._tcp.<headless service> (SRV: pod names) or a plain name (A records)")
    # "namespace/service": the ready endpoints of that Service's EndpointSlices.
    k8s_service: str | None = setting(None, metavar="NAMESPACE/SERVICE",
                                      help="Kubernetes EndpointSlices of the nodes' Service (ready pods, named by pod)")
    k8s_port_name: str = setting("grpc", help="EndpointSlice port name of the nodes' gRPC port")
    k8s_api: str | None = setting(None, help="API server URL; none: the in-cluster configuration")
    dns_port: int = setting(50051, help="node port for A records (SRV records carry their own)")
    dns_server: str | None = setting(None, help="resolver address; none: the system's")
    dns_server_port: int = setting(53, help="resolver port")
    interval_s: float = setting(5.0, help="seconds between re-reads of the source")

    def __post_init__(self) -> None:
        if len(self.sources()) > 1:
            raise ValueError(f"give exactly one of {', '.join(SOURCES)}; got {', '.join(self.sources())}")
        if self.k8s_service and self.k8s_service.count("/") != 1:
            raise ValueError("--members-k8s-service takes NAMESPACE/SERVICE, e.g. default/ringserve-node")

    def sources(self) -> list[str]:
        """The flags of the sources this config names."""
        given = (self.static, self.file, self.dns_name, self.k8s_service)
        return [flag for flag, value in zip(SOURCES, given, strict=True) if value]

    def require_source(self) -> None:
        """What a router started from its flags needs (one built in code may pass its own source)."""
        if not self.sources():
            raise ValueError(f"give exactly one of {', '.join(SOURCES)}")


@dataclass(frozen=True)
class PlacementConfig:
    # Consistent hashing with bounded loads, or round-robin (for comparison only).
    policy: PlacementPolicy = setting(PlacementPolicy.RING, help="how a node is picked for an item")
    load_factor: float = setting(ring.DEFAULT_LOAD_FACTOR,
                                 help="bounded loads c: pass over a node above c x the mean in-flight load")
    # Below this many items in flight a node is never passed over (bounded loads apply above it).
    min_load: int = setting(ring.DEFAULT_MIN_LOAD, help="in-flight items below which a node keeps its own keys "
                            "whatever the mean (1: no floor)")
    # Where a key goes when its owner is over capacity (contract/ring.py's Spill). "hot" by default: at Zipf 1.2 it
    # kept max/mean items per node at 1.07-1.18 with the best L1 hit ratio (bench/results/hotkeys.md, docs/design.md).
    spill: ring.Spill = setting(ring.Spill.HOT, help="where a key over its owner's bounded load goes: the next "
                                "node clockwise, a random jump per key (Chen et al., Envoy), or for hot keys the less "
                                "loaded of their first two nodes")
    # Items in flight through the router, all callers together; past it RESOURCE_EXHAUSTED.
    max_inflight: int = setting(4096, help="items in flight through this router; past it RESOURCE_EXHAUSTED")
    # Items this router has in flight on one node; more wait here for room (Ray Serve's
    # max_ongoing_requests). Keep it at or below the nodes' --max-queue, so that a node coming
    # back after an outage is not handed the whole backlog at once.
    max_node_inflight: int = setting(256, help="items in flight on one node from this router; more wait here "
                                     "(at most the nodes' --max-queue)")

    def __post_init__(self) -> None:
        if self.load_factor < 1.0:
            raise ValueError(f"--load-factor {self.load_factor} must be >= 1 (1 means perfectly even)")
        if self.min_load < 1:
            raise ValueError(f"--min-load {self.min_load} must be >= 1 (1 applies bounded loads from the first item)")
        if self.max_node_inflight < 1:
            raise ValueError(f"--max-node-inflight {self.max_node_inflight} must be >= 1")


@dataclass(frozen=True)
class RouterConfig:
    router_id: str = setting(default_factory=socket.gethostname, help="this router's name in logs and metrics")
    host: str = setting("0.0.0.0", help="address to listen on")
    port: int = setting(50050, help="gRPC port (0 picks a free one)")
    metrics_port: int = setting(0, help="Prometheus /metrics port, 0 for none")
    tls: ServerTls = setting(ServerTls(), prefix="tls-", group="TLS of this router's port (docs/deploy.md)")
    health_port: int = setting(0, help="plaintext port serving grpc.health.v1 alone, for kubelet gRPC probes when "
                               "--tls-cert-file puts TLS on the gRPC port (probes speak no TLS); 0: none")
    # The router's links and health checks to the nodes: their CA, and the router's client certificate.
    node_tls: ClientTls = setting(ClientTls(), prefix="node-tls-", group="TLS to the nodes (links, health checks)")
    membership: MembershipConfig = setting(MembershipConfig(), prefix="members-", group="membership (exactly one)")
    placement: PlacementConfig = setting(PlacementConfig(), group="placement")
    retry: RetryConfig = setting(RetryConfig(), prefix="retry-", group="retries", about={
        "budget_s": "seconds an item is re-sent when its caller set no deadline",
        "backoff_base_s": "seconds before the second round over the nodes, doubled per round",
        "backoff_max_s": "longest pause between rounds",
        "max_attempts": "nodes an overloaded item is offered to before RESOURCE_EXHAUSTED reaches the caller",
        "reserve_share": "share of the caller's time kept back, so the reply beats the caller's deadline",
        "reserve_max_s": "most seconds kept back"})
    hedge: HedgingConfig = setting(HedgingConfig(), prefix="hedge-", group="per-try bound and hedging")
    health: HealthConfig = setting(HealthConfig(), group="health", about={
        "failures_to_eject": "failed forwards in a row that eject a node",
        "base_ejection_s": "seconds a failing node stays ejected, doubled per repeat",
        "max_ejection_s": "longest ejection",
        "watch_retry_s": "seconds between tries to re-open a broken health watch"})
    limits: ImageLimits = setting(ImageLimits(), prefix="image-", group="limits", about={
        "max_bytes": "largest image, e.g. 20M", "max_pixels": "most pixels of an image this router fingerprints",
        "max_side": "longest side of an image this router fingerprints, in pixels"})
    hash_workers: int = setting(2, help="threads that fingerprint unhinted images")
    # Fingerprints remembered by the digest of the bytes, for items that carry no hint.
    fingerprint_memo: int = setting(65_536, help="fingerprints of unhinted images remembered by digest, so a "
                                    "repeat is never decoded here")
    drain_delay_s: float = setting(1.0, help="seconds to keep serving after SIGTERM while health reports NOT_SERVING")
    grace_s: float = setting(30.0, help="most seconds to finish admitted items on stop")
    log_level: str = setting("INFO", help="DEBUG, INFO, WARNING or ERROR")
    otlp_endpoint: str | None = setting(None, help="send traces to this OTLP/gRPC collector (needs [tracing])")
    trace_file: Path | None = setting(None, help="append finished spans here as JSON lines")
    search: SearchConfig = setting(SearchConfig(), prefix="search-", group="search")


# Old spellings, still read (with a warning) so that manifests written for them keep working.
RENAMED = {
    "--drain-delay": "--drain-delay-s", "--grace": "--grace-s", "--members": "--members-static",
    "--members-dns": "--members-dns-name", "--dns-node-port": "--members-dns-port",
    "--dns-server": "--members-dns-server", "--dns-server-port": "--members-dns-server-port",
    "--members-k8s": "--members-k8s-service", "--k8s-port-name": "--members-k8s-port-name",
    "--k8s-api": "--members-k8s-api", "--members-interval": "--members-interval-s", "--placement": "--policy",
    "--retry-budget": "--retry-budget-s", "--backoff-base": "--retry-backoff-base-s",
    "--backoff-max": "--retry-backoff-max-s", "--max-attempts": "--retry-max-attempts",
    "--base-ejection": "--base-ejection-s", "--max-image-bytes": "--image-max-bytes",
    "--search-poll": "--search-poll-s", "--search-snapshot-every": "--search-snapshot-every-s",
}
FLAGS = Flags(RouterConfig, ENV_PREFIX, "router", RENAMED)


def build_parser() -> argparse.ArgumentParser:
    return FLAGS.parser(
        "ringserve-router",
        "Route Extract and Classify items to ringserve nodes on a consistent-hash ring of image fingerprints, with "
        "health checks, failover and bounded loads, and serve the Search service. Every flag can be set as "
        "RINGSERVE_ROUTER_<FLAG> in the environment (--members-static: RINGSERVE_ROUTER_MEMBERS_STATIC); the "
        "command line wins.")


def from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> RouterConfig:
    return FLAGS.parse(build_parser(), argv, os.environ if environ is None else environ,
                       check=lambda config: config.membership.require_source())
