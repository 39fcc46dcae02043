"""The store of record for search: every collection's entries and its log of changes, in Redis.

Per collection, under one Redis Cluster hash tag so that a write is one atomic script:

    rs:search:{<name>}:meta     hash: model, model_version, dim
    rs:search:{<name>}:entries  hash: id -> entry (pHash, then the feature in ``contract.codec`` bytes)
    rs:search:{<name>}:log      stream of changes: op=put (id, entry), op=del (id), op=drop

and ``rs:search:collections``, the set of names. A put or a delete changes the
entries and appends to the log in one Lua script, so a change is in both or in
neither; an acknowledged change is as durable as Redis is configured to make it
(``appendonly yes``, ``appendfsync always`` for "never lost"; docs/deploy.md).
Views (``view.py``) start from the entries and follow the log.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from redis.exceptions import RedisError, ResponseError

from ringserve.contract import codec
from ringserve.contract.arguments import check_collection
from ringserve.contract.errors import ModelMismatch, ServiceError, UnknownCollection

COLLECTIONS_KEY = "rs:search:collections"
# The log keeps about this many changes; a view further behind rebuilds from the entries.
LOG_MAXLEN = 1_000_000
# An entry's bytes: its pHash, then a format byte, then the feature in the codec's format. The byte after the
# pHash tells the format: the codec's magic (format 0, the first: no flags), 0 or 1 (format 1: that byte is the
# low-information flag), or FORMAT (2: a flags byte, then, where FLAG_DIGEST is set, the BLAKE3-128 and length of
# the image bytes the entry was made from, which a digest-only Index item is matched against).
_PHASH = struct.Struct("<Q")
_FLAG = struct.Struct("<B")
_DIGEST = struct.Struct("<16sQ")
FORMAT = 2
FLAG_LOW_INFORMATION = 1
FLAG_DIGEST = 2

# KEYS: meta, entries, log. ARGV: model, version, dim, maxlen, then id, entry pairs.
# Binds the collection to its model version on first write; refuses another version.
_PUT = """
local version = redis.call('HGET', KEYS[1], 'model_version')
if not version then
  redis.call('HSET', KEYS[1], 'model', ARGV[1], 'model_version', ARGV[2], 'dim', ARGV[3])
elseif version ~= ARGV[2] then
  return {0, version}
end
local last = ''
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  last = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'op', 'put', 'id', ARGV[i], 'entry', ARGV[i + 1])
end
return {1, last}
"""
# KEYS: meta, entries. ARGV: id. The collection's model, version and dim, and the id's entry, read together.
_HELD = """
local meta = redis.call('HMGET', KEYS[1], 'model', 'model_version', 'dim')
meta[4] = redis.call('HGET', KEYS[2], ARGV[1])
return meta
"""
# KEYS: meta, entries, log. ARGV: maxlen, then ids. Returns 1/0 per id (deleted / was not there).
_DELETE = """
local out = {}
for i = 2, #ARGV do
  local gone = redis.call('HDEL', KEYS[2], ARGV[i])
  if gone == 1 then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'op', 'del', 'id', ARGV[i])
  end
  out[#out + 1] = gone
end
return out
"""
# KEYS: meta, entries, log. Removes the collection and logs it, so views drop it too.
_DROP = """
redis.call('DEL', KEYS[1], KEYS[2])
return redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'op', 'drop')
"""


class StoreError(ServiceError):
    """Root of the store's own failures (not the caller's)."""


class StoreUnavailable(StoreError):
    """Redis could not be reached; the message says what became of the call and what to do.

    ``detail`` is what failed, without advice: for a log that is not the caller's answer.
    """

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True)
class Meta:
    model: str
    model_version: str
    dim: int


@dataclass(frozen=True)
class Digest:
    """The exact identity of the image bytes an entry was made from: BLAKE3-128 and length (ImageDigest)."""

    blake3_128: bytes
    size_bytes: int


@dataclass(frozen=True)
class Entry:
    id: str
    phash: int
    feature: np.ndarray
    # Too little structure for its pHash to mean anything: kept out of near-duplicate search.
    low_information: bool = False
    # The bytes it was made from, as the router digested them; None in entries written before digests.
    digest: Digest | None = None


@dataclass(frozen=True)
class Change:
    """One record of a collection's log: ``op`` is "put" (with the entry's bytes), "del" or "drop"."""

    log_id: str
    op: str
    id: str = ""
    blob: bytes = b""

    def entry(self, model_version: str) -> Entry:
        return decode_entry(self.id, self.blob, model_version)


def encode_entry(entry: Entry, model_version: str) -> bytes:
    flags = FLAG_LOW_INFORMATION * entry.low_information | FLAG_DIGEST * (entry.digest is not None)
    head = _PHASH.pack(entry.phash) + _FLAG.pack(FORMAT) + _FLAG.pack(flags)
    if entry.digest is not None:
        head += _DIGEST.pack(entry.digest.blake3_128, entry.digest.size_bytes)
    return head + codec.encode(entry.feature, model_version)


def _header(blob: bytes) -> tuple[int, bool, Digest | None, int]:
    """(pHash, low-information flag, digest, where the feature begins) of an entry of any format."""
    (phash,) = _PHASH.unpack_from(blob)
    at = _PHASH.size
    if blob[at:at + len(codec.MAGIC)] == codec.MAGIC:  # format 0
        return phash, False, None, at
    (first,) = _FLAG.unpack_from(blob, at)
    if first != FORMAT:  # format 1: the low-information flag
        return phash, bool(first), None, at + _FLAG.size
    (flags,) = _FLAG.unpack_from(blob, at + _FLAG.size)
    at += 2 * _FLAG.size
    digest = None
    if flags & FLAG_DIGEST:
        digest = Digest(*_DIGEST.unpack_from(blob, at))
        at += _DIGEST.size
    return phash, bool(flags & FLAG_LOW_INFORMATION), digest, at


def decode_entry(item_id: str, blob: bytes, model_version: str) -> Entry:
    phash, low_information, digest, at = _header(blob)
    return Entry(item_id, phash, codec.decode(blob[at:], model_version), low_information, digest)


def digest_of(blob: bytes) -> Digest | None:
    """The digest an entry's bytes record, without decoding its feature; None for an entry written without one."""
    return _header(blob)[2]


class Store:
    """Collections in Redis: atomic writes, the snapshot of entries, and the log to follow."""

    def __init__(self, redis: Any, log_maxlen: int = LOG_MAXLEN) -> None:
        self.redis = redis
        # The last call to Redis failed: set and cleared only by ``_call``, read by the follower's staleness.
        self.unreachable = False
        # About this many changes are kept per collection; a view further behind rebuilds from the entries.
        self.log_maxlen = log_maxlen
        self._put = redis.register_script(_PUT)
        self._delete = redis.register_script(_DELETE)
        self._drop = redis.register_script(_DROP)
        self._held = redis.register_script(_HELD)

    @staticmethod
    def keys(collection: str) -> list[str]:
        tag = f"rs:search:{{{collection}}}"
        return [f"{tag}:meta", f"{tag}:entries", f"{tag}:log"]

    async def _call(self, coro: Any, outcome: str) -> Any:
        """``await coro``; a Redis that cannot be reached becomes StoreUnavailable saying ``outcome``: what
        happened to the call and what to do, which only the caller knows (a read changed nothing, a write
        may have been applied)."""
        try:
            result = await coro
        except ResponseError:
            self.unreachable = False  # Redis answered, with an error of the request's own
            raise
        except (RedisError, OSError) as exc:
            self.unreachable = True
            detail = f"{type(exc).__name__}: {str(exc).rstrip('. ') or 'no answer'}"
            raise StoreUnavailable(f"Redis is unavailable ({detail}); {outcome}", detail) from exc
        self.unreachable = False
        return result

    @staticmethod
    def _read(what: str) -> str:
        return f"could not read {what}; nothing was changed: retry when Redis is back"

    async def add(self, collection: str, meta: Meta, entries: list[Entry]) -> str:
        """Store ``entries`` (replacing those ids) and log them, atomically; returns the last log id.

        Raises:
            ModelMismatch: the collection holds another model version.
            StoreUnavailable: Redis could not be reached: the write was applied whole or not at all, and
                which is not known; indexing the same ids again is safe (it replaces them).
        """
        check_collection(collection)
        args: list[Any] = [meta.model, meta.model_version, meta.dim, self.log_maxlen]
        for e in entries:
            args += [e.id, encode_entry(e, meta.model_version)]
        # Named first (another slot, so not in the script): a name without entries is ignored by views,
        # while entries without a name would be a write the caller was told failed.
        await self._call(self.redis.sadd(COLLECTIONS_KEY, collection),
                         f"nothing was written to collection {collection!r}: index these ids again when Redis is back")
        ok, value = await self._call(self._put(keys=self.keys(collection), args=args),
                                     f"the write to collection {collection!r} was applied whole or not at all, and "
                                     "which is not known: index these ids again when Redis is back (that replaces "
                                     "them with the same entries)")
        if not ok:
            held = value.decode() if isinstance(value, bytes) else value
            raise ModelMismatch(f"collection {collection!r} holds features of model version {held}, not "
                                f"{meta.model_version}: delete the collection (`ringserve delete --collection "
                                f"{collection} --all`) and index it again, or index into a new collection")
        return value.decode() if isinstance(value, bytes) else str(value)

    async def delete(self, collection: str, ids: list[str]) -> tuple[list[str], list[str]]:
        """Remove ``ids``; returns (deleted, missing). Raises StoreUnavailable (applied whole or not at all)."""
        check_collection(collection)
        if not ids:
            return [], []
        flags = await self._call(self._delete(keys=self.keys(collection), args=[self.log_maxlen, *ids]),
                                 f"the delete from collection {collection!r} was applied whole or not at all, and "
                                 "which is not known: delete the same ids again when Redis is back (ids already "
                                 "gone are then reported missing)")
        deleted = [i for i, f in zip(ids, flags, strict=True) if int(f)]
        return deleted, [i for i, f in zip(ids, flags, strict=True) if not int(f)]

    async def drop(self, collection: str) -> None:
        """Remove the whole collection (entries and model binding); views drop it from the log."""
        check_collection(collection)
        again = f"delete collection {collection!r} again when Redis is back"
        await self._call(self._drop(keys=self.keys(collection), args=[self.log_maxlen]),
                         f"collection {collection!r} was deleted whole or not at all, and which is not known: {again}")
        await self._call(self.redis.srem(COLLECTIONS_KEY, collection),
                         f"the entries of collection {collection!r} are deleted but its name is still listed: {again}")

    async def collections(self) -> list[str]:
        names = await self._call(self.redis.smembers(COLLECTIONS_KEY), self._read("the list of collections"))
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    async def meta(self, collection: str) -> Meta | None:
        raw = await self._call(self.redis.hgetall(self.keys(collection)[0]),
                               self._read(f"collection {collection!r}"))
        if not raw:
            return None
        get = {k.decode(): v.decode() for k, v in raw.items()}
        return Meta(get["model"], get["model_version"], int(get["dim"]))

    async def require(self, collection: str) -> Meta:
        """The collection's meta; UnknownCollection when it holds nothing."""
        meta = await self.meta(collection)
        if meta is None:
            raise UnknownCollection(f"collection {collection!r} holds no entries; index some first")
        return meta

    async def log_head(self, collection: str) -> str:
        """The id of the newest change in the log ("0-0" for none): a snapshot taken after it is at least this new."""
        last = await self._call(self.redis.xrevrange(self.keys(collection)[2], count=1),
                                self._read(f"the log of collection {collection!r}"))
        return last[0][0].decode() if last else "0-0"

    async def log_tail(self, collection: str) -> str | None:
        """The id of the oldest change the log still holds, or None when it is empty."""
        first = await self._call(self.redis.xrange(self.keys(collection)[2], count=1),
                                 self._read(f"the log of collection {collection!r}"))
        return first[0][0].decode() if first else None

    async def entries(self, collection: str, meta: Meta, batch: int = 2000) -> AsyncIterator[list[Entry]]:
        """Every entry of the collection, ``batch`` at a time (HSCAN: entries changed meanwhile may come
        twice or as they were; the log after ``log_head`` taken before corrects them)."""
        cursor = 0
        key = self.keys(collection)[1]
        while True:
            cursor, found = await self._call(self.redis.hscan(key, cursor, count=batch),
                                             self._read(f"the entries of collection {collection!r}"))
            if found:
                yield [decode_entry(k.decode(), v, meta.model_version) for k, v in found.items()]
            if cursor == 0:
                return

    async def changes(self, collection: str, after: str, block_ms: int | None = None,
                      count: int = 1000) -> list[Change]:
        """Changes after log id ``after``, waiting up to ``block_ms`` for the first (None: not at all)."""
        key = self.keys(collection)[2]
        reply = await self._call(self.redis.xread({key: after}, count=count, block=block_ms),
                                 self._read(f"the log of collection {collection!r}"))
        out = []
        for _stream, records in reply or []:
            for log_id, fields in records:
                f = {k.decode(): v for k, v in fields.items()}
                out.append(Change(log_id.decode(), f["op"].decode(), f.get("id", b"").decode(), f.get("entry", b"")))
        return out

    async def get(self, collection: str, item_id: str, meta: Meta) -> Entry | None:
        blob = await self._call(self.redis.hget(self.keys(collection)[1], item_id),
                                self._read(f"id {item_id!r} of collection {collection!r}"))
        return None if blob is None else decode_entry(item_id, blob, meta.model_version)

    async def held(self, collection: str, item_id: str) -> tuple[Meta, Digest | None] | None:
        """The collection's meta and the digest of the bytes ``item_id``'s entry was made from (None: an entry
        written without one), read at once; None when the collection does not hold the id. Raises StoreUnavailable."""
        model, version, dim, blob = await self._call(
            self._held(keys=self.keys(collection)[:2], args=[item_id]),
            self._read(f"id {item_id!r} of collection {collection!r}"))
        if version is None or blob is None:
            return None
        return Meta(model.decode(), version.decode(), int(dim)), digest_of(blob)
