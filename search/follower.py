"""Keeps a router's views in step with the store of record: snapshot, then the log, then the log again.

At start every collection's view is loaded from its saved snapshot (when it is
still for the collection's model version and the log still reaches back to it)
or built from the store's entries; from then on the follower polls each
collection's log and applies the changes in log order. A view is only ever
changed here. When Redis cannot be reached the views keep serving what they
hold, and ``stale_ms`` says for how long they have not heard from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ringserve.search.store import Change, Entry, Store, StoreUnavailable
from ringserve.search.view import CollectionView

log = logging.getLogger(__name__)
# Changes read from a log per call; a full batch also checks that the log was not trimmed past the view.
LOG_BATCH = 1000


@dataclass(frozen=True)
class FollowerConfig:
    # How often each collection's log is read when nothing new came.
    poll_s: float = 0.05
    # How often the set of collections is read (new and dropped collections).
    collections_every_s: float = 1.0
    # Where views are saved (one folder per collection), so a restart loads instead of rebuilding; None: never.
    snapshot_dir: Path | None = None
    # Save a changed view this often, and on close.
    snapshot_every_s: float = 60.0


def log_order(log_id: str) -> tuple[int, int]:
    ms, _, seq = log_id.partition("-")
    return int(ms), int(seq or 0)


class Follower:
    """Every collection's view, changed only by this follower as the store's log says."""

    def __init__(self, store: Store, config: FollowerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.views: dict[str, CollectionView] = {}
        self.last_contact = clock()
        self.failing = False  # the last call to the store failed
        self.ready = False  # every collection known at start has its view
        self.loaded = asyncio.Event()  # set once ``ready``
        self._applied = asyncio.Condition()
        self._kick = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._saved_at: dict[str, str] = {}

    # ---- for the servicer ------------------------------------------------------------------

    def stale_ms(self) -> int:
        """0 while the follower hears from the store; else the ms since it last did (at least 1).

        Any call to the store that failed counts, the follower's own or a write's, so a search right after a
        refused write already says the view may be stale.
        """
        quiet = self.clock() - self.last_contact
        if self.store.unreachable:
            return max(1, int(quiet * 1000))
        if not self.failing and quiet <= max(1.0, 4 * self.config.poll_s + self.config.collections_every_s):
            return 0
        return max(1, int(quiet * 1000))

    async def caught_up(self, collection: str, log_id: str, timeout_s: float = 5.0) -> bool:
        """Wait until ``collection``'s view has applied ``log_id`` (read your writes); False on timeout."""
        self._kick.set()

        def done() -> bool:
            view = self.views.get(collection)
            return view is not None and log_order(view.log_id) >= log_order(log_id)

        async with self._applied:
            try:
                await asyncio.wait_for(self._applied.wait_for(done), timeout_s)
            except TimeoutError:
                return False
        return True

    # ---- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._load_snapshots()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="search-follower")

    async def close(self) -> None:
        self._closing = True  # also ends the loop where 3.11's wait_for swallows the cancellation
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.save_snapshots(force=True)

    async def _run(self) -> None:
        next_collections = 0.0
        next_snapshot = self.clock() + self.config.snapshot_every_s
        checked = False
        while not self._closing:
            try:
                if not checked:
                    await self.check_snapshots()
                    checked = True
                if self.clock() >= next_collections:
                    await self._sync_collections()
                    next_collections = self.clock() + self.config.collections_every_s
                    self.ready = True
                    self.loaded.set()
                moved = False
                for name in list(self.views):
                    moved |= await self._follow(name)
                self.last_contact = self.clock()
                self.failing = False
                if self.clock() >= next_snapshot:
                    await asyncio.to_thread(self.save_snapshots)
                    next_snapshot = self.clock() + self.config.snapshot_every_s
                if not moved:
                    self._kick.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._kick.wait(), self.config.poll_s)
            except StoreUnavailable as exc:
                self.failing = True
                log.warning("search views cannot reach Redis (%s): serving what they hold, and following again "
                            "once it answers", exc.detail)
                await asyncio.sleep(min(1.0, 10 * self.config.poll_s))

    async def sync(self, name: str) -> CollectionView | None:
        """The view of ``name`` once the follower has looked for it (a collection another router just made)."""
        if name not in self.views and await self.store.meta(name) is not None:
            await self._build(name)
        return self.views.get(name)

    async def _sync_collections(self) -> None:
        names = set(await self.store.collections())
        for name in names - set(self.views):
            await self._build(name)
        for name in set(self.views) - names:
            # Dropped: the follower of its log removes it; a view whose log it never saw goes here.
            if await self.store.meta(name) is None:
                await self._forget(name)

    async def _build(self, name: str) -> None:
        meta = await self.store.meta(name)
        if meta is None:
            return
        head = await self.store.log_head(name)  # before the entries: the log after it corrects the scan
        view = CollectionView(name, meta)
        count = 0
        started = self.clock()
        async for batch in self.store.entries(name, meta):
            await asyncio.to_thread(view.add, batch)  # an HNSW insert is CPU work: off the router's loop
            count += len(batch)
        view.log_id = head
        await self._publish(name, view)
        log.info("search view %s built from the store: %d entries in %.1f s", name, count, self.clock() - started)

    async def _follow(self, name: str) -> bool:
        """Apply the changes after the view's log id; True when there were any."""
        view = self.views.get(name)
        if view is None:
            return False
        changes = await self.store.changes(name, view.log_id, block_ms=None, count=LOG_BATCH)
        if not changes:
            return False
        if len(changes) == LOG_BATCH and await self._trimmed_past(name, view):
            log.warning("search view %s fell behind the log's trimmed end; rebuilding it from the store", name)
            self.views.pop(name, None)
            await self._build(name)
            return True
        await self._apply(name, view, changes)
        return True

    async def _trimmed_past(self, name: str, view: CollectionView) -> bool:
        """The log no longer holds every change after the view's: some were trimmed before it read them."""
        tail = await self.store.log_tail(name)
        return tail is not None and log_order(tail) > log_order(view.log_id)

    async def _apply(self, name: str, view: CollectionView, changes: list[Change]) -> None:
        puts: list[Entry] = []
        for change in changes:
            if change.op == "put":
                puts.append(change.entry(view.meta.model_version))
                continue
            await asyncio.to_thread(view.add, puts)
            puts = []
            if change.op == "del":
                view.delete([change.id])
            elif change.op == "drop":
                await self._forget(name)
                await self._build(name)  # re-created since, under whatever model it holds now
                return
        await asyncio.to_thread(view.add, puts)
        view.log_id = changes[-1].log_id
        await self._notify()

    async def _publish(self, name: str, view: CollectionView) -> None:
        self.views[name] = view
        await self._notify()

    async def _notify(self) -> None:
        async with self._applied:
            self._applied.notify_all()

    async def _forget(self, name: str) -> None:
        self.views.pop(name, None)
        if self.config.snapshot_dir is not None:
            shutil.rmtree(self.config.snapshot_dir / name, ignore_errors=True)
        await self._notify()

    # ---- snapshots -------------------------------------------------------------------------

    def _load_snapshots(self) -> None:
        folder = self.config.snapshot_dir
        if folder is None or not folder.exists():
            return
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "state.json").exists()):
            try:
                view = CollectionView.load(path)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                log.warning("search snapshot %s unreadable (%s); the view is rebuilt from the store", path, exc)
                continue
            self.views[view.name] = view
            self._saved_at[view.name] = view.log_id
            log.info("search view %s loaded from its snapshot: %d entries at log id %s", view.name, len(view),
                     view.log_id)

    async def check_snapshots(self) -> None:
        """Drop loaded views the store no longer agrees with (another model version, or a log trimmed past them)."""
        for name, view in list(self.views.items()):
            meta = await self.store.meta(name)
            behind = await self._trimmed_past(name, view)
            if meta != view.meta or behind:
                log.info("search view %s: snapshot out of date (%s); rebuilding from the store", name,
                         "model changed" if meta != view.meta else "log trimmed past it")
                self.views.pop(name)
                await self._build(name)

    def save_snapshots(self, force: bool = False) -> None:
        folder = self.config.snapshot_dir
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for name, view in list(self.views.items()):
            if force or self._saved_at.get(name) != view.log_id:
                view.save(folder / name)
                self._saved_at[name] = view.log_id
