"""A plaintext port that serves grpc.health.v1 alone, for kubelet's gRPC probes, which speak no TLS.

With TLS on a node's or a router's own port (``contract.tls``), Kubernetes' ``grpc`` probes cannot reach it;
this second port answers the same ``HealthServicer`` (so drain's NOT_SERVING shows on both) and nothing else:
no item and no search call is served without TLS. Kubelet's probes are not subject to NetworkPolicy, so the
policy need not open it to anyone.
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

log = logging.getLogger(__name__)


async def start(health: health_aio.HealthServicer, host: str, port: int) -> grpc.aio.Server | None:
    """Serve ``health`` in plaintext on ``host:port``; None when ``port`` is 0 (no probe port).

    Raises:
        OSError: the port cannot be bound.
    """
    if not port:
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind the probe port {host}:{port} (--health-port): is another process using it?")
    await server.start()
    log.info("grpc.health.v1 alone, in plaintext for kubelet probes, on %s:%d", host, port)
    return server
