"""Search configuration: filled from the router's flags (``router/config.py``, each field a ``--search-`` flag), passed down."""

from __future__ import annotations

from dataclasses import dataclass

from ringserve.contract.flags import setting
from ringserve.runtime.redisconn import RedisAccess
from ringserve.search.access import AccessConfig
from ringserve.search.follower import FollowerConfig


@dataclass(frozen=True)
class SearchConfig:
    # Redis holding the collections (the store of record); the Search service is off without it.
    redis_url: str | None = setting(
        None, help="Redis holding the collections (redis://, redis+cluster://); no Search service without it. "
        "Run it with appendonly yes and appendfsync always so that no acknowledged write is lost")
    # Seconds a store call may take before it counts as Redis being unavailable.
    redis_timeout_s: float = setting(2.0, help="seconds a store call may take before Redis counts as unavailable")
    # A password file and TLS files (rediss://) for that Redis, beside what its URL says (docs/deploy.md).
    redis: RedisAccess = setting(RedisAccess(), prefix="redis-", group="search Redis credentials and TLS")
    max_k: int = setting(100, help="most nearest entries one search may ask for")
    max_duplicates: int = setting(100, help="most near-duplicates one search returns")
    # How long an Index item waits for this router's view to show it before answering anyway.
    read_your_writes_s: float = setting(5.0, help="seconds an Index item waits for this router's view to show it "
                                        "before it is answered anyway")
    # Answer digest-only Index items (IndexRequest.digest, no image) from the store: a caller who knows an id and
    # a digest learns whether that id holds an image with it. Off, every such item is answered image_required.
    digest_lookups: bool = setting(True, help="answer Index items that name their image by digest (no image) OK "
                                   "when the id already holds an entry made from those bytes; a caller who knows an "
                                   "id and a digest learns whether they match. Off: every such item is answered "
                                   "image_required")
    # Who may write (Index, Delete) and search: everyone unless the operator names callers (docs/deploy.md).
    access: AccessConfig = setting(AccessConfig(), group="search access (docs/deploy.md)")
    follower: FollowerConfig = setting(FollowerConfig(), group="search views", about={
        "poll_s": "seconds between reads of a quiet log",
        "collections_every_s": "seconds between reads of the set of collections",
        "snapshot_dir": "where to save the views, so that a restart loads them instead of rebuilding from Redis",
        "snapshot_every_s": "seconds between saves of a changed view"})

    def __post_init__(self) -> None:
        if self.max_k < 1 or self.max_duplicates < 1:
            raise ValueError("--search-max-k and --search-max-duplicates must be >= 1")
        if self.redis_url:
            self.redis.check(self.redis_url)
