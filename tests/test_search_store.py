"""The search store of record and the follower of its log, against a real Redis (in process, no model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ringserve.contract import codec
from ringserve.contract.errors import ModelMismatch
from ringserve.local.processes import RedisProcess
from ringserve.runtime.redisconn import connect
from ringserve.search.follower import Follower, FollowerConfig
from ringserve.search.store import Digest, Entry, Meta, Store, StoreUnavailable, decode_entry, encode_entry

DIM = 32
META = Meta("m", "v1", DIM)


def entry(i: int, version: int = 0) -> Entry:
    rng = np.random.default_rng(1000 * version + i)
    return Entry(f"id-{i}", int(rng.integers(0, 2**63)), rng.standard_normal(DIM).astype(np.float16))


def run(coro):
    return asyncio.run(coro)


@pytest.fixture()
def store(redis_db: RedisProcess) -> Store:
    return Store(connect(redis_db.url, 2.0))


async def _contents(store: Store, name: str) -> dict[str, Entry]:
    meta = await store.require(name)
    out = {}
    async for batch in store.entries(name, meta):
        out.update({e.id: e for e in batch})
    return out


def test_writes_are_entries_and_log_together_and_a_collection_keeps_its_model(redis_db: RedisProcess) -> None:
    async def go() -> None:
        store = Store(connect(redis_db.url, 2.0))
        first = await store.add("c", META, [entry(i) for i in range(5)])
        await store.add("c", META, [entry(2, version=1)])  # id-2 again: replaced
        deleted, missing = await store.delete("c", ["id-4", "nope"])
        assert (deleted, missing) == (["id-4"], ["nope"])
        held = await _contents(store, "c")
        assert sorted(held) == ["id-0", "id-1", "id-2", "id-3"]
        assert np.array_equal(held["id-2"].feature, entry(2, version=1).feature)
        changes = await store.changes("c", "0-0")
        assert [(c.op, c.id) for c in changes] == [("put", f"id-{i}") for i in range(5)] + [("put", "id-2"),
                                                                                              ("del", "id-4")]
        assert changes[4].log_id == first
        assert changes[5].entry("v1").phash == entry(2, version=1).phash
        with pytest.raises(ModelMismatch, match="v1"):
            await store.add("c", Meta("m", "v2", DIM), [entry(9)])
        assert sorted(await _contents(store, "c")) == ["id-0", "id-1", "id-2", "id-3"]  # nothing of v2 applied
        await store.drop("c")
        assert await store.meta("c") is None and await store.collections() == []
        await store.add("c", Meta("m", "v2", DIM), [entry(9)])  # a dropped collection takes a new model
        assert (await store.require("c")).model_version == "v2"

    run(go())


def test_a_write_while_redis_is_down_is_refused_and_not_applied(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "r").start()
    port = redis.port
    try:
        async def before() -> None:
            await Store(connect(redis.url, 0.5)).add("c", META, [entry(0)])

        run(before())
        redis.stop()

        async def during() -> None:
            store = Store(connect(f"redis://127.0.0.1:{port}/0", 0.5))
            follower = Follower(store, FollowerConfig())  # not polling: only the refused write tells it
            assert follower.stale_ms() == 0
            with pytest.raises(StoreUnavailable, match="index these ids again when Redis is back") as put:
                await store.add("c", META, [entry(1)])
            with pytest.raises(StoreUnavailable, match="delete the same ids again when Redis is back") as delete:
                await store.delete("c", ["id-0"])
            with pytest.raises(StoreUnavailable, match="nothing was changed: retry when Redis is back") as read:
                await store.meta("c")
            for refused in (put, delete, read):  # one sentence each, with advice that fits it
                assert ".." not in str(refused.value) and str(refused.value).count("again") <= 1
            assert "index" not in str(delete.value) and "again when" not in str(read.value)
            assert follower.stale_ms() > 0  # a search now says its view may be behind, at once

        run(during())
    finally:
        redis.stop()


def test_the_follower_builds_follows_and_restarts_from_its_snapshot(redis_db: RedisProcess, tmp_path: Path) -> None:
    config = FollowerConfig(poll_s=0.02, collections_every_s=0.1, snapshot_dir=tmp_path / "views")

    async def go() -> None:
        store = Store(connect(redis_db.url, 2.0))
        await store.add("c", META, [entry(i) for i in range(50)])  # before the follower: built from entries
        follower = Follower(store, config)
        await follower.start()
        await asyncio.wait_for(_until(lambda: "c" in follower.views and len(follower.views["c"]) == 50), 10)
        last = await store.add("c", META, [entry(50), entry(3, version=1)])  # after: followed from the log
        await store.delete("c", ["id-7"])
        assert await follower.caught_up("c", last, 5)
        await asyncio.wait_for(_until(lambda: follower.views["c"].entry("id-7") is None), 5)
        view = follower.views["c"]
        assert len(view) == 50
        assert view.nearest(entry(3, version=1).feature, 1)[0].id == "id-3"
        assert follower.stale_ms() == 0
        await follower.close()  # saves the snapshot

        later = await store.add("c", META, [entry(60)])  # while no follower runs
        again = Follower(store, config)
        await again.start()
        assert again.views["c"].log_id != "0-0"  # loaded from the snapshot, not rebuilt
        assert await again.caught_up("c", later, 5)
        assert len(again.views["c"]) == 51 and again.views["c"].entry("id-60") is not None
        await again.close()

    run(go())


def test_views_keep_serving_and_say_how_stale_they_are_while_redis_is_down(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "r").start()
    try:
        async def go() -> None:
            store = Store(connect(redis.url, 0.3))
            await store.add("c", META, [entry(i) for i in range(10)])
            follower = Follower(store, FollowerConfig(poll_s=0.02, collections_every_s=0.1))
            await follower.start()
            await asyncio.wait_for(_until(lambda: "c" in follower.views and len(follower.views["c"]) == 10), 10)
            redis.stop()
            await asyncio.wait_for(_until(lambda: follower.stale_ms() > 0), 10)
            assert follower.views["c"].nearest(entry(4).feature, 1)[0].id == "id-4"
            await follower.close()

        run(go())
    finally:
        redis.stop()


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.02)


def test_a_collection_lives_in_one_slot_of_a_redis_cluster(redis_cluster, tmp_path: Path) -> None:
    """Meta, entries and log share a hash tag, so the atomic script runs on one master of a real cluster."""
    async def go() -> None:
        store = Store(connect(redis_cluster.url, 5.0))
        names = [f"cluster-{i}" for i in range(6)]  # spread over the masters' slots
        for name in names:
            await store.add(name, META, [entry(i) for i in range(20)])
            await store.delete(name, ["id-3"])
        follower = Follower(store, FollowerConfig(poll_s=0.02, collections_every_s=0.1, snapshot_dir=tmp_path))
        await follower.start()
        await asyncio.wait_for(_until(lambda: all(len(follower.views.get(n) or ()) == 19 for n in names)), 15)
        last = await store.add(names[0], META, [entry(40)])
        assert await follower.caught_up(names[0], last, 5)
        assert follower.views[names[0]].nearest(entry(40).feature, 1)[0].id == "id-40"
        assert sorted(await store.collections()) == names
        await follower.close()

    run(go())


def test_a_view_whose_log_was_trimmed_past_it_is_rebuilt_from_the_entries(redis_db: RedisProcess, tmp_path: Path) -> None:
    config = FollowerConfig(poll_s=0.02, collections_every_s=0.1, snapshot_dir=tmp_path / "views")

    async def go() -> None:
        store = Store(connect(redis_db.url, 2.0), log_maxlen=50)
        await store.add("c", META, [entry(i) for i in range(10)])
        follower = Follower(store, config)
        await follower.start()
        await asyncio.wait_for(_until(lambda: len(follower.views.get("c") or ()) == 10), 10)
        await follower.close()  # its snapshot holds 10 entries and an early log id

        for i in range(10, 600):  # while no follower runs: far more changes than the log keeps
            await store.add("c", META, [entry(i)])
        await store.delete("c", ["id-0", "id-599"])
        assert await store.log_tail("c") is not None and len(await store.changes("c", "0-0", count=10_000)) < 300
        again = Follower(store, config)
        await again.start()
        await asyncio.wait_for(_until(lambda: len(again.views.get("c") or ()) == 598), 20)
        view = again.views["c"]
        assert view.entry("id-0") is None and view.entry("id-599") is None and view.entry("id-5") is not None
        assert view.nearest(entry(300).feature, 1)[0].id == "id-300"
        await again.close()

    run(go())


def test_an_entry_keeps_the_digest_of_its_bytes_and_entries_of_older_formats_still_decode() -> None:
    made = Entry("a", 2**64 - 3, np.arange(DIM, dtype=np.float16), low_information=True,
                 digest=Digest(bytes(range(16)), 123_456))
    back = decode_entry("a", encode_entry(made, "v1"), "v1")
    assert (back.phash, back.low_information, back.digest) == (made.phash, True, made.digest)
    assert np.array_equal(back.feature, made.feature)
    assert decode_entry("a", encode_entry(Entry("a", 5, made.feature), "v1"), "v1").digest is None
    feature = codec.encode(made.feature, "v1")
    # Format 0 (the pHash, then the feature) and format 1 (the pHash, the low-information flag, the feature).
    for old, low in ((made.phash.to_bytes(8, "little") + feature, False),
                     (made.phash.to_bytes(8, "little") + b"\x01" + feature, True)):
        entry_ = decode_entry("a", old, "v1")
        assert (entry_.phash, entry_.low_information, entry_.digest) == (made.phash, low, None)
        assert np.array_equal(entry_.feature, made.feature)


def test_held_reads_the_meta_and_the_digest_an_id_was_made_from(store: Store) -> None:
    async def go() -> None:
        assert await store.held("d", "id-0") is None  # no collection
        await store.add("d", META, [Entry("id-0", 1, entry(0).feature, digest=Digest(b"\x07" * 16, 99)),
                                    entry(1)])
        assert await store.held("d", "id-0") == (META, Digest(b"\x07" * 16, 99))
        assert await store.held("d", "id-1") == (META, None)  # written without a digest
        assert await store.held("d", "nope") is None
    run(go())
