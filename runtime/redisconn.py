"""A redis-py asyncio client from a URL: one Redis, or a Redis Cluster for ``redis+cluster://`` URLs.

Shared by the node's cache tier and the search store. Callers decide about retries
(a circuit breaker, a caller's own retry): redis-py itself does not retry.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def connect(url: str, timeout_s: float, retries: int = 0) -> Any:
    """A redis-py asyncio client for ``url``: a RedisCluster for redis+cluster:// URLs.

    Args:
        url: ``redis://host:port/db``, ``rediss://...``, or the same with ``+cluster``.
        timeout_s: socket connect and read timeout of every call.
        retries: times redis-py re-sends a call whose connection failed (a pooled connection that
            Redis closed while it was down); only for calls that are safe to repeat.
    """
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), retries),
    }
    for scheme in CLUSTER_SCHEMES:
        if url.startswith(scheme):
            plain = url.replace("+cluster", "", 1)
            return RedisCluster.from_url(plain, **common)  # its ``retry`` also governs cluster errors (redis-py 6)
    return aioredis.Redis.from_url(url, **common)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)
