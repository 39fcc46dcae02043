import asyncio
import threading

import pytest

from ringserve.server.batcher import Batcher, BatcherConfig
from ringserve.server.errors import Overloaded


async def test_items_from_many_callers_run_in_few_batches_and_results_match():
    sizes = []

    def run(items):
        sizes.append(len(items))
        return [x * 2 for x in items]

    b = Batcher(run, BatcherConfig(max_batch=8, max_delay_ms=50, max_queue=100))
    b.start()
    results = await asyncio.gather(*(b.submit(i) for i in range(20)))
    await b.close()
    assert results == [i * 2 for i in range(20)]
    assert max(sizes) == 8 and sum(sizes) == 20 and len(sizes) <= 4


async def test_runs_off_the_event_loop_thread():
    loop_thread = threading.get_ident()
    seen = []

    def run(items):
        seen.append(threading.get_ident())
        return items

    b = Batcher(run, BatcherConfig(max_batch=4, max_delay_ms=1))
    b.start()
    await b.submit(1)
    await b.close()
    assert seen and seen[0] != loop_thread


async def test_full_queue_fails_fast():
    release = threading.Event()

    def run(items):
        release.wait(5)
        return items

    b = Batcher(run, BatcherConfig(max_batch=1, max_delay_ms=0, max_queue=3))
    b.start()
    first = asyncio.ensure_future(b.submit(0))
    await asyncio.sleep(0.05)  # first is running, queue empty
    waiting = [asyncio.ensure_future(b.submit(i)) for i in range(1, 4)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue is full"):
        await b.submit(99)
    release.set()
    assert await first == 0
    assert await asyncio.gather(*waiting) == [1, 2, 3]
    await b.close()


async def test_batch_exception_fails_its_items_and_the_batcher_goes_on():
    calls = 0

    def run(items):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model crashed")
        return items

    b = Batcher(run, BatcherConfig(max_batch=2, max_delay_ms=1))
    b.start()
    with pytest.raises(RuntimeError, match="model crashed"):
        await b.submit(1)
    assert await b.submit(2) == 2
    await b.close()


async def test_cancelled_items_are_skipped():
    ran = []

    def run(items):
        ran.extend(items)
        return items

    b = Batcher(run, BatcherConfig(max_batch=8, max_delay_ms=30))
    b.start()
    doomed = asyncio.ensure_future(b.submit("doomed"))
    kept = asyncio.ensure_future(b.submit("kept"))
    await asyncio.sleep(0.005)
    doomed.cancel()
    assert await kept == "kept"
    await b.close()
    assert ran == ["kept"]


async def test_no_delay_takes_what_is_queued_and_the_next_batch_fills_while_one_runs():
    """The head's batcher (max_delay 0): no wait for company, yet items arriving together share a batch."""
    sizes = []
    release = threading.Event()

    def run(items):
        sizes.append(len(items))
        if len(sizes) == 1:
            release.wait(5)
        return items

    b = Batcher(run, BatcherConfig(max_batch=8, max_delay_ms=0, max_queue=100))
    b.start()
    together = asyncio.gather(*(b.submit(i) for i in range(5)))
    await asyncio.sleep(0.05)  # the first batch is running and blocked
    later = asyncio.gather(*(b.submit(i) for i in range(5, 11)))
    await asyncio.sleep(0.05)
    release.set()
    assert await together == list(range(5)) and await later == list(range(5, 11))
    await b.close()
    assert sizes == [5, 6]
