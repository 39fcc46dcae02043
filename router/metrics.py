"""The router's metrics: placement per node, answers by tier, in-flight, retries, hedges, ejections, ring membership."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from opentelemetry.sdk.metrics import MeterProvider

from ringserve.runtime import telemetry
from ringserve.runtime.telemetry import Tally


class RouterMetrics:
    def __init__(self, provider: MeterProvider, router_id: str) -> None:
        self.provider = provider
        self.router_id = router_id
        meter = provider.get_meter("ringserve.router")
        # Counted per item on the hit path: a dict increment, read at scrape time.
        self.placed = Tally(meter, "ringserve.router.placed", "Items sent to each node", {"router": router_id}, ("node",))
        # Items answered OK, by the node, tier and model version of the answer: the hit ratio per model version,
        # which the nodes cannot tell (``Cluster.Members`` serves the same counts to ``ringserve status``).
        self.answered = Tally(meter, "ringserve.router.answered", "Items answered OK, by node, tier and model version",
                              {"router": router_id}, ("node", "tier", "model_version"))
        self.retries = meter.create_counter("ringserve.router.retries", description="Items re-sent to another node")
        self.errors = meter.create_counter("ringserve.router.errors", description="Items the router answered with an error")
        # Hedges (``hedging.py``): sent to a node, by why (a late try, or a stalled node); won, by the node whose
        # answer came first; refused by the hedge budget, by the late node.
        self.hedges = meter.create_counter("ringserve.router.hedges", description="Second tries sent to another node")
        self.hedges_won = meter.create_counter("ringserve.router.hedges_won",
                                               description="Items answered first by a hedged try")
        self.hedges_denied = meter.create_counter("ringserve.router.hedges_denied",
                                                  description="Late tries not hedged: the hedge budget was spent")
        self.ejections = meter.create_counter("ringserve.router.ejections", description="Outlier ejections per node")
        self._meter = meter

    def labelled(self, name: str, description: str, read: Callable[[], Iterable[tuple[dict[str, str], float]]]) -> None:
        """A gauge read at scrape time whose every value carries labels of its own (latency by method and tier)."""
        from opentelemetry.metrics import Observation

        def callback(_options: object) -> Iterator[Observation]:
            for labels, value in read():
                yield Observation(value, {"router": self.router_id, **labels})

        self._meter.create_observable_gauge(name, callbacks=[callback], description=description)

    def observe(self, name: str, description: str, read: Callable[[], dict[str, float] | float]) -> None:
        """A gauge read at scrape time; ``read`` returns a value, or a value per node."""
        telemetry.gauge(self._meter, name, description, read, {"router": self.router_id})
