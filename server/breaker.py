"""A circuit breaker: stop calling a dependency that keeps failing, probe it now and then.

Closed: calls go through; ``failure_threshold`` consecutive failures open it.
Open: calls are refused at once for ``reset_seconds``. Then half-open: one
call goes through as a probe; success closes the circuit, failure re-opens it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class Breaker:
    failure_threshold: int = 3
    reset_seconds: float = 2.0
    clock: Callable[[], float] = time.monotonic
    # internal state
    _failures: int = field(default=0, init=False)
    _opened_at: float | None = field(default=None, init=False)
    _probing: bool = field(default=False, init=False)
    opens: int = field(default=0, init=False)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.reset_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._probing = False
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            if self._opened_at is None:
                self.opens += 1
            self._opened_at = self.clock()
