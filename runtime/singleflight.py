"""Single flight: concurrent calls for one key share one execution.

``await group.do(key, fn)`` runs ``fn()`` once per key at a time; every caller
that arrives while it runs gets the same result (or exception). A caller that
is cancelled does not cancel the shared work the others wait on; when the last
caller has left, the work is cancelled, so an item whose deadline passed while
it waited in the batcher's queue never reaches the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class _Flight(Generic[V]):
    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0


class Group(Generic[V]):
    def __init__(self) -> None:
        self._calls: dict[Hashable, _Flight[V]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """Result of ``fn()``, and whether it was shared with a call already in flight."""
        flight = self._calls.get(key)
        shared = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(fn()))
            self._calls[key] = flight
            flight.task.add_done_callback(lambda t: self._done(key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), shared
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Nobody waits for it any more. Out of the table first: a caller arriving now starts afresh
                # rather than joining work that is being cancelled.
                self._forget(key, flight)
                flight.task.cancel()

    def _forget(self, key: Hashable, flight: _Flight[V]) -> None:
        if self._calls.get(key) is flight:
            del self._calls[key]

    def _done(self, key: Hashable, flight: _Flight[V]) -> None:
        self._forget(key, flight)
        if not flight.task.cancelled():
            flight.task.exception()  # every waiter already got it; mark it retrieved even if all left
