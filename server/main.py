"""The node process: load models, serve gRPC with health and reflection, drain on SIGTERM.

Stop sequence (what a rolling update relies on): health turns NOT_SERVING, the
node keeps serving for ``drain_delay_s`` so routers move its keys, then stops
reading new items, answers every item it admitted, flushes L2 writes, exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ringserve.contract import frames, tls
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.runtime import probeport, process, telemetry
from ringserve.runtime.redisconn import RedisAccessDenied
from ringserve.server import config as config_mod
from ringserve.server import models
from ringserve.server.batcher import Batcher
from ringserve.server.cache import ModelSlot
from ringserve.server.config import ServerConfig
from ringserve.server.l1 import L1
from ringserve.server.l2 import L2, NoL2
from ringserve.server.metrics import Metrics
from ringserve.server.servicer import InferenceServicer

log = logging.getLogger("ringserve.node")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name


class Node:
    """A ready-to-start node; ``start`` binds the port, ``stop`` drains and closes."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        tconfig = telemetry.TelemetryConfig("ringserve-node", metrics_port=config.metrics_port,
                                            otlp_endpoint=config.otlp_endpoint, trace_file=config.trace_file)
        self.metrics = Metrics(telemetry.meter_provider(tconfig), config.node_id)
        self.tracer_provider = telemetry.tracer_provider(tconfig)
        if self.tracer_provider is not None:
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument(tracer_provider=self.tracer_provider)
        self.pool = ThreadPoolExecutor(max_workers=config.decode_workers, thread_name_prefix="decode")
        self.slots: dict[str, ModelSlot] = {}
        for model_config in config.models:
            model = models.load(model_config)
            batcher = Batcher(model.features, config.batcher, name=f"batcher-{model.name}", on_batch=self._on_batch)
            # The head waits for no company: a Classify hit must not pay a batching delay, and under
            # load the items that queue while one head batch runs form the next one.
            head = Batcher(model.scores_batch, replace(config.batcher, max_delay_ms=0.0), name=f"head-{model.name}",
                           on_batch=self._on_head_batch)
            self.slots[model.name] = ModelSlot(model, batcher, head)
        self.l1 = L1(config.l1)
        self.l2: L2 | NoL2 = NoL2()
        self.health = health_aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.probe: grpc.aio.Server | None = None  # the plaintext health port for kubelet (``runtime/probeport.py``)
        self.servicer: InferenceServicer | None = None
        self.port = 0

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.record(size, self.metrics.attrs())
        self.metrics.batch_duration.record(seconds, self.metrics.attrs())
        self.metrics.backbone_images.add(size, self.metrics.attrs())

    def _on_head_batch(self, size: int, seconds: float) -> None:
        self.metrics.head_batch_size.record(size, self.metrics.attrs())

    async def start(self) -> int:
        cfg = self.config
        if cfg.l2.url:
            self.l2 = L2(cfg.l2, cfg.node_id, on_event=lambda e: self.metrics.l2_events.add(1, self.metrics.attrs(event=e)))
            await self.l2.start()
        for slot in self.slots.values():
            slot.batcher.start()
            slot.head.start()
        self.servicer = InferenceServicer(
            cfg.node_id, self.slots, next(iter(self.slots)), self.l1, self.l2, cfg.limits, cfg.policy, self.pool,
            self.metrics, tracer=self._tracer(),
        )
        m = self.metrics
        m.gauge("ringserve.inflight", "Items admitted and not yet answered", lambda: self.servicer.admission.inflight)
        m.gauge("ringserve.queue.depth", "Items waiting for a batch", lambda: sum(s.batcher.depth for s in self.slots.values()))
        m.gauge("ringserve.l1.bytes", "Bytes held by L1", lambda: self.l1.bytes_used)
        m.gauge("ringserve.l1.entries", "Entries held by L1", lambda: len(self.l1))
        m.gauge("ringserve.l2.pending_writes", "L2 writes queued", lambda: self.l2.pending_writes)
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", frames.receive_limit(cfg.limits.images.max_bytes)),
            ("grpc.so_reuseport", 0),
        ])
        pb_grpc.add_InferenceServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = tls.add_port(self.server, f"{cfg.host}:{cfg.port}", cfg.tls)
        if self.port == 0:
            raise OSError(f"cannot bind {cfg.host}:{cfg.port}: is another process using the port?")
        await self.server.start()
        self.probe = await probeport.start(self.health, cfg.host, cfg.health_port)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("node %s serving %s on %s:%d (%s)", cfg.node_id, ", ".join(self.slots), cfg.host, self.port,
                 cfg.tls.describe())
        return self.port

    def _tracer(self):
        from opentelemetry import trace

        if self.tracer_provider is None:
            return trace.NoOpTracer()
        return self.tracer_provider.get_tracer("ringserve.server")

    async def stop(self) -> None:
        """Drain: NOT_SERVING, wait for routers, answer admitted items, flush L2, close."""
        cfg = self.config
        began = time.monotonic()
        log.info("node %s draining: health NOT_SERVING for %.1fs", cfg.node_id, cfg.drain_delay_s)
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(cfg.drain_delay_s)
        if self.servicer is not None:
            await self.servicer.drain(cfg.grace_s)
        if self.server is not None:
            await self.server.stop(grace=1.0)
        if self.probe is not None:
            await self.probe.stop(grace=None)
        for slot in self.slots.values():
            await slot.batcher.close()
            await slot.head.close()
        await self.l2.flush()
        await self.l2.close()
        self.pool.shutdown(wait=True)
        self.metrics.provider.shutdown()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        log.info("node %s stopped %.1fs after the stop signal", cfg.node_id, time.monotonic() - began)


async def serve(config: ServerConfig) -> None:
    node = Node(config)
    process.trim_when_quiet(lambda: None if node.servicer is None else node.servicer.activity())
    await process.run_until_signal(node.start, node.stop)


def main(argv: Sequence[str] | None = None) -> int:
    config = config_mod.from_args(argv)
    process.setup_logging(config.log_level)
    try:
        asyncio.run(serve(config))
    except (models.ModelError, tls.TlsError) as exc:
        log.error("%s", exc)
        return 2
    except RedisAccessDenied as exc:
        log.error("%s. Set --redis-url (user and password in it), or --redis-password-file, or "
                  "--redis-tls-ca-file/-cert-file/-key-file (RINGSERVE_REDIS_*)", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
