"""How long an item the nodes could not take is re-sent, and how far apart the tries are.

An item whose node went away (its stream broke, it answered UNAVAILABLE, no node is
on the ring) is re-sent over the members as they are at each try, until the caller's
deadline, or for ``budget_s`` when the caller set none. The next distinct node is tried
at once; when every node on the ring has failed the item, a new round starts after a
backoff that doubles with jitter (Envoy's retry back-off), so a roll, a restart or a
membership blip costs the caller waiting, never an error. An overloaded node
(RESOURCE_EXHAUSTED) is another matter: load is shed, not queued, so such an item is
offered to at most ``max_attempts`` nodes and then the caller hears it. Knows nothing
of gRPC or the ring.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ringserve.contract.backoff import backoff_s


@dataclass(frozen=True)
class RetryConfig:
    # How long an item may be re-sent when its caller set no deadline, in seconds.
    budget_s: float = 30.0
    # Pause before the second round over the nodes; doubles per round up to backoff_max_s.
    backoff_base_s: float = 0.025
    backoff_max_s: float = 0.25
    # Nodes an overloaded (RESOURCE_EXHAUSTED) item is offered to before the caller hears it.
    max_attempts: int = 3
    # Give up this share of the caller's time before its deadline (at most reserve_max_s), so the
    # router's reply, which names the nodes tried, reaches the caller before its own deadline fires.
    reserve_share: float = 0.1
    reserve_max_s: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"--retry-max-attempts {self.max_attempts} must be >= 1")
        if self.budget_s < 0:
            raise ValueError(f"--retry-budget-s {self.budget_s} must be >= 0")
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            raise ValueError(f"need 0 < --retry-backoff-base-s ({self.backoff_base_s}) "
                             f"<= --retry-backoff-max-s ({self.backoff_max_s})")


@dataclass
class Attempts:
    """One item's tries: which nodes failed it in this round, and when to stop trying."""

    config: RetryConfig
    # The caller's deadline on the monotonic clock, or None.
    deadline: float | None
    started: float = field(default_factory=time.monotonic)
    tried: list[str] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    rounds: int = 0
    overloaded: int = 0
    # Why the last node could not take it: what the caller hears when time runs out.
    reason: str = "no node tried"
    # The last overloaded (RESOURCE_EXHAUSTED) reply, passed on when every node is full.
    shed: Any = None

    def __post_init__(self) -> None:
        if self.deadline is None:
            self.give_up = self.started + self.config.budget_s
        else:
            reserve = min(self.config.reserve_max_s, self.config.reserve_share * max(0.0, self.deadline - self.started))
            self.give_up = self.deadline - reserve

    def remaining(self) -> float:
        return self.give_up - time.monotonic()

    def sent(self, node: str) -> None:
        self.tried.append(node)

    def failed(self, node: str, reason: str) -> None:
        """``node`` could not take the item (``reason``): not again in this round."""
        self.excluded.add(node)
        self.reason = reason

    def shed_by(self, node: str, reply: Any) -> bool:
        """``node`` was too busy for the item (``reply``); True once it has been offered to ``max_attempts`` nodes."""
        self.excluded.add(node)
        self.overloaded += 1
        self.shed = reply
        return self.overloaded >= self.config.max_attempts

    def next_round(self) -> float | None:
        """Start another round over every node; the pause before it, or None when time is up."""
        self.excluded.clear()
        self.rounds += 1
        pause = backoff_s(self.rounds, self.config.backoff_base_s, self.config.backoff_max_s)
        return pause if pause < self.remaining() else None

    def describe(self) -> str:
        """The nodes tried, in order of first try, with a count where one was tried more than once."""
        if not self.tried:
            return "no node tried"
        counts = Counter(self.tried)
        return "tried " + ", ".join(f"{n} x{counts[n]}" if counts[n] > 1 else n for n in dict.fromkeys(self.tried))
