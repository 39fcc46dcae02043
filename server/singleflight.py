"""Single flight: concurrent calls for one key share one execution.

``await group.do(key, fn)`` runs ``fn()`` once per key at a time; every caller
that arrives while it runs gets the same result (or exception). A caller that
is cancelled does not cancel the shared work the others wait on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Group(Generic[V]):
    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """Result of ``fn()``, and whether it was shared with a call already in flight."""
        task = self._calls.get(key)
        shared = task is not None
        if task is None:
            task = asyncio.ensure_future(fn())
            self._calls[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task), shared

    def _done(self, key: Hashable, task: asyncio.Task[V]) -> None:
        self._calls.pop(key, None)
        if not task.cancelled():
            task.exception()  # every waiter already got it; mark it retrieved even if all left
