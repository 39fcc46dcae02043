"""The client side of search: index images under your ids, search a collection, delete ids.

Reached through ``AsyncClient``/``Client`` (``index``, ``search``, ``delete``,
``describe_collection``), which talk to a router with the Search service
(``protos/ringserve/v1/search.proto``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ringserve.client import digests, errors, resend
from ringserve.client.config import ClientConfig
from ringserve.client.inputs import ImageInput, to_bytes
from ringserve.client.items import ItemCall
from ringserve.client.outbox import Outbox
from ringserve.contract import arguments, fingerprint
from ringserve.contract.v1 import search_pb2 as spb
from ringserve.contract.v1 import search_pb2_grpc as spb_grpc


@dataclass(frozen=True)
class Indexed:
    """An image stored under ``id``, with the model version of its feature."""

    id: str
    model_version: str


@dataclass(frozen=True)
class Hit:
    """An entry found: its id, its score (cosine similarity for nearest, 1 - distance/64 for
    near-duplicates) and the Hamming distance between the pHashes."""

    id: str
    score: float
    distance: int


@dataclass(frozen=True)
class SearchResult:
    nearest: list[Hit]
    duplicates: list[Hit]
    model_version: str
    # How far the router's view may be behind the store of record, in ms (0: following it).
    stale_ms: int
    # The query image has too little structure for near-duplicates to mean anything: none are listed.
    query_low_information: bool = False


@dataclass(frozen=True)
class CollectionInfo:
    collection: str
    model: str
    model_version: str
    dim: int
    entries: int
    stale_ms: int


def _hits(found: Sequence[spb.Hit]) -> list[Hit]:
    return [Hit(h.id, h.score, h.distance) for h in found]


class SearchCalls:
    """The Search service on one channel, with the client's window, retries and timeout."""

    def __init__(self, channel: grpc.aio.Channel, config: ClientConfig) -> None:
        self._stub = spb_grpc.SearchStub(channel)
        self._config = config
        # Its own: a router from before digest-first Index pauses digests for Index items, not for Extract's.
        self._digests = digests.DigestFirst(config.digest_first_min_bytes, config.target)

    async def index(self, ids: Sequence[str], images: Sequence[ImageInput], collection: str,
                    model: str = "") -> list[Indexed | errors.RingserveError]:
        """Store each image under its id; one result per item, in order (an error for an item that failed).

        An image of at least ``digest_first_min_bytes`` goes first as its digest alone: an id that already holds
        an entry of exactly those bytes (a re-run) is answered without them; otherwise the router asks for them
        and they follow on the same stream."""
        if len(ids) != len(images):
            raise errors.InvalidArgument(f"{len(ids)} ids for {len(images)} images: give one id per image",
                                         argument="ids")
        errors.checked(arguments.check_collection, collection)
        for item_id in ids:
            errors.checked(arguments.check_id, item_id)
        datas = [to_bytes(image) for image in images]
        named = [self._digests.wanted(len(d)) for d in datas]
        keys: list[bytes | None] = [None] * len(datas)
        if any(named):  # in a thread: a digest of 12 MP takes 0.6 ms
            keys = await asyncio.to_thread(lambda: [fingerprint.digest(d) if n else None
                                                    for d, n in zip(datas, named, strict=True)])
        requests = [spb.IndexRequest(request_id=str(i), collection=collection, id=item_id, model=model or "")
                    for i, item_id in enumerate(ids)]
        for request, key, data in zip(requests, keys, datas, strict=True):
            if key is not None:
                request.digest.blake3_128, request.digest.size_bytes = key, len(data)
        call = ItemCall(requests, {str(i): d for i, d in enumerate(datas)}, self._digests,
                        named={r.request_id for r in requests if r.HasField("digest")})

        async def stream(items: list[spb.IndexRequest], time_left: float | None) -> None:
            await self._index_stream(items, time_left, call)

        outcome = await resend.items(self._config, self._config.timeout_s, call.pending, stream)
        results = call.results(lambda rid, reason: outcome.error(ids[int(rid)], reason))
        return [Indexed(r.id, r.model_version) if isinstance(r, spb.IndexReply) else r for r in results]

    async def _index_stream(self, items: list[spb.IndexRequest], time_left: float | None, call: ItemCall) -> None:
        """One Index stream over ``items``: each goes as its digest or with its image (``ItemCall.outgoing``), and
        again with its image, ahead of the rest, when the router answers ``image_required``."""
        outbox = Outbox(items, call.outgoing, self._config.window)

        async def send() -> AsyncIterator[spb.IndexRequest]:
            async for request, image in outbox.items():
                if image:
                    request.image = image  # kept: from now on it goes with its image, on any re-send too
                yield request

        try:
            async for reply in self._stub.Index(send(), timeout=time_left, metadata=self._metadata()):
                if call.take(reply, outbox.answered(reply.request_id)):
                    outbox.again(call.pending[reply.request_id])
        finally:
            outbox.close()

    async def search(self, collection: str, image: ImageInput | None = None, id: str | None = None, k: int = 10,
                     max_distance: int | None = None, model: str = "") -> SearchResult:
        """The ``k`` nearest entries to an image or an indexed id, and with ``max_distance`` its near-duplicates.

        Raises:
            NotFound: no such collection, or no such id in it.
            InvalidArgument: a bad collection name, id, ``k`` or ``max_distance`` (checked before the call),
                or ``k`` over the router's limit; InvalidImage (one of them) for a bad query image.
            RingserveError: FAILED_PRECONDITION when the collection was indexed under another model version.
        """
        if (image is None) == (id is None):
            raise errors.InvalidArgument("give exactly one of image= and id=", argument="image")
        errors.checked(arguments.check_search, collection, k, max_distance, id)
        request = spb.SearchRequest(collection=collection, k=k, model=model or "")
        if image is not None:
            request.image = to_bytes(image)
        else:
            request.id = id
        if max_distance is not None:
            request.max_distance = max_distance
        reply = await self._unary(self._stub.Search, request)
        return SearchResult(_hits(reply.nearest), _hits(reply.duplicates), reply.model_version, reply.stale_ms,
                            reply.query_low_information)

    async def delete(self, collection: str, ids: Sequence[str] = (), everything: bool = False) -> tuple[int, list[str]]:
        """Remove ids (or, with ``everything``, the whole collection); (how many went, ids that were not there).

        Raises:
            InvalidArgument: a bad collection name or id, or ids given with ``everything``.
        """
        errors.checked(arguments.check_delete, collection, list(ids), everything)
        reply = await self._unary(self._stub.Delete, spb.DeleteRequest(collection=collection, ids=list(ids),
                                                                      all=everything))
        return reply.deleted, list(reply.missing)

    async def describe(self, collection: str) -> CollectionInfo:
        errors.checked(arguments.check_collection, collection)
        r = await self._unary(self._stub.DescribeCollection, spb.DescribeCollectionRequest(collection=collection))
        return CollectionInfo(r.collection, r.model, r.model_version, r.dim, r.entries, r.stale_ms)

    async def _unary(self, method: Any, request: Any) -> Any:
        """One call under the call's deadline, sent again on UNAVAILABLE (a router restarting, a view loading)."""
        return await resend.unary(self._config, functools.partial(method, metadata=self._metadata()), request,
                                  self._config.timeout_s)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """The caller's bearer token, for a router that limits who may write or search (read at each call, so a
        rotated token file is used)."""
        token = self._config.bearer_token()
        return (("authorization", f"Bearer {token}"),) if token else ()
