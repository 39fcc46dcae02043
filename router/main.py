"""The router process: learn members, watch their health, keep the ring, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from redis.exceptions import RedisError

from ringserve.contract import frames, tls
from ringserve.contract.ring import Ring
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import cluster_pb2_grpc as cpb_grpc
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.contract.v1 import search_pb2 as spb
from ringserve.contract.v1 import search_pb2_grpc as spb_grpc
from ringserve.router import config as config_mod
from ringserve.router.config import MembershipConfig, RouterConfig
from ringserve.router.features import RoutedFeatures
from ringserve.router.membership.base import Source
from ringserve.router.membership.dns import DnsSource
from ringserve.router.membership.file import FileSource
from ringserve.router.membership.static import StaticSource
from ringserve.router.metrics import RouterMetrics
from ringserve.router.registry import Registry
from ringserve.router.servicer import ClusterServicer, RouterServicer
from ringserve.runtime import probeport, process, telemetry
from ringserve.runtime.redisconn import RedisAccessDenied, check_access, connect, redacted
from ringserve.search.follower import Follower
from ringserve.search.index import EmbeddedIndex
from ringserve.search.servicer import SearchServicer
from ringserve.search.store import Store

log = logging.getLogger("ringserve.router")
INFERENCE = pb.DESCRIPTOR.services_by_name["Inference"].full_name
SERVICES = (INFERENCE, cpb.DESCRIPTOR.services_by_name["Cluster"].full_name)
SEARCH = spb.DESCRIPTOR.services_by_name["Search"].full_name


def make_source(config: MembershipConfig) -> Source:
    if config.static:
        return StaticSource(config.static)
    if config.file is not None:
        return FileSource(config.file, interval_s=min(config.interval_s, 1.0))
    if config.dns_name:
        return DnsSource(config.dns_name, port=config.dns_port, interval_s=config.interval_s,
                         nameserver=config.dns_server, nameserver_port=config.dns_server_port)
    if config.k8s_service:
        from ringserve.router.membership.kubernetes import EndpointSliceSource

        namespace, service = config.k8s_service.split("/")
        return EndpointSliceSource(namespace, service, port_name=config.k8s_port_name, api_url=config.k8s_api)
    raise ValueError("no membership source configured")


class Router:
    def __init__(self, config: RouterConfig, source: Source | None = None) -> None:
        self.config = config
        tconfig = telemetry.TelemetryConfig("ringserve-router", metrics_port=config.metrics_port,
                                            otlp_endpoint=config.otlp_endpoint, trace_file=config.trace_file)
        self.metrics = RouterMetrics(telemetry.meter_provider(tconfig), config.router_id)
        self.tracer_provider = telemetry.tracer_provider(tconfig)
        self.source = source or make_source(config.membership)
        ring = Ring(load_factor=config.placement.load_factor, min_load=config.placement.min_load,
                    spill=config.placement.spill)
        self.registry = Registry(config.health, ring, config.placement.policy, on_ring_change=self._ring_changed,
                                 tls=config.node_tls,
                                 on_eject=lambda node: self.metrics.ejections.add(1, {"node": node}))
        self.pool = ThreadPoolExecutor(max_workers=config.hash_workers, thread_name_prefix="phash")
        tracer = self.tracer_provider.get_tracer("ringserve.router") if self.tracer_provider else None
        self.servicer = RouterServicer(config.router_id, self.registry, config.placement, config.retry, config.limits,
                                       self.pool, self.metrics, tracer, fingerprint_memo=config.fingerprint_memo,
                                       hedging=config.hedge)
        self.search: SearchServicer | None = None
        if config.search.redis_url:
            # One re-send on a broken connection: every store call is safe to repeat (a put of the same
            # entry, a delete, a read), and a pool keeps connections Redis closed while it was down.
            store = Store(connect(config.search.redis_url, config.search.redis_timeout_s, retries=1,
                                  access=config.search.redis))
            index = EmbeddedIndex(store, Follower(store, config.search.follower), config.search.read_your_writes_s)
            self.search = SearchServicer(index, RoutedFeatures(self.servicer), config.search, self.servicer.streams)
        self.services = (*SERVICES, SEARCH) if self.search is not None else SERVICES
        self.own_health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.probe: grpc.aio.Server | None = None  # the plaintext health port for kubelet (``runtime/probeport.py``)
        self.port = 0
        self._membership: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        m = self.metrics
        m.observe("ringserve.router.inflight", "Items in flight per node", lambda: self.registry.loads())
        m.observe("ringserve.router.members", "Nodes on the ring", lambda: len(self.registry.ring))
        m.observe("ringserve.router.waiting", "Items waiting for a node to have room", lambda: self.registry.waiting)
        m.observe("ringserve.router.known", "Nodes known from membership", lambda: len(self.registry.nodes))
        m.observe("ringserve.router.arc_share", "Share of the key space each node on the ring owns",
                  lambda: self.registry.ring.shares())
        m.labelled("ringserve.router.latency_seconds", "Recent send-to-answer time of items through the nodes, by "
                   "method, what they carried, answer tier and quantile", lambda: self.servicer.latency.quantiles())
        if self.search is not None:  # alerted on past a minute (monitoring/rules.yaml, RingserveSearchStale)
            m.observe("ringserve.search.stale_seconds", "Seconds the search views have not heard from their store "
                      "(0 while in step)", lambda: self.search.index.stale_ms() / 1000)

    def _ring_changed(self) -> None:
        if self.server is not None:
            task = asyncio.get_running_loop().create_task(self._publish_readiness())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _publish_readiness(self) -> None:
        """Inference is SERVING only while some node is on the ring: a router with no nodes is not ready."""
        status = health_pb2.HealthCheckResponse.SERVING if len(self.registry.ring) else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.own_health.set(INFERENCE, status)

    async def _publish_search_ready(self) -> None:
        await self.search.index.wait_ready()
        await self.own_health.set(SEARCH, health_pb2.HealthCheckResponse.SERVING)
        log.info("search views loaded: Search is SERVING")

    async def _follow_membership(self) -> None:
        async for members in self.source.watch():
            log.info("membership: %s", ", ".join(f"{m.name}={m.address}" for m in members) or "(none)")
            self.registry.update(members)

    async def _check_search_redis(self) -> None:
        """Redis refusing the router's credentials or TLS stops it (RedisAccessDenied); Redis down does not."""
        url = self.config.search.redis_url
        try:
            await check_access(url, self.config.search.redis, max(self.config.search.redis_timeout_s, 5.0))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("search Redis at %s not reachable at start (%s); the views load once it is", redacted(url), exc)

    async def start(self) -> int:
        cfg = self.config
        # a bad file stops the router here, not its links and health checks later in the background
        tls.check(cfg.node_tls, "--node-tls-ca-file, -cert-file, -key-file (the router's TLS to its nodes)")
        if self.search is not None:
            await self._check_search_redis()
        self._membership = asyncio.get_running_loop().create_task(self._follow_membership(), name="membership")
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", frames.receive_limit(cfg.limits.max_bytes)),
            ("grpc.so_reuseport", 0),
        ])
        pb_grpc.add_InferenceServicer_to_server(self.servicer, self.server)
        cpb_grpc.add_ClusterServicer_to_server(ClusterServicer(self.servicer), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.own_health, self.server)
        if self.search is not None:
            spb_grpc.add_SearchServicer_to_server(self.search, self.server)
            await self.search.index.start()
        reflection.enable_server_reflection(
            (*self.services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        self.port = tls.add_port(self.server, f"{cfg.host}:{cfg.port}", cfg.tls)
        if self.port == 0:
            raise OSError(f"cannot bind {cfg.host}:{cfg.port}: is another process using the port?")
        await self.server.start()
        self.probe = await probeport.start(self.own_health, cfg.host, cfg.health_port)
        for service in ("", *self.services):
            if service not in (INFERENCE, SEARCH):
                await self.own_health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.search is not None:  # Search is SERVING once its views are loaded (minutes at 200k from Redis alone)
            await self.own_health.set(SEARCH, health_pb2.HealthCheckResponse.NOT_SERVING)
            task = asyncio.get_running_loop().create_task(self._publish_search_ready(), name="search-ready")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        await self._publish_readiness()
        log.info("router %s serving on %s:%d (%s)", cfg.router_id, cfg.host, self.port, cfg.tls.describe())
        return self.port

    async def stop(self) -> None:
        cfg = self.config
        began = time.monotonic()
        log.info("router %s draining", cfg.router_id)
        await self.own_health.enter_graceful_shutdown()
        await asyncio.sleep(cfg.drain_delay_s)
        await self.servicer.drain(cfg.grace_s)
        if self.server is not None:
            await self.server.stop(grace=1.0)
        if self.probe is not None:
            await self.probe.stop(grace=None)
        if self._membership is not None:
            self._membership.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._membership
        if self.search is not None:
            await self.search.index.close()  # saves the views
        await self.registry.close()
        self.pool.shutdown(wait=True)
        self.metrics.provider.shutdown()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        log.info("router %s stopped %.1fs after the stop signal", cfg.router_id, time.monotonic() - began)


async def serve(config: RouterConfig) -> None:
    router = Router(config)
    process.trim_when_quiet(router.servicer.activity)
    await process.run_until_signal(router.start, router.stop)


def main(argv: Sequence[str] | None = None) -> int:
    config = config_mod.from_args(argv)
    process.setup_logging(config.log_level)
    process.return_large_allocations()
    try:
        asyncio.run(serve(config))
    except tls.TlsError as exc:
        log.error("%s", exc)
        return 2
    except RedisAccessDenied as exc:
        log.error("%s. Set --search-redis-url (user and password in it), or --search-redis-password-file, or "
                  "--search-redis-tls-ca-file/-cert-file/-key-file (RINGSERVE_ROUTER_SEARCH_REDIS_*)", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
