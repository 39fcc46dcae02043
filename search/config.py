"""Search configuration: filled from the router's flags (``router/config.py``), passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from ringserve.search.follower import FollowerConfig


@dataclass(frozen=True)
class SearchConfig:
    # Redis holding the collections (the store of record); the Search service is off without it.
    redis_url: str | None = None
    # Seconds a store call may take before it counts as Redis being unavailable.
    redis_timeout_s: float = 2.0
    max_k: int = 100
    max_duplicates: int = 100
    # How long an Index item waits for this router's view to show it before answering anyway.
    read_your_writes_s: float = 5.0
    follower: FollowerConfig = field(default_factory=FollowerConfig)

    def __post_init__(self) -> None:
        if self.max_k < 1 or self.max_duplicates < 1:
            raise ValueError("--search-max-k and --search-max-duplicates must be >= 1")
