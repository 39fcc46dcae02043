"""The Inference servicer: what a node does with one admitted item.

The edge (``runtime/edge.py``, shared with the router) reads the streams, admits each item or
refuses it RESOURCE_EXHAUSTED, traces it, and turns a typed failure into the item's status. Here
an item is checked against the node's limits and policy, its feature got from ``cache.FeatureCache``
(the cache path: L1, L2, a near match, the single flight, the cross-node lock, the batcher), and a
Classify item's feature goes through the model's head. An item that names its image by digest and
carries none is answered from the caches alone, or told ``image_required``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import numpy as np
from opentelemetry import trace

from ringserve.contract import tensor
from ringserve.contract.errors import DeadlineExceeded, InvalidRequest, UnknownModel
from ringserve.contract.fingerprint import DIGEST_BYTES, INLINE_DIGEST_BYTES
from ringserve.contract.images import check_size
from ringserve.contract.status import Reply, code_of, source_name
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.runtime.edge import EXTRACT, Admission, ItemEdge, Method
from ringserve.server import keys
from ringserve.server.cache import FeatureCache, ModelSlot, Served
from ringserve.server.l1 import L1
from ringserve.server.l2 import L2, NoL2
from ringserve.server.metrics import Metrics
from ringserve.server.settings import NodeLimits, PolicyConfig

DEFAULT_TOP_K = 5


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
        who = f"node {node_id}"
        admission = Admission(who, limits.max_inflight, "back off and retry, or send to another node")
        super().__init__(who, "node", admission, tracer, forwards_trace=False,
                         on_internal=lambda kind: metrics.internal_errors.add(1, metrics.attrs(type=kind)))
        self.node_id = node_id
        self.slots = slots
        self.default_model = default_model
        self.cache = FeatureCache(node_id, l1, l2, limits.images, pool, metrics,
                                  perceptual_index=policy.writes_fingerprints,
                                  verify_min_psnr=policy.verify_min_psnr)
        self.limits = limits
        self.policy = policy
        self.metrics = metrics

    # ---- the service -----------------------------------------------------------------------

    async def answer(self, request: pb.ImageRequest, method: Method, deadline: float | None,
                     span: trace.Span | None) -> Reply:
        """One item; a node's deadline is the item's own ``timeout_ms`` (a router sets it from its caller's)."""
        work = self._extract(request) if method is EXTRACT else self._classify(request)
        if request.timeout_ms:  # a timer on this item's own task, not a second task per item as wait_for makes
            try:
                async with asyncio.timeout(request.timeout_ms / 1000) as deadline_timer:
                    reply = await work
            except TimeoutError:
                if not deadline_timer.expired():
                    raise  # not the deadline's: a failure of the node, answered INTERNAL
                raise DeadlineExceeded(f"the caller's deadline ({request.timeout_ms} ms) passed") from None
        else:
            reply = await work
        if span is not None:
            span.set_attribute("ringserve.node", self.node_id)
            span.set_attribute("ringserve.source", source_name(reply.provenance.source))
        return reply

    def answer_now(self, request: pb.ImageRequest, method: Method) -> Reply | None:
        """An Extract item whose feature is in L1, answered without waiting (most of a busy node's items, by
        image or by digest); None for anything else, or anything that might fail: ``answer`` does all of that."""
        if method is not EXTRACT or request.cache_policy.mode == pb.CACHE_MODE_BYPASS:
            return None
        slot = self.slots.get(request.model or self.default_model)
        if slot is None or request.cache_policy.max_distance > self.policy.max_radius:
            return None
        image = request.image
        if image:
            if len(image) > self.limits.images.max_bytes or len(image) >= INLINE_DIGEST_BYTES:
                return None  # refused, or hashed off the loop: not in this turn
            name, kind = keys.exact_digest(image), "exact"
        elif request.HasField("digest") and len(request.digest.blake3_128) == DIGEST_BYTES:
            if not self.policy.digest_lookups:
                return None
            name, kind = keys.named(request.digest.blake3_128, request.digest.size_bytes), "digest"
        else:
            return None
        served = self.cache.hit_now(slot, name, kind)
        return None if served is None else self._extract_reply(request, slot, served)

    def answered(self, method: Method, reply: Reply, seconds: float) -> None:
        if reply.status.code != 0:
            source = "none"
        else:
            source = "image_required" if reply.image_required else source_name(reply.provenance.source)
        self.metrics.requests.add(method.name, code_of(reply.status.code).name)
        self.metrics.latency.record(seconds, self.metrics.attrs(method=method.name, source=source))

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

    # ---- the two methods -------------------------------------------------------------------

    async def _extract(self, request: pb.ImageRequest) -> pb.ExtractReply:
        slot = self._slot(request.model)
        served = await self._feature(request, slot)
        if served is None:
            return pb.ExtractReply(request_id=request.request_id, status=pb.ItemStatus(code=0), image_required=True)
        return self._extract_reply(request, slot, served)

    def _extract_reply(self, request: pb.ImageRequest, slot: ModelSlot, served: Served) -> pb.ExtractReply:
        return pb.ExtractReply(
            request_id=request.request_id,
            status=pb.ItemStatus(code=0),
            feature=tensor.from_array(served.vector),
            provenance=self._provenance(slot, served),
        )

    async def _classify(self, request: pb.ImageRequest) -> pb.ClassifyReply:
        slot = self._slot(request.model)
        top_k = request.top_k or DEFAULT_TOP_K
        if top_k > self.limits.max_top_k:
            raise InvalidRequest(f"top_k {top_k} is over the limit of {self.limits.max_top_k}; ask for fewer classes")
        served = await self._feature(request, slot)
        if served is None:
            return pb.ClassifyReply(request_id=request.request_id, status=pb.ItemStatus(code=0), image_required=True)
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

    async def _feature(self, request: pb.ImageRequest, slot: ModelSlot) -> Served | None:
        """The item's feature; None (answered ``image_required``) for a digest-only item the caches cannot answer."""
        if not request.image and request.HasField("digest"):
            return await self._by_digest(request, slot)
        check_size(request.image, self.limits.images)  # before hashing: an oversize payload costs nothing
        mode, radius = self._policy(request)
        return await self.cache.get(slot, request.image, mode, radius)

    async def _by_digest(self, request: pb.ImageRequest, slot: ModelSlot) -> Served | None:
        """A digest-only item, from the caches alone by its exact key (hash and size): the node has no pixels, so
        a perceptual policy gets an exact lookup, and bypass (which reads no cache) or the switch off gets None."""
        digest = request.digest
        if len(digest.blake3_128) != DIGEST_BYTES:
            raise InvalidRequest(f"digest.blake3_128 has {len(digest.blake3_128)} bytes; it must be the "
                                 f"{DIGEST_BYTES}-byte BLAKE3-128 of the image's bytes, or send the image instead")
        mode, _ = self._policy(request)  # a radius over the limit is the caller's mistake either way
        if mode == pb.CACHE_MODE_BYPASS or not self.policy.digest_lookups:
            return None
        return await self.cache.find(slot, keys.named(digest.blake3_128, digest.size_bytes))

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
            verified=served.perceptual, verifier_score=served.verifier_score,
        )
