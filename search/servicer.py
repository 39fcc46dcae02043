"""The Search service: index, search, delete and describe collections (protos/ringserve/v1/search.proto).

Hosted by the router. An Index item's feature comes through the normal path
(``FeatureSource``, the router's own placement, so a cached image costs no model
run), its pHash from the same fingerprint as placement; then the index
(``index.py``) stores it durably, with the digest of the bytes it was made from,
and shows it to this router's searches before the item is answered. A re-run
names each image by its digest first: an id that already holds an entry of
exactly those bytes is answered from one store read, with no image sent.
Searches need a node only to compute a query image's feature.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
import numpy as np

from ringserve.contract import fingerprint
from ringserve.contract.arguments import InvalidArgument, check_collection, check_delete, check_id, check_search
from ringserve.contract.errors import InvalidRequest, ModelMismatch, ServiceError, UnknownId
from ringserve.contract.status import status_of
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import search_pb2 as spb
from ringserve.contract.v1 import search_pb2_grpc as spb_grpc
from ringserve.runtime.streams import ItemStreams
from ringserve.search.access import Access, Action, Caller, audit
from ringserve.search.config import SearchConfig
from ringserve.search.index import SearchIndex
from ringserve.search.store import Digest, Entry, Meta
from ringserve.search.view import Hit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Feature:
    vector: np.ndarray
    phash: int
    model: str
    model_version: str
    low_information: bool = False


class FeatureFailed(ServiceError):
    """The feature of an image could not be had; ``code`` and the message are the item's answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# (image bytes, model name or "") -> its feature; raises FeatureFailed.
FeatureSource = Callable[[bytes, str], Awaitable[Feature]]


class SearchServicer(spb_grpc.SearchServicer):
    def __init__(self, index: SearchIndex, features: FeatureSource, config: SearchConfig,
                 streams: ItemStreams, pool: Executor | None = None) -> None:
        """``pool`` digests large images off the event loop (None: asyncio's default executor)."""
        self.index = index
        self.features = features
        self.config = config
        self.streams = streams
        self.pool = pool
        self.access = Access(config.access)  # who may write and search

    # ---- Index -----------------------------------------------------------------------------

    async def Index(self, request_iterator, context) -> AsyncIterator[spb.IndexReply]:
        # A refused caller's items are each answered with the refusal, never read further. Not a stream abort:
        # ending the call while the caller still writes loses its status in gRPC's core (grpc/grpc#36066), and
        # the caller would see a retryable INTERNAL in place of the refusal.
        refusal: tuple[grpc.StatusCode, str] | None = None
        try:
            caller = self.access.check(context, Action.WRITE)
        except ServiceError as exc:
            refusal = status_of(exc)

        async def index(request: spb.IndexRequest) -> spb.IndexReply:
            if refusal is not None:
                return _failed(spb.IndexReply(request_id=request.request_id, id=request.id), *refusal)
            return await self._index(request, caller)

        async for reply in self.streams.serve(request_iterator, context, index, spb.IndexReply):
            yield reply

    async def _index(self, request: spb.IndexRequest, caller: Caller) -> spb.IndexReply:
        reply = spb.IndexReply(request_id=request.request_id, id=request.id)
        try:
            check_collection(request.collection)
            check_id(request.id)
            if not request.image and request.HasField("digest"):
                return await self._index_named(request, reply)
            # Digested here, from the bytes received: what an entry records is never the caller's word.
            digest = Digest(await fingerprint.digest_off_loop(request.image, self.pool), len(request.image))
            feature = await self.features(request.image, request.model)
            meta = Meta(feature.model, feature.model_version, int(feature.vector.shape[-1]))
            await self.index.add(request.collection, meta, [Entry(request.id, feature.phash, feature.vector,
                                                                  feature.low_information, digest)])
            audit.info("indexed %s in %s for %s", request.id, request.collection, caller)
        except ServiceError as exc:  # the caller's mistake, a node's answer, Redis away: the item's status
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                raise  # a failure of the service: the stream engine logs it and answers INTERNAL
            return _failed(reply, code, message)
        reply.model_version = feature.model_version
        reply.status.code = grpc.StatusCode.OK.value[0]
        return reply

    async def _index_named(self, request: spb.IndexRequest, reply: spb.IndexReply) -> spb.IndexReply:
        """A digest-only item (a re-run): OK, writing nothing, when the id already holds an entry made from exactly
        these bytes under the collection's model; else ``image_required`` (also with digest lookups off)."""
        named = request.digest
        if len(named.blake3_128) != fingerprint.DIGEST_BYTES:
            raise InvalidRequest(f"digest.blake3_128 has {len(named.blake3_128)} bytes; it must be the "
                                 f"{fingerprint.DIGEST_BYTES}-byte BLAKE3-128 of the image (or send the image)")
        held = await self.index.held(request.collection, request.id) if self.config.digest_lookups else None
        if (held is None or held[1] != Digest(named.blake3_128, named.size_bytes)
                or request.model not in ("", held[0].model)):
            reply.image_required = True
        else:
            reply.model_version = held[0].model_version
        reply.status.code = grpc.StatusCode.OK.value[0]
        return reply

    # ---- unary calls -------------------------------------------------------------------------

    async def Search(self, request: spb.SearchRequest, context) -> spb.SearchReply:
        return await self._unary(self._search(request), context, Action.READ)

    async def Delete(self, request: spb.DeleteRequest, context) -> spb.DeleteReply:
        return await self._unary(self._delete(request, context), context, Action.WRITE)

    async def DescribeCollection(self, request: spb.DescribeCollectionRequest, context) -> spb.CollectionInfo:
        return await self._unary(self._describe(request), context, Action.READ)

    async def _unary(self, work: Coroutine, context, action: Action):
        """The answer, if the caller may do ``action``; else, or on failure, the gRPC status that says what went
        wrong and what to do."""
        try:
            try:
                self.access.check(context, action)
            except ServiceError:
                work.close()  # never started
                raise
            return await work
        except ServiceError as exc:
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                raise  # a failure of the service: gRPC answers INTERNAL and it is logged
            await context.abort(code, message)

    async def _search(self, request: spb.SearchRequest) -> spb.SearchReply:
        wants_duplicates = request.HasField("max_distance")
        check_search(request.collection, request.k, request.max_distance if wants_duplicates else None)
        if request.k > self.config.max_k:
            raise InvalidArgument("k", f"k must be an integer from 0 to {self.config.max_k} (this router's "
                                       f"--search-max-k); got {request.k}")
        meta = await self.index.meta(request.collection)
        query = request.WhichOneof("query")
        if query == "id":
            held = await self.index.entry(request.collection, request.id)
            if held is None:
                raise UnknownId(f"collection {request.collection!r} holds no id {request.id!r}")
            vector, phash, low_information = held.feature, held.phash, held.low_information
        elif query == "image":
            feature = await self.features(request.image, request.model or meta.model)
            if feature.model_version != meta.model_version:
                raise ModelMismatch(
                    f"collection {request.collection!r} was indexed under model version {meta.model_version}; "
                    f"the nodes now serve {feature.model_version}: index it again (delete it with --all first)")
            vector, phash, low_information = feature.vector, feature.phash, feature.low_information
        else:
            raise InvalidRequest("give the query as an image or as an id of the collection")
        nearest = await self.index.nearest(request.collection, vector, request.k, phash)
        # A low-information query's pHash is noise: every "duplicate" it found would be an unrelated image.
        duplicates = (await self.index.duplicates(request.collection, phash, request.max_distance,
                                                  self.config.max_duplicates)
                      if wants_duplicates and not low_information else [])
        return spb.SearchReply(nearest=[_hit(h) for h in nearest], duplicates=[_hit(h) for h in duplicates],
                               model_version=meta.model_version, stale_ms=self.index.stale_ms(),
                               query_low_information=low_information)

    async def _delete(self, request: spb.DeleteRequest, context) -> spb.DeleteReply:
        check_delete(request.collection, list(request.ids), request.all)
        caller = self.access.caller(context)[0]
        if request.all:
            reply = spb.DeleteReply(deleted=await self.index.drop(request.collection))
            audit.info("dropped collection %s (%d entries) for %s", request.collection, reply.deleted, caller)
            return reply
        deleted, missing = await self.index.delete(request.collection, list(request.ids))
        audit.info("deleted %d ids of %s (%s) for %s", len(deleted), request.collection, ", ".join(deleted)[:200],
                   caller)
        return spb.DeleteReply(deleted=len(deleted), missing=missing)

    async def _describe(self, request: spb.DescribeCollectionRequest) -> spb.CollectionInfo:
        check_collection(request.collection)
        meta = await self.index.meta(request.collection)
        return spb.CollectionInfo(collection=request.collection, model=meta.model, model_version=meta.model_version,
                                  dim=meta.dim, entries=await self.index.size(request.collection),
                                  stale_ms=self.index.stale_ms())


def _failed(reply: spb.IndexReply, code: grpc.StatusCode, message: str) -> spb.IndexReply:
    reply.status.CopyFrom(pb.ItemStatus(code=code.value[0], message=message))
    return reply


def _hit(h: Hit) -> spb.Hit:
    return spb.Hit(id=h.id, score=h.score, distance=max(h.distance, 0))
