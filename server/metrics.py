"""The node's metrics, made with opentelemetry-sdk and scraped by Prometheus.

One ``Metrics`` object is built at start-up and passed down; nothing reads a
global meter. Where the metrics go is configuration (``runtime.telemetry``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry.sdk.metrics import MeterProvider

from ringserve.runtime import telemetry
from ringserve.runtime.telemetry import Tally

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128]


class Metrics:
    def __init__(self, provider: MeterProvider, node_id: str) -> None:
        self.provider = provider
        meter = provider.get_meter("ringserve.server")
        self._attrs = {"node": node_id}
        self.requests = Tally(meter, "ringserve.requests", "Items answered, by method and status", self._attrs,
                              ("method", "status"))
        self.latency = meter.create_histogram(
            "ringserve.request.duration", unit="s", description="Item latency inside the node, by method and source",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.lookups = Tally(meter, "ringserve.cache.lookups",
                             "Cache lookups by tier (l1, l2), kind (exact, perceptual, digest), result", self._attrs,
                             ("tier", "kind", "result"))
        self.backbone_images = meter.create_counter(
            "ringserve.backbone.images", description="Images the backbone ran on (cache misses that were computed)"
        )
        self.batch_size = meter.create_histogram(
            "ringserve.batch.size", description="Images per backbone batch", explicit_bucket_boundaries_advisory=BATCH_BUCKETS
        )
        self.head_batch_size = meter.create_histogram(
            "ringserve.head.batch.size", description="Features per classification-head batch (Classify)",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )
        self.batch_duration = meter.create_histogram(
            "ringserve.batch.duration", unit="s", description="Backbone time per batch",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.l2_events = meter.create_counter(
            "ringserve.l2.events", description="L2 writes (ok, error, dropped), breaker openings, corrupt values"
        )
        self.internal_errors = meter.create_counter(
            "ringserve.internal_errors", description="Items answered INTERNAL because a handler raised, by exception type"
        )
        self.singleflight = meter.create_counter(
            "ringserve.singleflight.shared", description="Misses served by a computation already in flight"
        )

    def attrs(self, **extra: str) -> dict[str, str]:
        return {**self._attrs, **extra}

    def gauge(self, name: str, description: str, read: Callable[[], float]) -> None:
        """An observable gauge read at scrape time (queue depth, in-flight items, L1 bytes)."""
        telemetry.gauge(self.provider.get_meter("ringserve.server"), name, description, read, self._attrs)
