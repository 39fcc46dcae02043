"""The one interface the Search service needs of an index, and its embedded implementation.

``SearchIndex`` is all the service calls. ``EmbeddedIndex`` keeps the store of
record in Redis (``store.py``) and each router's in-memory usearch views
(``view.py``, kept in step by ``follower.py``). A deployment that outgrows one
machine's memory would implement ``SearchIndex`` over a distributed vector
engine instead (docs/search.md says how), and the service would not change.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import numpy as np

from ringserve.contract.errors import UnknownCollection
from ringserve.search.follower import Follower
from ringserve.search.store import Digest, Entry, Meta, Store, StoreUnavailable
from ringserve.search.view import CollectionView, Hit

log = logging.getLogger(__name__)


class SearchIndex(Protocol):
    """Collections of (id, feature, pHash) entries for one model version each.

    Writes are durable when they return; reads may lag other writers by ``stale_ms``.
    Raises ``UnknownCollection`` for a collection with no entries, ``StoreUnavailable``
    when a write cannot be taken (nothing applied) or the index is not loaded yet.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def wait_ready(self) -> None:
        """Return once every collection can be searched (the router then reports Search SERVING)."""

    async def add(self, collection: str, meta: Meta, entries: list[Entry]) -> None:
        """Store entries (replacing those ids); raises ModelMismatch for another model version."""

    async def delete(self, collection: str, ids: list[str]) -> tuple[list[str], list[str]]:
        """Remove ids; (deleted, missing)."""

    async def drop(self, collection: str) -> int:
        """Remove the collection; how many entries it held."""

    async def meta(self, collection: str) -> Meta: ...

    async def size(self, collection: str) -> int: ...

    async def entry(self, collection: str, item_id: str) -> Entry | None:
        """The entry stored under ``item_id``, or None."""

    async def held(self, collection: str, item_id: str) -> tuple[Meta, Digest | None] | None:
        """From the store of record: the collection's meta and the digest of the bytes ``item_id``'s entry was
        made from (None: written without one), or None when it does not hold the id."""

    async def nearest(self, collection: str, vector: np.ndarray, k: int, phash: int | None) -> list[Hit]: ...

    async def duplicates(self, collection: str, phash: int, max_distance: int, limit: int) -> list[Hit]: ...

    def stale_ms(self) -> int: ...


class EmbeddedIndex:
    """Redis as the store of record and usearch views in this process, following Redis's log."""

    def __init__(self, store: Store, follower: Follower, read_your_writes_s: float = 5.0) -> None:
        self.store = store
        self.follower = follower
        self.read_your_writes_s = read_your_writes_s

    async def start(self) -> None:
        await self.follower.start()

    async def close(self) -> None:
        await self.follower.close()

    async def wait_ready(self) -> None:
        await self.follower.loaded.wait()

    async def add(self, collection: str, meta: Meta, entries: list[Entry]) -> None:
        log_id = await self.store.add(collection, meta, entries)
        await self._seen(collection, log_id)

    async def delete(self, collection: str, ids: list[str]) -> tuple[list[str], list[str]]:
        deleted, missing = await self.store.delete(collection, ids)
        if deleted:
            await self._seen(collection, await self.store.log_head(collection))
        return deleted, missing

    async def drop(self, collection: str) -> int:
        await self.store.require(collection)
        view = self.follower.views.get(collection)
        await self.store.drop(collection)
        return len(view) if view is not None else 0

    async def _seen(self, collection: str, log_id: str) -> None:
        """This router's view shows the write before the caller hears of it (read your writes)."""
        if not await self.follower.caught_up(collection, log_id, self.read_your_writes_s):
            log.warning("search view of %s did not show log id %s in %.1f s (the write is stored)", collection,
                        log_id, self.read_your_writes_s)

    async def _view(self, collection: str) -> CollectionView:
        view = self.follower.views.get(collection)
        if view is not None:
            return view
        if not self.follower.ready:
            raise StoreUnavailable("search views are still loading from the store; retry in a moment")
        view = await self.follower.sync(collection)  # made a moment ago through another router?
        if view is None:
            raise UnknownCollection(f"collection {collection!r} holds no entries; index some first")
        return view

    async def meta(self, collection: str) -> Meta:
        return (await self._view(collection)).meta

    async def size(self, collection: str) -> int:
        return len(await self._view(collection))

    async def entry(self, collection: str, item_id: str) -> Entry | None:
        return (await self._view(collection)).entry(item_id)

    async def held(self, collection: str, item_id: str) -> tuple[Meta, Digest | None] | None:
        # The store, not the view: a view a moment behind another router's write would match bytes replaced since.
        return await self.store.held(collection, item_id)

    async def nearest(self, collection: str, vector: np.ndarray, k: int, phash: int | None) -> list[Hit]:
        view = await self._view(collection)
        return await asyncio.to_thread(view.nearest, vector, k, phash)

    async def duplicates(self, collection: str, phash: int, max_distance: int, limit: int) -> list[Hit]:
        view = await self._view(collection)
        return await asyncio.to_thread(view.duplicates, phash, max_distance, limit)

    def stale_ms(self) -> int:
        return self.follower.stale_ms()
