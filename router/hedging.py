"""A slow try is not a failed one: hedge it to the next node, within a budget, and take the first answer.

Envoy's ``per_try_timeout`` and gRPC's hedging policy (gRFC A6) bound how long one try may take before
another node is asked, apart from the caller's deadline. Here the bound is each node's own recent
latency for the item's kind (``latency.py``, ``kinds.py``). When it passes, there are two cases:

- the node has answered nothing at all since the try was sent: it is *stalled* (frozen, partitioned,
  paused), and every item on it moves to the next node at once, as off a broken link, and no item is
  placed on it until it answers again (``link.py``). That costs no budget: the node is doing no work.
- the node answers other items but not this one: the item is *late*, and a second try goes to the next
  node if the hedge budget has a token. The budget is a token bucket filled by a share of the items
  sent (Envoy's retry budget, Finagle's backup-request budget), so a cluster that is slow all over is
  not asked for everything twice.

Either way the first answer wins and the caller gets exactly that one; the other tries are cancelled
at the link (as gRPC cancels the other attempts once one commits), which leaves the node's load at
once and drops their answers when they come (the node may still compute them). ``Race`` holds one
item's tries; the servicer decides where they go.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ringserve.contract.flags import setting


@dataclass(frozen=True)
class HedgingConfig:
    enabled: bool = setting(True, help="send a late item to the next node too, and take the first answer")
    quantile: float = setting(0.99, help="quantile of a node's recent answer times, per kind of item, a try may "
                              "reach before it is late")
    multiplier: float = setting(2.0, help="the per-try bound is this times that quantile")
    min_s: float = setting(0.05, help="shortest per-try bound, in seconds")
    max_s: float = setting(2.0, help="longest per-try bound, in seconds")
    initial_s: float = setting(1.0, help="per-try bound of a kind of item no node has answered enough of yet")
    min_samples: int = setting(20, help="answers of a kind a node needs before its own latency bounds it")
    window: int = setting(2000, help="answers after which older ones weigh half, per node and kind")
    stall_grace_s: float = setting(0.1, help="a node silent past an item's bound is found stalled only after "
                                   "this long more with the router running on time (its answers may wait unread, "
                                   "or it was briefly off the CPU)")
    budget_share: float = setting(0.05, help="hedges allowed per item sent (a token bucket's rate)")
    budget_burst: float = setting(20.0, help="most hedges saved up in the bucket")
    recent_keys: int = setting(65_536, help="placement keys remembered as answered lately (their items are "
                               "expected to hit)")

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile < 1:
            raise ValueError(f"--hedge-quantile {self.quantile} must be in [0.5, 1)")
        if self.multiplier < 1:
            raise ValueError(f"--hedge-multiplier {self.multiplier} must be >= 1")
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"need 0 < --hedge-min-s ({self.min_s}) <= --hedge-max-s ({self.max_s})")
        if self.min_samples < 1 or self.window < 2 * self.min_samples:
            raise ValueError(f"need 1 <= --hedge-min-samples ({self.min_samples}) <= --hedge-window "
                             f"({self.window}) / 2")
        if self.stall_grace_s <= 0:
            raise ValueError(f"--hedge-stall-grace-s {self.stall_grace_s} must be > 0")
        if self.budget_share < 0 or self.budget_burst < 1:
            raise ValueError("need --hedge-budget-share >= 0 and --hedge-budget-burst >= 1")


class HedgeBudget:
    """A token bucket: each item sent adds ``share`` of a token (up to ``burst``); a hedge takes one."""

    def __init__(self, share: float, burst: float) -> None:
        self.share = share
        self.burst = burst
        self.tokens = burst

    def earn(self) -> None:
        self.tokens = min(self.burst, self.tokens + self.share)

    def take(self) -> bool:
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Try:
    """One try of an item on one node."""

    node: Any  # the registry's Node
    answer: asyncio.Future  # the node's reply, or LinkError
    stalled: asyncio.Future  # done when the node is found stalled
    sent: float  # monotonic
    late_at: float  # monotonic: when the per-try bound passes
    why: str = ""  # a hedge: "late" or "stalled"; the first try: ""
    # The bound was acted on (a hedge sent, or none could be); a try moved off a stalled node is also done.
    handled: bool = False
    moved: bool = False


def _seen(future: asyncio.Future) -> None:
    """Read a try's outcome, so that a loser's broken link is not reported as never read."""
    if not future.cancelled():
        future.exception()


@dataclass
class Race:
    """One item's tries in flight: the first answer wins."""

    tries: list[Try] = field(default_factory=list)

    def add(self, attempt: Try) -> None:
        attempt.answer.add_done_callback(_seen)
        self.tries.append(attempt)

    def names(self) -> set[str]:
        return {t.node.name for t in self.tries}

    async def wait(self, timeout_s: float) -> None:
        """Until a try is answered (or broke), one's bound passes, one's node stalls, or ``timeout_s``."""
        watched = [t.answer for t in self.tries] + [t.stalled for t in self.tries if not t.moved]
        pending_bounds = [t.late_at for t in self.tries if not t.handled]
        if pending_bounds:
            timeout_s = min(timeout_s, max(0.0, min(pending_bounds) - time.monotonic()))
        await asyncio.wait(watched, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED)

    def finished(self) -> list[Try]:
        """The tries answered (or broken), taken out of the race."""
        done = [t for t in self.tries if t.answer.done()]
        if done:
            self.tries = [t for t in self.tries if not t.answer.done()]
        return done

    def stalled(self) -> list[Try]:
        """Tries whose node was found stalled and that have not been moved off it yet."""
        return [t for t in self.tries if not t.moved and t.stalled.done()]

    def late(self, now: float) -> list[Try]:
        """Tries whose per-try bound passed and was not acted on yet."""
        return [t for t in self.tries if not t.handled and now >= t.late_at]

    def abandon(self) -> None:
        """Cancel the tries still out: each leaves its node's load, and its answer, when it comes, is dropped."""
        for t in self.tries:
            t.answer.cancel()
        self.tries = []
