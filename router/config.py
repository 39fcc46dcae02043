"""Router configuration: one dataclass per component, filled here and only here.

Every flag can also come from the environment as RINGSERVE_ROUTER_<FLAG>
(``--members`` is ``RINGSERVE_ROUTER_MEMBERS``); a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ringserve.contract.images import ImageLimits
from ringserve.router.health import HealthConfig
from ringserve.router.membership.base import Member, MembershipError, parse_members
from ringserve.router.placement import PlacementPolicy
from ringserve.router.retry import RetryConfig
from ringserve.runtime import process
from ringserve.search.config import SearchConfig
from ringserve.search.follower import FollowerConfig

ENV_PREFIX = "RINGSERVE_ROUTER_"


@dataclass(frozen=True)
class MembershipConfig:
    """Exactly one source: a static list, a watched file, a DNS name, or Kubernetes EndpointSlices."""

    static: tuple[Member, ...] = ()
    file: Path | None = None
    dns_name: str | None = None
    # "namespace/service": the ready endpoints of that Service's EndpointSlices.
    k8s_service: str | None = None
    k8s_port_name: str = "grpc"
    k8s_api: str | None = None  # default: in-cluster configuration
    dns_port: int = 50051  # node port for A records (SRV records carry their own)
    dns_server: str | None = None  # default: the system resolver
    dns_server_port: int = 53
    interval_s: float = 5.0


@dataclass(frozen=True)
class PlacementConfig:
    # Consistent hashing with bounded loads, or round-robin (for comparison only).
    policy: PlacementPolicy = PlacementPolicy.RING
    load_factor: float = 1.25
    # Below this many items in flight a node is never passed over (bounded loads apply above it).
    min_load: int = 8
    # Items in flight through the router, all callers together; past it RESOURCE_EXHAUSTED.
    max_inflight: int = 4096
    # Items this router has in flight on one node; more wait here for room (Ray Serve's
    # max_ongoing_requests). Keep it at or below the nodes' --max-queue, so that a node coming
    # back after an outage is not handed the whole backlog at once.
    max_node_inflight: int = 256

    def __post_init__(self) -> None:
        if self.load_factor < 1.0:
            raise ValueError(f"--load-factor {self.load_factor} must be >= 1 (1 means perfectly even)")
        if self.min_load < 1:
            raise ValueError(f"--min-load {self.min_load} must be >= 1 (1 applies bounded loads from the first item)")
        if self.max_node_inflight < 1:
            raise ValueError(f"--max-node-inflight {self.max_node_inflight} must be >= 1")


@dataclass(frozen=True)
class RouterConfig:
    router_id: str = field(default_factory=socket.gethostname)
    host: str = "0.0.0.0"
    port: int = 50050
    metrics_port: int = 0
    membership: MembershipConfig = MembershipConfig()
    placement: PlacementConfig = PlacementConfig()
    retry: RetryConfig = RetryConfig()
    health: HealthConfig = HealthConfig()
    limits: ImageLimits = ImageLimits()
    hash_workers: int = 2
    # Fingerprints remembered by the digest of the bytes, for items that carry no hint.
    fingerprint_memo: int = 65_536
    drain_delay_s: float = 1.0
    grace_s: float = 30.0
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    trace_file: Path | None = None
    search: SearchConfig = SearchConfig()


def build_parser() -> argparse.ArgumentParser:
    d = RouterConfig()
    p = argparse.ArgumentParser(
        prog="ringserve-router",
        description="Route Extract and Classify items to ringserve nodes on a consistent-hash ring of image "
        "fingerprints, with health checks, failover and bounded loads. Every flag can be set as "
        "RINGSERVE_ROUTER_<FLAG> in the environment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("router")
    g.add_argument("--router-id", default=d.router_id)
    g.add_argument("--host", default=d.host)
    g.add_argument("--port", type=int, default=d.port)
    g.add_argument("--metrics-port", type=int, default=d.metrics_port, help="Prometheus /metrics port, 0 for none")
    g.add_argument("--hash-workers", type=int, default=d.hash_workers, help="threads that fingerprint unhinted images")
    g.add_argument("--fingerprint-memo", type=int, default=d.fingerprint_memo,
                   help="fingerprints of unhinted images remembered by digest, so a repeat is never decoded here")
    g.add_argument("--drain-delay", type=float, default=d.drain_delay_s)
    g.add_argument("--grace", type=float, default=d.grace_s)
    g.add_argument("--log-level", default=d.log_level)
    g.add_argument("--otlp-endpoint", default=None, help="send traces to this OTLP/gRPC collector (needs [tracing])")
    g.add_argument("--trace-file", type=Path, default=None, help="append finished spans here as JSON lines")
    g = p.add_argument_group("membership (exactly one)")
    g.add_argument("--members", default=None, help="static list: name=host:port[*weight],...")
    g.add_argument("--members-file", type=Path, default=None, help="file of name=host:port lines, re-read on change")
    g.add_argument("--members-dns", default=None,
                   help="DNS name: _grpc._tcp.<headless service> (SRV: pod names) or a plain name (A records)")
    g.add_argument("--dns-node-port", type=int, default=50051, help="node port for A records")
    g.add_argument("--dns-server", default=None, help="resolver address (default: the system's)")
    g.add_argument("--dns-server-port", type=int, default=53)
    g.add_argument("--members-k8s", default=None, metavar="NAMESPACE/SERVICE",
                   help="Kubernetes EndpointSlices of the nodes' Service (ready pods, named by pod)")
    g.add_argument("--k8s-port-name", default="grpc", help="EndpointSlice port name of the nodes' gRPC port")
    g.add_argument("--k8s-api", default=None, help="API server URL (default: the in-cluster configuration)")
    g.add_argument("--members-interval", type=float, default=d.membership.interval_s, help="seconds between re-reads")
    g = p.add_argument_group("placement")
    g.add_argument("--placement", type=PlacementPolicy, choices=list(PlacementPolicy), default=d.placement.policy)
    g.add_argument("--load-factor", type=float, default=d.placement.load_factor,
                   help="bounded loads c: pass over a node above c x the mean in-flight load")
    g.add_argument("--min-load", type=int, default=d.placement.min_load,
                   help="in-flight items below which a node keeps its own keys whatever the mean (1: no floor)")
    g.add_argument("--max-inflight", type=int, default=d.placement.max_inflight,
                   help="items in flight through this router; past it RESOURCE_EXHAUSTED")
    g.add_argument("--max-node-inflight", type=int, default=d.placement.max_node_inflight,
                   help="items in flight on one node from this router; more wait here (at most the nodes' --max-queue)")
    g = p.add_argument_group("retries", "an item a node could not take is re-sent until the caller's deadline")
    g.add_argument("--retry-budget", type=float, default=d.retry.budget_s,
                   help="seconds an item is re-sent when its caller set no deadline")
    g.add_argument("--backoff-base", type=float, default=d.retry.backoff_base_s,
                   help="seconds before the second round over the nodes, doubled per round")
    g.add_argument("--backoff-max", type=float, default=d.retry.backoff_max_s, help="longest pause between rounds")
    g.add_argument("--max-attempts", type=int, default=d.retry.max_attempts,
                   help="nodes an overloaded item is offered to before RESOURCE_EXHAUSTED reaches the caller")
    g = p.add_argument_group("health")
    g.add_argument("--failures-to-eject", type=int, default=d.health.failures_to_eject)
    g.add_argument("--base-ejection", type=float, default=d.health.base_ejection_s,
                   help="seconds a failing node stays ejected, doubled per repeat")
    g.add_argument("--max-image-bytes", type=int, default=d.limits.max_bytes)
    s, f = d.search, d.search.follower
    g = p.add_argument_group("search", "the Search service: collections stored in Redis, searched in this router's memory")
    g.add_argument("--search-redis-url", default=None,
                   help="Redis holding the collections (redis://, redis+cluster://); no Search service without it. "
                   "Run it with appendonly yes and appendfsync always so that no acknowledged write is lost")
    g.add_argument("--search-snapshot-dir", type=Path, default=None,
                   help="where to save the views, so that a restart loads them instead of rebuilding from Redis")
    g.add_argument("--search-snapshot-every", type=float, default=f.snapshot_every_s,
                   help="seconds between saves of a changed view")
    g.add_argument("--search-poll", type=float, default=f.poll_s, help="seconds between reads of a quiet log")
    g.add_argument("--search-max-k", type=int, default=s.max_k, help="most nearest entries one search may ask for")
    g.add_argument("--search-max-duplicates", type=int, default=s.max_duplicates,
                   help="most near-duplicates one search returns")
    return p


def from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> RouterConfig:
    parser = build_parser()
    process.env_defaults(parser, os.environ if environ is None else environ, ENV_PREFIX)
    a = parser.parse_args(argv)
    sources = [x for x in (a.members, a.members_file, a.members_dns, a.members_k8s) if x]
    if len(sources) != 1:
        parser.error("give exactly one of --members, --members-file, --members-dns, --members-k8s")
    if a.members_k8s and a.members_k8s.count("/") != 1:
        parser.error("--members-k8s takes NAMESPACE/SERVICE, e.g. default/ringserve-node")
    try:
        static = tuple(parse_members(a.members)) if a.members else ()
        return RouterConfig(
            router_id=a.router_id, host=a.host, port=a.port, metrics_port=a.metrics_port,
            membership=MembershipConfig(static=static, file=a.members_file, dns_name=a.members_dns,
                                        dns_port=a.dns_node_port, dns_server=a.dns_server,
                                        dns_server_port=a.dns_server_port, interval_s=a.members_interval,
                                        k8s_service=a.members_k8s, k8s_port_name=a.k8s_port_name,
                                        k8s_api=a.k8s_api),
            placement=PlacementConfig(policy=a.placement, load_factor=a.load_factor, min_load=a.min_load,
                                      max_inflight=a.max_inflight, max_node_inflight=a.max_node_inflight),
            retry=RetryConfig(budget_s=a.retry_budget, backoff_base_s=a.backoff_base, backoff_max_s=a.backoff_max,
                              max_attempts=a.max_attempts),
            health=HealthConfig(failures_to_eject=a.failures_to_eject, base_ejection_s=a.base_ejection),
            limits=ImageLimits(max_bytes=a.max_image_bytes),
            hash_workers=a.hash_workers, fingerprint_memo=a.fingerprint_memo, drain_delay_s=a.drain_delay,
            grace_s=a.grace, log_level=a.log_level,
            otlp_endpoint=a.otlp_endpoint or None, trace_file=a.trace_file,
            search=SearchConfig(redis_url=a.search_redis_url or None, max_k=a.search_max_k,
                                max_duplicates=a.search_max_duplicates,
                                follower=FollowerConfig(poll_s=a.search_poll, snapshot_dir=a.search_snapshot_dir,
                                                        snapshot_every_s=a.search_snapshot_every)),
        )
    except (MembershipError, ValueError) as exc:
        parser.error(str(exc))
        raise
