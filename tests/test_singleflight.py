import asyncio

import pytest

from ringserve.runtime.singleflight import Group


async def test_concurrent_calls_share_one_execution():
    group: Group[int] = Group()
    runs = 0

    async def work():
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return 42

    results = await asyncio.gather(*(group.do("k", work) for _ in range(10)))
    assert runs == 1
    assert [r[0] for r in results] == [42] * 10
    assert sum(shared for _, shared in results) == 9
    assert len(group) == 0
    await group.do("k", work)
    assert runs == 2  # a later call runs again


async def test_errors_reach_every_waiter_and_cancel_does_not_kill_shared_work():
    group: Group[int] = Group()
    gate = asyncio.Event()

    async def fail():
        await gate.wait()
        raise ValueError("boom")

    first = asyncio.ensure_future(group.do("k", fail))
    second = asyncio.ensure_future(group.do("k", fail))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    with pytest.raises(ValueError, match="boom"):
        await second


async def test_work_is_cancelled_when_its_last_caller_leaves_and_a_new_caller_starts_afresh():
    group: Group[int] = Group()
    cancelled = asyncio.Event()
    runs = 0

    async def work():
        nonlocal runs
        runs += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    first = asyncio.ensure_future(group.do("k", work))
    second = asyncio.ensure_future(group.do("k", work))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert not cancelled.is_set() and len(group) == 1  # one caller still waits: the work goes on
    second.cancel()
    await asyncio.wait_for(cancelled.wait(), 1)
    assert len(group) == 0

    async def quick():
        return 7

    assert await group.do("k", quick) == (7, False)
    assert runs == 1
