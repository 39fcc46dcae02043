"""The Inference servicer: one item's path through the node, top to bottom.

keys -> L1 exact -> L2 exact -> decode and fingerprint -> L1/L2 perceptual (if the
policy allows) -> single flight -> cross-node lock -> batcher -> model; then the
result goes to L1 at once and to L2 in the background. Each step is its own
module; this file only composes them and maps typed failures to per-item
statuses. ``ItemStreams`` reads each stream and answers it concurrently: replies go
back in completion order, each with its request id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import grpc
import numpy as np
import torch
from opentelemetry import trace
from opentelemetry.context import Context

from ringserve.contract import codec, fingerprint, tracecontext
from ringserve.contract.errors import CallerError, InvalidRequest, UnknownModel
from ringserve.contract.images import check_size, decode
from ringserve.contract.status import Reply, code_of, error_reply, source_name
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.runtime.singleflight import Group
from ringserve.runtime.streams import ItemStreams
from ringserve.server.batcher import Batcher
from ringserve.server.errors import CacheMiss, CacheUnavailable, CorruptValue, Overloaded
from ringserve.server.keys import Namespace
from ringserve.server.l1 import L1
from ringserve.server.l2 import L2
from ringserve.server.metrics import Metrics
from ringserve.server.models import Model
from ringserve.server.settings import NodeLimits, PolicyConfig

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
# The wire's feature bytes are little-endian: on such a machine the vector's own bytes are sent as they are.
LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass
class ModelSlot:
    """A served model with its key namespace and its own batchers: the backbone's, and the head's for Classify."""

    model: Model
    batcher: Batcher[torch.Tensor, np.ndarray]
    head: Batcher[np.ndarray, np.ndarray]

    @property
    def ns(self) -> Namespace:
        return Namespace(self.model.name, self.model.version)


@dataclass(frozen=True)
class Prepared:
    tensor: torch.Tensor
    fingerprint: fingerprint.Fingerprint

    @property
    def phash(self) -> int | None:
        """The perceptual key, or None for a low-information image: such an image is never matched perceptually."""
        return None if self.fingerprint.low_information else self.fingerprint.phash


@dataclass(frozen=True)
class Served:
    """A feature and where it came from; ``digest`` and ``phash`` are the L1 keys it may be kept under."""

    vector: np.ndarray
    source: int
    # The exact digest of the bytes it was computed from, when these are the requester's bytes: a
    # perceptual hit is a neighbour's feature and must never sit under the requester's exact key.
    digest: str | None = None
    phash: int | None = None
    perceptual: bool = False
    distance: int = 0
    low_information: bool = False


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(
        self,
        node_id: str,
        slots: dict[str, ModelSlot],
        default_model: str,
        l1: L1,
        l2: L2 | None,
        limits: NodeLimits,
        policy: PolicyConfig,
        pool: Executor,
        metrics: Metrics,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.node_id = node_id
        self.slots = slots
        self.default_model = default_model
        self.l1 = l1
        self.l2 = l2
        self.limits = limits
        self.policy = policy
        self.pool = pool
        self.metrics = metrics
        self.tracer = tracer or trace.NoOpTracer()
        self._tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self.inflight = 0
        self.started = 0  # items admitted, ever: what tells a quiet node from a busy one
        self.streams = ItemStreams(f"node {node_id}", on_error=lambda kind: metrics.internal_errors.add(
            1, metrics.attrs(type=kind)))
        self._prepares: Group[Prepared] = Group()
        self._computes: Group[tuple[np.ndarray, int]] = Group()
        self._lock_token = f"{node_id}:{secrets.token_hex(4)}"

    # ---- the service -----------------------------------------------------------------------

    async def Extract(self, request_iterator, context) -> AsyncIterator[pb.ExtractReply]:
        handle = functools.partial(self._item, method="extract", reply_type=pb.ExtractReply, handle=self._extract,
                                   parent=tracecontext.extract_metadata(context))
        async for reply in self.streams.serve(request_iterator, context, handle, pb.ExtractReply):
            yield reply

    async def Classify(self, request_iterator, context) -> AsyncIterator[pb.ClassifyReply]:
        handle = functools.partial(self._item, method="classify", reply_type=pb.ClassifyReply, handle=self._classify,
                                   parent=tracecontext.extract_metadata(context))
        async for reply in self.streams.serve(request_iterator, context, handle, pb.ClassifyReply):
            yield reply

    async def ExtractFrames(self, request_iterator, context) -> AsyncIterator[pb.ExtractFrame]:
        handle = functools.partial(self._item, method="extract", reply_type=pb.ExtractReply, handle=self._extract,
                                   parent=tracecontext.extract_metadata(context))
        async for frame in self.streams.serve_frames(request_iterator, context, handle, pb.ExtractReply, pb.ExtractFrame):
            yield frame

    async def ClassifyFrames(self, request_iterator, context) -> AsyncIterator[pb.ClassifyFrame]:
        handle = functools.partial(self._item, method="classify", reply_type=pb.ClassifyReply, handle=self._classify,
                                   parent=tracecontext.extract_metadata(context))
        async for frame in self.streams.serve_frames(request_iterator, context, handle, pb.ClassifyReply,
                                                     pb.ClassifyFrame):
            yield frame

    async def ListModels(self, request, context) -> pb.ListModelsReply:
        infos = [
            pb.ModelInfo(
                name=s.model.name, version=s.model.version, feature_dim=s.model.feature_dim,
                dtype=s.model.feature_dtype.name, num_classes=s.model.num_classes,
                input_size=s.model.input_size, random_weights=s.model.random_weights,
            )
            for s in self.slots.values()
        ]
        return pb.ListModelsReply(models=infos, default_model=self.default_model, node=self.node_id)

    # ---- one item -------------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> None:
        """Stop reading new items on every stream, and wait for the admitted ones to be answered."""
        await self.streams.drain(timeout_s)

    async def _item(self, request: pb.ImageRequest, method: str, reply_type: type[Reply],
                    handle: Callable[[pb.ImageRequest], Awaitable[Reply]], parent: Context | None = None) -> Reply:
        started = time.perf_counter()
        source = "none"
        if self.inflight >= self.limits.max_inflight:
            reply = error_reply(reply_type, request, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"node {self.node_id} has {self.inflight} items in flight (limit "
                                f"{self.limits.max_inflight}); back off and retry, or send to another node")
        else:
            self.inflight += 1
            self.started += 1
            # An item multiplexed by a router carries its own trace context; a direct call's is the call's.
            if self._tracing and request.trace_context:
                parent = tracecontext.extract(request.trace_context)
            try:
                work = handle(request)
                if request.timeout_ms:
                    work = asyncio.wait_for(work, request.timeout_ms / 1000)
                if self._tracing:
                    with self.tracer.start_as_current_span(f"node.{method}", context=parent) as span:
                        reply = await work
                        span.set_attribute("ringserve.node", self.node_id)
                        span.set_attribute("ringserve.source", source_name(reply.provenance.source))
                else:  # no exporter listens: build no span (about 5 microseconds an item)
                    reply = await work
                source = source_name(reply.provenance.source)
            except CallerError as exc:
                reply = error_reply(reply_type, request, exc.code, exc.reason())
            except TimeoutError:
                reply = error_reply(reply_type, request, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"node {self.node_id}: the caller's deadline ({request.timeout_ms} ms) passed")
            except Overloaded as exc:
                reply = error_reply(reply_type, request, grpc.StatusCode.RESOURCE_EXHAUSTED, f"node {self.node_id}: {exc}")
            except Exception as exc:  # the node's own failure, never the caller's: INTERNAL, with the traceback logged
                log.exception("item %r failed", request.request_id)
                reply = error_reply(reply_type, request, grpc.StatusCode.INTERNAL,
                                    f"node {self.node_id} failed on this item: {type(exc).__name__}: {exc}")
            finally:
                self.inflight -= 1
        status = code_of(reply.status.code).name
        self.metrics.requests.add(method, status)
        self.metrics.latency.record(time.perf_counter() - started, self.metrics.attrs(method=method, source=source))
        return reply

    # ---- the two methods -------------------------------------------------------------------

    async def _extract(self, request: pb.ImageRequest) -> pb.ExtractReply:
        slot = self._slot(request.model)
        served = await self._feature(request, slot)
        vector = served.vector
        data = vector.tobytes() if LITTLE_ENDIAN else vector.astype(vector.dtype.newbyteorder("<")).tobytes()
        return pb.ExtractReply(
            request_id=request.request_id,
            status=pb.ItemStatus(code=0),
            feature=pb.Tensor(data=data, dtype=slot.model.feature_dtype.name, shape=(slot.model.feature_dim,)),
            provenance=self._provenance(slot, served),
        )

    async def _classify(self, request: pb.ImageRequest) -> pb.ClassifyReply:
        slot = self._slot(request.model)
        top_k = request.top_k or DEFAULT_TOP_K
        if top_k > self.limits.max_top_k:
            raise InvalidRequest(f"top_k {top_k} is over the limit of {self.limits.max_top_k}; ask for fewer classes")
        served = await self._feature(request, slot)
        scores = await slot.head.submit(served.vector)
        top = np.argsort(-scores)[: min(top_k, len(scores))]
        names = slot.model.class_names
        return pb.ClassifyReply(
            request_id=request.request_id,
            status=pb.ItemStatus(code=0),
            classes=[pb.ClassScore(index=int(i), name=names[i], score=float(scores[i])) for i in top],
            provenance=self._provenance(slot, served),
        )

    # ---- the request path ------------------------------------------------------------------

    async def _feature(self, request: pb.ImageRequest, slot: ModelSlot) -> Served:
        data = request.image
        check_size(data, self.limits.images)  # before hashing: an oversize payload costs nothing
        mode, radius = self._policy(request)
        if mode == pb.CACHE_MODE_BYPASS:
            # No cache is read or written, so neither key is needed: decode and run the model, nothing else.
            tensor = await asyncio.get_running_loop().run_in_executor(
                self.pool, lambda: slot.model.preprocess(decode(data, self.limits.images, slot.model.decode_side)))
            return Served(await slot.batcher.submit(tensor), pb.SOURCE_COMPUTED)
        ns = slot.ns
        digest = await self._digest(data)

        # 1. L1, these very bytes.
        try:
            vector = self.l1.get_exact(ns, digest)
            self._lookup("l1", "exact", "hit")
            return Served(vector, pb.SOURCE_L1)
        except CacheMiss:
            self._lookup("l1", "exact", "miss")

        # 2. L2, these very bytes.
        if self.l2 is not None:
            try:
                vector = await self._l2_value(slot, ns.exact(digest))
                self._lookup("l2", "exact", "hit")
                return self._remember(ns, Served(vector, pb.SOURCE_L2, digest=digest))
            except CacheMiss:
                self._lookup("l2", "exact", "miss")
            except CacheUnavailable:
                self._lookup("l2", "exact", "error")

        # 3. Decode and fingerprint: the hint in the request is never used here.
        prepared = await self._prepare(slot, digest, data)

        # 4. Another encoding of the same picture, where the policy allows it and the image has the
        # structure for its pHash to mean that.
        if mode == pb.CACHE_MODE_PERCEPTUAL and prepared.phash is not None:
            served = await self._near(slot, prepared.phash, radius)
            if served is not None:
                return served

        # 5. Compute once, however many ask at the same time.
        served, shared = await self._computes.do((ns, digest), lambda: self._compute(slot, digest, prepared))
        if shared:
            self.metrics.singleflight.add(1, self.metrics.attrs())
        return replace(served, low_information=prepared.fingerprint.low_information)

    async def _near(self, slot: ModelSlot, phash: int, radius: int) -> Served | None:
        ns = slot.ns
        try:
            hit = self.l1.get_near(ns, phash, radius)
            self._lookup("l1", "perceptual", "hit")
            return Served(hit.vector, pb.SOURCE_L1, perceptual=True, distance=hit.distance)
        except CacheMiss:
            self._lookup("l1", "perceptual", "miss")
        if self.l2 is None:
            return None
        try:
            for distance, found in await self.l2.near(ns, phash, radius):
                try:
                    vector = await self._l2_value(slot, ns.perceptual(found))
                except CorruptValue:
                    continue  # logged and counted; the next computation of it overwrites the value
                except CacheMiss:
                    self.l2.unindex(ns, found)  # indexed but expired: prune the index
                    continue
                self._lookup("l2", "perceptual", "hit")
                return self._remember(ns, Served(vector, pb.SOURCE_L2, phash=found, perceptual=True, distance=distance))
            self._lookup("l2", "perceptual", "miss")
        except CacheUnavailable:
            self._lookup("l2", "perceptual", "error")
        return None

    async def _compute(self, slot: ModelSlot, digest: str, prepared: Prepared) -> Served:
        """Inside the flight: the feature of these bytes, from L1, another node's computation, or the model.

        Its result is remembered in L1 before the flight ends, so a request arriving just after finds it.
        """
        ns = slot.ns
        # L1 again, inside the flight (groupcache's load does the same): a request that missed L1 just
        # before another finished computing these bytes enters a new flight after that one has ended,
        # and would otherwise compute them a second time.
        try:
            return Served(self.l1.get_exact(ns, digest), pb.SOURCE_L1)
        except CacheMiss:
            pass
        lock = None
        if self.l2 is not None:
            lock_key = ns.lock(digest)
            try:
                if await self.l2.try_lock(lock_key, self._lock_token):
                    lock = (lock_key, self._lock_token)
                else:  # another node computes these bytes right now: wait briefly for its result
                    vector = await self._wait_for_peer(slot, ns.exact(digest))
                    if vector is not None:
                        return self._remember(ns, Served(vector, pb.SOURCE_L2, digest=digest, phash=prepared.phash))
            except CacheUnavailable:
                pass  # no Redis, no cross-node flight: compute here
        try:
            vector = await slot.batcher.submit(prepared.tensor)
        except BaseException:
            if lock is not None and self.l2 is not None:
                self.l2.unlock_later(*lock)
            raise
        if self.l2 is not None:
            blob = codec.encode(vector, slot.model.version)
            if prepared.phash is None:  # low-information: kept under its exact key only
                self.l2.put([(ns.exact(digest), blob)])
            else:
                self.l2.put([(ns.exact(digest), blob), (ns.perceptual(prepared.phash), blob)])
                self.l2.index(ns, prepared.phash)
        if lock is not None and self.l2 is not None:
            self.l2.unlock_later(*lock)  # after the values: a waiting node polls for them
        return self._remember(ns, Served(vector, pb.SOURCE_COMPUTED, digest=digest, phash=prepared.phash))

    def _remember(self, ns: Namespace, served: Served) -> Served:
        """The one place L1 is written: under the keys ``served`` may be kept under."""
        self.l1.put(ns, served.digest, served.phash, served.vector)
        return served

    async def _wait_for_peer(self, slot: ModelSlot, key: str) -> np.ndarray | None:
        assert self.l2 is not None
        try:
            return self._decode(slot, await self.l2.wait_for(key))
        except CacheMiss:
            return None

    async def _l2_value(self, slot: ModelSlot, key: str) -> np.ndarray:
        assert self.l2 is not None
        return self._decode(slot, await self.l2.get(key))

    def _decode(self, slot: ModelSlot, blob: bytes) -> np.ndarray:
        try:
            vector = codec.decode(blob, slot.model.version)
        except codec.CodecError as exc:
            log.warning("corrupt value in L2 treated as a miss: %s", exc)
            self.metrics.l2_events.add(1, self.metrics.attrs(event="corrupt"))
            raise CorruptValue(str(exc)) from exc
        if vector.shape != (slot.model.feature_dim,) or vector.dtype != slot.model.feature_dtype:
            self.metrics.l2_events.add(1, self.metrics.attrs(event="corrupt"))
            raise CorruptValue(f"L2 value of shape {vector.shape} {vector.dtype} does not fit {slot.model.name}")
        return vector

    async def _digest(self, data: bytes) -> str:
        return (await fingerprint.digest_off_loop(data, self.pool)).hex()

    async def _prepare(self, slot: ModelSlot, digest: str, data: bytes) -> Prepared:
        def work() -> Prepared:
            model = slot.model
            # One decode for both: the model's input, and the pHash of its perceptual keys (the same
            # function as client and router, over a decode at least as large as theirs).
            image = decode(data, self.limits.images, at_least=model.decode_side)
            return Prepared(model.preprocess(image), fingerprint.of_image(image))

        loop = asyncio.get_running_loop()
        prepared, _ = await self._prepares.do((slot.model.name, digest), lambda: loop.run_in_executor(self.pool, work))
        return prepared

    # ---- helpers -----------------------------------------------------------------------------

    def _slot(self, name: str) -> ModelSlot:
        slot = self.slots.get(name or self.default_model)
        if slot is None:
            raise UnknownModel(f"model {name!r} is not served here; served: {sorted(self.slots)}")
        return slot

    def _policy(self, request: pb.ImageRequest) -> tuple[int, int]:
        policy = request.cache_policy
        mode = policy.mode
        if mode == pb.CACHE_MODE_UNSPECIFIED:
            mode = self.policy.default_mode.wire
        radius = policy.max_distance if policy.HasField("max_distance") else self.policy.default_radius
        if radius > self.policy.max_radius:
            raise InvalidRequest(f"perceptual radius {radius} is over this node's maximum of {self.policy.max_radius}; "
                                 f"ask for at most {self.policy.max_radius}")
        return mode, radius

    def _provenance(self, slot: ModelSlot, served: Served) -> pb.Provenance:
        return pb.Provenance(
            source=served.source, node=self.node_id, model=slot.model.name, model_version=slot.model.version,
            perceptual=served.perceptual, distance=served.distance, low_information=served.low_information,
        )

    def _lookup(self, tier: str, kind: str, result: str) -> None:
        self.metrics.lookups.add(tier, kind, result)
