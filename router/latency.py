"""How long a node takes to answer, by kind of item: the per-try bound after which a try is late.

A fixed per-try timeout would either cut misses (a model run) or wait out a frozen node for as long as
a miss may take. So the router learns, per node, how long answers take for each ``Kind`` of item it can
tell apart before the answer (``kinds.py``), split afterwards by where the answer came from (the reply's
provenance source): hits and misses are two distributions, and a miss's quantile must not depend on how
rare misses are, as one mixed quantile would. Each distribution is a fixed set of log-spaced buckets
whose counts halve every ``window`` observations (an exponentially decaying histogram, as Finagle's
backup requests and Envoy's outlier detection keep a recent window): a bounded structure, cheap to
update, that forgets a slow hour. Knows nothing of gRPC or the ring.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ringserve.contract.status import source_name
from ringserve.router.kinds import Kind

if TYPE_CHECKING:
    from ringserve.router.hedging import HedgingConfig

LOW_S = 0.0005  # the first bucket's upper edge
RATIO = 1.2  # each bucket's upper edge over the one before it
BUCKETS = 64  # up to LOW_S * RATIO**63, about 50 s; slower answers count in the last bucket
_LOG_RATIO = math.log(RATIO)
# Bounds are worked out again at most this often per node and kind: a quantile walks the buckets.
REFRESH_S = 0.1


class Histogram:
    """Latencies in log-spaced buckets (a 20 % step); every ``window`` observations all counts halve."""

    __slots__ = ("counts", "total", "window")

    def __init__(self, window: int) -> None:
        self.counts = [0.0] * BUCKETS
        self.total = 0.0
        self.window = window

    def observe(self, seconds: float) -> None:
        index = 0 if seconds <= LOW_S else min(BUCKETS - 1, math.ceil(math.log(seconds / LOW_S) / _LOG_RATIO))
        self.counts[index] += 1.0
        self.total += 1.0
        if self.total >= self.window:  # the older half of what is known weighs half
            self.counts = [c / 2 for c in self.counts]
            self.total /= 2

    def quantile(self, q: float) -> float:
        """The upper edge of the bucket that holds quantile ``q`` (an over-estimate by at most one step)."""
        wanted = q * self.total
        seen = 0.0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= wanted:
                return LOW_S * RATIO**index
        return LOW_S * RATIO ** (BUCKETS - 1)


@dataclass
class NodeLatency:
    """One node's answer times, by what the item carried and where the answer came from; kept in its registry
    entry, so it leaves with the node."""

    histograms: dict[tuple[str, bool, int], Histogram] = field(default_factory=dict)
    # (kind) -> (bound, when it was worked out)
    bounds: dict[Kind, tuple[float, float]] = field(default_factory=dict)


class LatencyTracker:
    """Every node's answer times and the cluster's together (for a node too new to have its own)."""

    def __init__(self, config: HedgingConfig) -> None:
        self.config = config
        self.cluster = NodeLatency()

    def observe(self, node: NodeLatency, rpc: str, image: bool, source: int, seconds: float) -> None:
        """An answer of ``node`` from ``source`` that took ``seconds`` from send to reply."""
        key = (rpc, image, source)
        for where in (node, self.cluster):
            histogram = where.histograms.get(key)
            if histogram is None:
                histogram = where.histograms[key] = Histogram(self.config.window)
            histogram.observe(seconds)

    def quantiles(self, qs: Sequence[float] = (0.5, 0.99)) -> Iterator[tuple[dict[str, str], float]]:
        """The cluster's recent answer times as (labels, seconds): per method, what the item carried, answer
        tier and quantile. Read at scrape time (``ringserve_router_latency_seconds``), never on an item's path."""
        for (rpc, image, source), histogram in list(self.cluster.histograms.items()):
            if histogram.total <= 0:
                continue
            labels = {"method": rpc.lower(), "carried": "image" if image else "digest", "tier": source_name(source)}
            for q in qs:
                yield {**labels, "quantile": f"{q:g}"}, histogram.quantile(q)

    def bound(self, node: NodeLatency, kind: Kind, now: float) -> float:
        """How long a try of ``kind`` on ``node`` may take before it is late."""
        cached = node.bounds.get(kind)
        if cached is not None and now - cached[1] < REFRESH_S:
            return cached[0]
        value = self._bound(node, kind)
        node.bounds[kind] = (value, now)
        return value

    def _bound(self, node: NodeLatency, kind: Kind) -> float:
        c = self.config
        known = [q for q in (self._quantile(node, kind, source) for source in kind.sources) if q is not None]
        if not known or (kind.may_compute and self._quantile(node, kind, kind.sources[-1]) is None):
            # No answer of this kind yet (or no miss, for an item that may miss): what the operator set.
            known.append(c.initial_s / c.multiplier)
        return min(c.max_s, max(c.min_s, c.multiplier * max(known)))

    def _quantile(self, node: NodeLatency, kind: Kind, source: int) -> float | None:
        """The node's quantile of answers from ``source``, else the cluster's, else None (too few answers)."""
        key = (kind.rpc, kind.image, source)
        for where in (node, self.cluster):
            histogram = where.histograms.get(key)
            if histogram is not None and histogram.total >= self.config.min_samples:
                return histogram.quantile(self.config.quantile)
        return None
