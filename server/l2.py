"""L2: the Redis tier shared by all nodes, single instance or Redis Cluster.

Every call has a short deadline and goes through a circuit breaker, so a Redis
that is down or slow costs a node a few milliseconds per item at worst and
then nothing at all until a probe sees it back. Writes go through a bounded
queue drained in the background: a reply never waits for Redis, and when the
queue is full a write is dropped (counted), not buffered without bound.
Values are opaque bytes here; ``l2.py`` knows no torch and no codec.

Perceptual lookups use multi-index hashing (``mih.py``): each stored pHash is
added to CHUNKS sets keyed by one 16-bit chunk, and a radius search reads the
sets its probes name, in one pipelined round trip. A member whose value has
expired is removed from its sets when a search finds it (lazily, like a cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from redis.exceptions import RedisError

from ringserve.contract import codec
from ringserve.runtime.redisconn import RedisAccess, check_access, connect, is_cluster, redacted
from ringserve.server import mih
from ringserve.server.breaker import Breaker, BreakerState
from ringserve.server.errors import CacheMiss, CacheUnavailable, CorruptValue
from ringserve.server.keys import Namespace

log = logging.getLogger(__name__)
T = TypeVar("T")

# A fingerprint's pointer with a verifier (``Pointer``); a bare digest is format 0.
POINTER_MAGIC = b"RSP"
POINTER_FORMAT = 1
# Release a lock only if we still hold it (it may have expired and been taken since).
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


@dataclass(frozen=True)
class Pointer:
    """A fingerprint's value: the exact digest whose feature it has, and the verifier of that image.

    Layout: ``POINTER_MAGIC``, a format byte (``POINTER_FORMAT``), the digest's length (u8), the digest
    (ASCII), then the verifier's bytes. Format 0 (an earlier layout, still read) is the bare ASCII digest:
    it has no verifier (``None``), so it is never served as a near match until its image is computed again.
    A node of that earlier layout reads a format 1 pointer as a digest that names nothing, and prunes it.
    """

    digest: str
    verifier: bytes | None = None

    def encode(self) -> bytes:
        if self.verifier is None:
            return self.digest.encode("ascii")
        digest = self.digest.encode("ascii")
        return POINTER_MAGIC + bytes((POINTER_FORMAT, len(digest))) + digest + self.verifier

    @classmethod
    def decode(cls, blob: bytes) -> Pointer:
        """Raises CorruptValue for a value of this layout that does not parse (untrusted input)."""
        if not blob.startswith(POINTER_MAGIC):
            return cls(blob.decode("ascii", "replace"))  # format 0: a bare digest, never verified
        head = len(POINTER_MAGIC)
        if len(blob) < head + 2 or blob[head] != POINTER_FORMAT or len(blob) < head + 2 + blob[head + 1]:
            raise CorruptValue(f"fingerprint pointer of {len(blob)} bytes is not format {POINTER_FORMAT}")
        end = head + 2 + blob[head + 1]
        return cls(blob[head + 2 : end].decode("ascii", "replace"), blob[end:])


@dataclass(frozen=True)
class L2Config:
    # redis://host:port/db for one Redis, redis+cluster://host:port for a Redis Cluster; None disables L2.
    url: str | None = None
    timeout_s: float = 0.25
    ttl_s: int = 7 * 24 * 3600
    # TTLs are spread by +-jitter so entries written together do not expire together.
    ttl_jitter: float = 0.1
    breaker_failures: int = 3
    breaker_reset_s: float = 2.0
    write_queue: int = 2048
    write_batch: int = 64
    # Cross-node single flight: how long a compute lock lives, and how long others wait on it.
    lock_ttl_ms: int = 10_000
    lock_wait_s: float = 2.0
    lock_poll_s: float = 0.02
    # A password file and TLS files (rediss://), beside what the URL says.
    access: RedisAccess = RedisAccess()

    def __post_init__(self) -> None:
        if self.url:
            self.access.check(self.url)


@dataclass
class _Write:
    """One queued intent; the writer pipelines many of them per round trip."""

    values: list[tuple[str, bytes]] = field(default_factory=list)
    fingerprints_added: list[tuple[Namespace, int]] = field(default_factory=list)
    unlock: tuple[str, str] | None = None
    # fingerprints found in the index whose value has expired: take them out of their chunk sets
    fingerprints_removed: list[tuple[Namespace, int]] = field(default_factory=list)


class L2:
    """Typed tier: ``get`` returns bytes, or raises CacheMiss or CacheUnavailable."""

    def __init__(self, config: L2Config, node_id: str, on_event: Callable[[str], None] | None = None) -> None:
        if not config.url:
            raise ValueError("L2 needs a Redis URL")
        self.config = config
        self.node_id = node_id
        self.breaker = Breaker(config.breaker_failures, config.breaker_reset_s)
        self._redis = connect(config.url, config.timeout_s, access=config.access)
        self._unlock = self._redis.register_script(_UNLOCK)
        self._writes: asyncio.Queue[_Write] = asyncio.Queue(maxsize=config.write_queue)
        self._writer: asyncio.Task[None] | None = None
        self._on_event = on_event or (lambda _event: None)

    # ---- reads ---------------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise CacheUnavailable(f"Redis circuit is open after repeated failures; skipping {what}")
        try:
            result = await asyncio.wait_for(fn(), self.config.timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            if self.breaker.state is not BreakerState.CLOSED:
                self._on_event("breaker_open")
            raise CacheUnavailable(f"Redis {what} failed: {type(exc).__name__}: {exc}") from exc
        self.breaker.success()
        return result

    async def get(self, key: str) -> bytes:
        value = await self._call("GET", lambda: self._redis.get(key))
        if value is None:
            raise CacheMiss(key)
        return value

    async def near(self, ns: Namespace, phash: int, radius: int) -> list[tuple[int, int]]:
        """(distance, pHash) of stored fingerprints within ``radius``, nearest first."""
        if radius == 0:
            exists = await self._call("EXISTS", lambda: self._redis.exists(ns.perceptual(phash)))
            return [(0, phash)] if exists else []
        buckets = mih.probes(phash, radius)

        async def read() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for index, value in buckets:
                pipe.smembers(ns.chunk(index, value))
            return await pipe.execute()

        candidates: set[int] = set()
        for members in await self._call("SMEMBERS", read):
            candidates.update(int(m, 16) for m in members)
        return mih.nearest(phash, candidates, radius)

    # ---- cross-node single flight ----------------------------------------------------------

    async def try_lock(self, key: str, token: str) -> bool:
        """True if this node now holds the compute lock for ``key``."""
        ok = await self._call("SET NX", lambda: self._redis.set(key, token, nx=True, px=self.config.lock_ttl_ms))
        return bool(ok)

    async def wait_for(self, key: str) -> bytes:
        """Poll for a value another node is computing; CacheMiss if it does not come in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.lock_wait_s
        while loop.time() < deadline:
            await asyncio.sleep(self.config.lock_poll_s)
            with contextlib.suppress(CacheMiss):
                return await self.get(key)
        raise CacheMiss(f"{key}: not computed by the lock holder within {self.config.lock_wait_s}s")

    async def unlock(self, key: str, token: str) -> None:
        await self._call("unlock", lambda: self._unlock(keys=[key], args=[token]))

    # ---- background writes -----------------------------------------------------------------

    def ttl(self) -> int:
        jitter = self.config.ttl_jitter
        return max(1, int(self.config.ttl_s * random.uniform(1 - jitter, 1 + jitter)))

    def write(self, values: list[tuple[str, bytes]]) -> bool:
        """Queue ``(key, value)`` writes with the jittered TTL; False (and counted) if the queue is full."""
        return self._queue(_Write(values=values))

    def store(self, ns: Namespace, digest: str, phash: int | None, vector: np.ndarray, version: str,
              perceptual: bool, verifier: bytes | None = None) -> bool:
        """Queue a computed feature's writes: the feature once, under its exact key; and, where ``perceptual``
        (the deployment or this item uses perceptual reuse) and ``phash`` is given (an image whose pHash
        means something), its fingerprint pointing to that key with the image's ``verifier``, and the
        fingerprint's index entries."""
        queued = self.write([(ns.exact(digest), codec.encode(vector, version))])
        if phash is None or not perceptual:
            return queued
        return self.point(ns, digest, phash, verifier) and queued

    def point(self, ns: Namespace, digest: str, phash: int, verifier: bytes | None = None) -> bool:
        """Queue making the feature stored under ``digest`` findable by its fingerprint ``phash``: the pointer
        (``Pointer``, with the verifier a near match is checked by) and the fingerprint's index entries
        (idempotent: writing them twice changes nothing)."""
        queued = self.write([(ns.perceptual(phash), Pointer(digest, verifier).encode())])
        return self.add_fingerprint(ns, phash) and queued

    async def pointer(self, ns: Namespace, phash: int) -> Pointer:
        """What the fingerprint ``phash`` points to; CacheMiss when it expired, CorruptValue when unreadable."""
        return Pointer.decode(await self.get(ns.perceptual(phash)))

    def add_fingerprint(self, ns: Namespace, phash: int) -> bool:
        """Queue adding ``phash`` to its chunk sets, so a radius search finds it."""
        return self._queue(_Write(fingerprints_added=[(ns, phash)]))

    def remove_fingerprint(self, ns: Namespace, phash: int) -> bool:
        """Queue taking ``phash`` out of its chunk sets (its value has expired)."""
        return self._queue(_Write(fingerprints_removed=[(ns, phash)]))

    def unlock_later(self, key: str, token: str) -> bool:
        """Queue releasing a compute lock, after every write queued before it has landed."""
        return self._queue(_Write(unlock=(key, token)))

    def _queue(self, write: _Write) -> bool:
        """Never blocks: a full queue drops the write and counts it."""
        try:
            self._writes.put_nowait(write)
        except asyncio.QueueFull:
            self._on_event("write_dropped")
            return False
        return True

    @property
    def pending_writes(self) -> int:
        return self._writes.qsize()

    async def start(self, warmup_s: float = 5.0) -> None:
        """Start the writer and warm the connection (a cluster client learns its slot map here,
        not on the first item under its short deadline). A Redis that is down is not fatal; one that refuses
        this node's credentials or TLS is: RedisAccessDenied (runtime/redisconn.py)."""
        try:
            await check_access(self.config.url, self.config.access, warmup_s)
            if is_cluster(self._redis):
                await asyncio.wait_for(self._redis.initialize(), warmup_s)
            await asyncio.wait_for(self._redis.ping(), warmup_s)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("Redis at %s not reachable at start (%s); serving without L2 until it is",
                        redacted(self.config.url), exc)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="l2-writer")

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._writes.get()]
            while len(batch) < self.config.write_batch and not self._writes.empty():
                batch.append(self._writes.get_nowait())
            try:
                await self._write(batch)
                self._on_event("write_ok")
            except CacheUnavailable as exc:
                self._on_event("write_error")
                log.warning("dropped %d L2 writes: %s", len(batch), exc)
            finally:
                for _ in batch:
                    self._writes.task_done()

    async def _write(self, batch: list[_Write]) -> None:
        async def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for w in batch:
                for key, value in w.values:
                    pipe.set(key, value, ex=self.ttl())
                for ns, phash in w.fingerprints_added:
                    for i, chunk in enumerate(mih.chunks(phash)):
                        key = ns.chunk(i, chunk)
                        pipe.sadd(key, f"{phash:016x}")
                        pipe.expire(key, self.config.ttl_s * 2)
                for ns, phash in w.fingerprints_removed:
                    for i, chunk in enumerate(mih.chunks(phash)):
                        pipe.srem(ns.chunk(i, chunk), f"{phash:016x}")
            await pipe.execute()

        await self._call("write", write)
        for w in batch:
            if w.unlock is not None:
                await self.unlock(*w.unlock)

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until queued writes are done (or given up on)."""
        try:
            await asyncio.wait_for(self._writes.join(), timeout_s)
        except TimeoutError:
            log.warning("L2 flush gave up after %.1fs with %d writes still queued (Redis slow or down)",
                        timeout_s, self._writes.qsize())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        try:
            await self._redis.aclose()
        except (RedisError, OSError) as exc:
            log.warning("closing the Redis client failed: %s", exc)


class NoL2:
    """The L2 of a node without Redis: a tier that holds nothing. Every lookup misses, every write is
    dropped, and the compute lock is always this node's (there is no other node to share a flight with)."""

    pending_writes = 0

    async def get(self, key: str) -> bytes:
        raise CacheMiss(key)

    async def near(self, ns: Namespace, phash: int, radius: int) -> list[tuple[int, int]]:
        return []

    async def try_lock(self, key: str, token: str) -> bool:
        return True

    async def wait_for(self, key: str) -> bytes:
        raise CacheMiss(key)

    def write(self, values: list[tuple[str, bytes]]) -> bool:
        return True

    async def pointer(self, ns: Namespace, phash: int) -> Pointer:
        raise CacheMiss(ns.perceptual(phash))

    def store(self, ns: Namespace, digest: str, phash: int | None, vector: np.ndarray, version: str,
              perceptual: bool, verifier: bytes | None = None) -> bool:
        return True

    def add_fingerprint(self, ns: Namespace, phash: int) -> bool:
        return True

    def point(self, ns: Namespace, digest: str, phash: int, verifier: bytes | None = None) -> bool:
        return True

    def remove_fingerprint(self, ns: Namespace, phash: int) -> bool:
        return True

    def unlock_later(self, key: str, token: str) -> bool:
        return True

    async def start(self) -> None:
        """Nothing to connect to."""

    async def flush(self, timeout_s: float = 0.0) -> None:
        """Nothing queued."""

    async def close(self) -> None:
        """Nothing to flush."""
