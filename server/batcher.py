"""Dynamic batching: gather single items from many streams into one model call.

Items wait up to ``max_delay_ms`` for company, or until ``max_batch`` are
gathered, then ``run_batch`` runs once on the whole batch in a worker thread,
so the event loop never blocks on the model. While a batch runs, the next one
fills; it starts at once if it is already full. The queue is bounded: past
``max_queue`` waiting items, ``submit`` fails fast with ``Overloaded`` rather
than letting memory grow. Knows nothing of caches or torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from ringserve.server.errors import Overloaded

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatcherConfig:
    max_batch: int = 16
    max_delay_ms: float = 5.0
    max_queue: int = 256


class Batcher(Generic[T, R]):
    """``await submit(item)`` returns ``run_batch([..., item, ...])[i]`` for that item."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        config: BatcherConfig,
        *,
        name: str = "batcher",
        executor: Executor | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if config.max_batch < 1 or config.max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.config = config
        self.name = name
        self._run_batch = run_batch
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._owns_executor = executor is None
        self._on_batch = on_batch
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    @property
    def depth(self) -> int:
        """Items waiting for a batch, not counting the batch that runs."""
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def submit(self, item: T) -> R:
        if self._task is None:
            raise RuntimeError(f"{self.name} is not started")
        if len(self._queue) >= self.config.max_queue:
            raise Overloaded(
                f"{self.name} queue is full ({self.config.max_queue} items waiting); retry with backoff"
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Finish every queued item, then stop."""
        while self._queue:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_executor:
            self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = loop.time() + self.config.max_delay_ms / 1000.0
            while len(self._queue) < self.config.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch = []
            while self._queue and len(batch) < self.config.max_batch:
                item, future = self._queue.popleft()
                if not future.cancelled():  # its caller left; do not spend the model on it
                    batch.append((item, future))
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch, [item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: run_batch returned {len(results)} results for {len(batch)} items")
        except Exception as exc:
            log.exception("%s: batch of %d failed", self.name, len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.items += len(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
