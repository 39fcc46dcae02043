"""The Inference servicer: the node's gRPC edge.

Each stream is read by ``ItemStreams``, which answers its items concurrently (replies go back in
completion order, each with its request id). An item is admitted (or refused RESOURCE_EXHAUSTED),
traced, checked against the node's limits and policy, and its feature got from ``cache.FeatureCache``
(the cache path: L1, L2, a near match, the single flight, the cross-node lock, the batcher); a
Classify item then goes through the model's head. Typed failures become the item's status here.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

import grpc
import numpy as np
from opentelemetry import trace
from opentelemetry.context import Context

from ringserve.contract import tracecontext
from ringserve.contract.errors import CallerError, InvalidRequest, UnknownModel
from ringserve.contract.images import check_size
from ringserve.contract.status import Reply, code_of, error_reply, source_name, status_of
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.runtime.edge import EXTRACT, ItemEdge, Method
from ringserve.runtime.streams import ItemStreams
from ringserve.server.cache import FeatureCache, ModelSlot, Served
from ringserve.server.l1 import L1
from ringserve.server.l2 import L2, NoL2
from ringserve.server.metrics import Metrics
from ringserve.server.settings import NodeLimits, PolicyConfig

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
# The wire's feature bytes are little-endian: on such a machine the vector's own bytes are sent as they are.
LITTLE_ENDIAN = sys.byteorder == "little"


class InferenceServicer(ItemEdge):
    def __init__(
        self,
        node_id: str,
        slots: dict[str, ModelSlot],
        default_model: str,
        l1: L1,
        l2: L2 | NoL2,
        limits: NodeLimits,
        policy: PolicyConfig,
        pool: Executor,
        metrics: Metrics,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.node_id = node_id
        self.slots = slots
        self.default_model = default_model
        self.cache = FeatureCache(node_id, l1, l2, limits.images, pool, metrics)
        self.limits = limits
        self.policy = policy
        self.metrics = metrics
        self.tracer = tracer or trace.NoOpTracer()
        self._tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self.inflight = 0
        self.started = 0  # items admitted, ever: what tells a quiet node from a busy one
        self.streams = ItemStreams(f"node {node_id}", on_error=lambda kind: metrics.internal_errors.add(
            1, metrics.attrs(type=kind)))

    # ---- the service -----------------------------------------------------------------------

    async def item(self, request: pb.ImageRequest, method: Method, parent: Context | None,
                   deadline: float | None) -> Reply:
        """One item; a node's deadline is the item's own ``timeout_ms`` (a router sets it from its caller's)."""
        handle = self._extract if method is EXTRACT else self._classify
        return await self._item(request, method.name, method.reply, handle, parent)

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
                reply = error_reply(reply_type, request, *status_of(exc))
            except TimeoutError:
                reply = error_reply(reply_type, request, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"node {self.node_id}: the caller's deadline ({request.timeout_ms} ms) passed")
            except Exception as exc:  # the node's own condition (Overloaded), or its failure: INTERNAL, logged
                code, message = status_of(exc)
                if code == grpc.StatusCode.INTERNAL:
                    log.exception("item %r failed", request.request_id)
                    message = f"node {self.node_id} failed on this item: {message}"
                else:
                    message = f"node {self.node_id}: {message}"
                reply = error_reply(reply_type, request, code, message)
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
        check_size(request.image, self.limits.images)  # before hashing: an oversize payload costs nothing
        mode, radius = self._policy(request)
        return await self.cache.get(slot, request.image, mode, radius)

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
