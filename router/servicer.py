"""The router's services: Inference (the same contract as a node) and Cluster.

An item's path: its placement key (the caller's pHash hint, or the pHash the
router computes off the event loop) -> the ring with bounded loads -> that
node's long-lived stream -> on a broken link or UNAVAILABLE, the next distinct
node, then new rounds over the members as they are now, with backoff, until the
caller's deadline (``retry.py``) -> the reply, with the caller's request id.
Every item gets exactly one reply: a node's answer, RESOURCE_EXHAUSTED when
every node it was offered to is full, or, when time runs out, DEADLINE_EXCEEDED
(or UNAVAILABLE after the router's retry budget) naming the nodes tried.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor

import grpc
from opentelemetry import trace
from opentelemetry.context import Context

from ringserve.contract import fingerprint, tracecontext
from ringserve.contract.images import ImageError, ImageLimits
from ringserve.contract.status import Reply, error_reply
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import cluster_pb2_grpc as cpb_grpc
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.router.config import PlacementConfig
from ringserve.router.health import HealthTracker
from ringserve.router.link import LinkError
from ringserve.router.metrics import RouterMetrics
from ringserve.router.placement import Placement
from ringserve.router.registry import Registry
from ringserve.router.retry import Attempts, RetryConfig
from ringserve.router.ring import Ring
from ringserve.runtime.edge import ItemEdge, Method
from ringserve.runtime.singleflight import Group
from ringserve.runtime.streams import ItemStreams

log = logging.getLogger(__name__)
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


class RouterServicer(ItemEdge):
    """Places every item on a node and answers it once; see the module docstring for the path."""

    def __init__(self, router_id: str, registry: Registry, ring: Ring, placement: Placement, config: PlacementConfig,
                 retry: RetryConfig, limits: ImageLimits, pool: Executor, metrics: RouterMetrics,
                 tracer: trace.Tracer | None = None, fingerprint_memo: int = 65_536) -> None:
        # inputs
        self.router_id = router_id
        self.registry = registry
        self.ring = ring
        self.placement = placement
        self.config = config
        self.retry = retry
        self.limits = limits
        self.pool = pool
        self.metrics = metrics
        self.tracer = tracer or trace.NoOpTracer()
        self._tracing = not isinstance(self.tracer, trace.NoOpTracer)
        # state
        # A repeated image without a hint costs a digest here, not a decode.
        self.fingerprints = fingerprint.Memo(fingerprint_memo)
        self._fingerprinting: Group[fingerprint.Fingerprint] = Group()
        self.streams = ItemStreams(f"router {router_id}", on_error=lambda kind: metrics.errors.add(
            1, {"reason": "internal", "type": kind}))
        self.inflight = 0
        self.started = 0  # items routed and images fingerprinted, ever: what tells a quiet router from a busy one

    @property
    def health(self) -> HealthTracker:
        return self.registry.health

    async def item(self, request: pb.ImageRequest, method: Method, parent: Context | None,
                   deadline: float | None) -> Reply:
        return await self.route(request, method.rpc, method.reply, parent=parent, deadline=deadline)

    async def ListModels(self, request, context) -> pb.ListModelsReply:
        """Any serving node's answer: every node of a deployment serves the same models."""
        for name in self.ring.members:
            node = self.registry.get(name)
            if node is None:
                continue
            try:
                return await pb_grpc.InferenceStub(node.link.channel).ListModels(request, timeout=5)
            except grpc.aio.AioRpcError as exc:
                log.warning("ListModels on %s failed: %s", name, exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "no serving node answered ListModels")

    async def drain(self, timeout_s: float) -> None:
        await self.streams.drain(timeout_s)

    # ---- one item -------------------------------------------------------------------------

    async def key_of(self, request: pb.ImageRequest) -> int:
        """Placement key: the hint if given, else the pHash (remembered by digest), else (undecodable bytes) the digest."""
        if request.HasField("phash_hint"):
            return request.phash_hint
        return (await self.fingerprint_of(request.image)).phash

    async def fingerprint_of(self, data: bytes) -> fingerprint.Fingerprint:
        """The bytes' fingerprint, remembered by their digest; undecodable bytes get one made of the digest."""
        digest = await fingerprint.digest_off_loop(data, self.pool)
        self.started += 1
        found = self.fingerprints.get(digest)
        if found is None:  # once per distinct bytes, however many items carry them at the same time
            found, _ = await self._fingerprinting.do(digest, lambda: self._fingerprint(data, digest))
        return found

    async def _fingerprint(self, data: bytes, digest: bytes) -> fingerprint.Fingerprint:
        try:
            found = await asyncio.get_running_loop().run_in_executor(self.pool, fingerprint.of_bytes, data, self.limits)
        except ImageError:
            # The node will say why the image is bad; any node can, so spread such items evenly.
            found = fingerprint.Fingerprint(int.from_bytes(digest[:8], "big"), structure=0)
        self.fingerprints.put(digest, found)
        return found

    def pick(self, key: int, exclude: set[str]) -> str | None:
        return self.placement.pick(key, self.registry.loads(), exclude)

    async def route(self, request: pb.ImageRequest, method: str, reply_type: type[Reply], parent: Context | None = None,
                    deadline: float | None = None) -> Reply:
        """Place one item and answer it: the handler of every caller's item, and of the Search service's images."""
        if self.inflight >= self.config.max_inflight:
            self.metrics.errors.add(1, {"reason": "router_overloaded"})
            return error_reply(reply_type, request, grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"router {self.router_id} has {self.inflight} items in flight; back off and retry")
        self.inflight += 1
        self.started += 1
        caller_id = request.request_id  # the links write their own ids into the request
        try:
            if self._tracing or parent is not None:  # a span to record, or the caller's trace to carry on
                with self.tracer.start_as_current_span(f"router.{method.lower()}", context=parent) as span:
                    reply = await self._forward(request, method, reply_type, span, deadline)
            else:  # nothing listens and nothing to carry: build no span
                reply = await self._forward(request, method, reply_type, None, deadline)
            reply.request_id = caller_id  # a node's reply carries its link's id: the caller's, here only
            return reply
        finally:
            request.request_id = caller_id
            self.inflight -= 1

    async def _forward(self, request: pb.ImageRequest, method: str, reply_type: type[Reply], span: trace.Span | None,
                       deadline: float | None) -> Reply:
        key = await self.key_of(request)
        # The item is the router's own (parsed from the caller's message): its fields are changed in
        # place, and the image leaves it to be written to the node as it came (``contract.wire``).
        image = request.image
        request.ClearField("image")
        request.phash_hint = key
        request.trace_context.clear()
        if span is not None:
            tracecontext.inject(request.trace_context)
        attempts = Attempts(self.retry, deadline)
        reason = f"router {self.router_id}: no serving node on the ring; check the nodes' health"
        shed = None  # the last RESOURCE_EXHAUSTED reply, if a node said so
        while True:
            full = self.registry.full(self.config.max_node_inflight)
            node = self.pick(key, attempts.excluded | full)
            if node is None and full - attempts.excluded:
                # Nodes that could take it are busy with this router's other items: wait here for room.
                if attempts.remaining() <= 0:
                    return self._out_of_time(reply_type, request, attempts, "every node was busy")
                await self.registry.wait_for_room(min(attempts.remaining(), self.retry.backoff_max_s))
                continue
            if node is None:
                if shed is not None:  # every node still on the ring is full: shed the load, do not queue it
                    return self._gave_up(shed, attempts, "overloaded")
                pause = attempts.next_round()
                if pause is None:
                    return self._out_of_time(reply_type, request, attempts, reason)
                await asyncio.sleep(pause)
                continue
            if attempts.remaining() <= 0:
                return self._out_of_time(reply_type, request, attempts, reason)
            if deadline is not None:
                request.timeout_ms = max(1, int(attempts.remaining() * 1000))
            if attempts.tried:
                self.metrics.retries.add(1, {"node": node})
            attempts.sent(node)
            entry = self.registry.get(node)
            if entry is None:  # left membership a moment ago; the ring follows at once
                attempts.failed(node)
                reason = f"{node} left the membership"
                continue
            self.metrics.placed.add(node)
            try:
                answer = entry.link.send(method, request, image)
                # A node that hangs (frozen, partitioned) must not hold the item past the caller's deadline.
                reply = await (answer if deadline is None else asyncio.wait_for(answer, attempts.remaining()))
            except TimeoutError:
                return self._out_of_time(reply_type, request, attempts, f"{node} did not answer in time")
            except LinkError as exc:
                self.health.failure(entry.health, str(exc))
                attempts.failed(node)
                reason = str(exc)
                continue
            if reply.status.code == UNAVAILABLE:
                self.health.failure(entry.health, reply.status.message)
                attempts.failed(node)
                reason = reply.status.message
                continue
            self.health.success(entry.health)
            if reply.status.code == RESOURCE_EXHAUSTED:
                attempts.failed(node)
                attempts.overloaded += 1
                shed = reply
                if attempts.overloaded >= self.retry.max_attempts:
                    return self._gave_up(shed, attempts, "overloaded")
                continue  # the next node under bounded loads may have room
            if span is not None:
                span.set_attribute("ringserve.node", node)
                span.set_attribute("ringserve.attempts", len(attempts.tried))
            return reply

    def _gave_up(self, reply: Reply, attempts: Attempts, why: str) -> Reply:
        """A node's own error reply, passed on with the nodes tried."""
        self.metrics.errors.add(1, {"reason": why})
        reply.status.message = f"{reply.status.message} ({attempts.describe()})"
        return reply

    def _out_of_time(self, reply_type: type[Reply], request: pb.ImageRequest, attempts: Attempts, reason: str) -> Reply:
        """No node took the item before the caller's deadline, or within the retry budget when it set none."""
        if attempts.deadline is not None:
            self.metrics.errors.add(1, {"reason": "deadline"})
            return error_reply(reply_type, request, grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"router {self.router_id}: the caller's deadline passed before a node answered "
                               f"({attempts.describe()}); last: {reason}")
        self.metrics.errors.add(1, {"reason": "no_node"})
        return error_reply(reply_type, request, grpc.StatusCode.UNAVAILABLE,
                           f"{reason} (no node answered within the router's retry budget of "
                           f"{self.retry.budget_s:g} s; {attempts.describe()})")


class ClusterServicer(cpb_grpc.ClusterServicer):
    def __init__(self, router: RouterServicer) -> None:
        self.router = router

    async def Members(self, request, context) -> cpb.MembersReply:
        r = self.router
        members = []
        for name, node in sorted(r.registry.nodes.items()):
            h, link = node.health, node.link
            if h.on_ring:
                state = cpb.MEMBER_STATE_SERVING
            elif h.ejected:
                state = cpb.MEMBER_STATE_EJECTED
            else:
                state = cpb.MEMBER_STATE_NOT_SERVING
            members.append(cpb.Member(name=name, address=h.member.address, weight=h.member.weight, state=state,
                                      inflight=link.inflight, placed=link.placed,
                                      ejections=h.ejections, reason="" if h.on_ring else h.reason))
        return cpb.MembersReply(members=members, router=r.router_id, load_factor=r.ring.load_factor)

    async def Owner(self, request, context) -> cpb.OwnerReply:
        r = self.router
        if request.WhichOneof("key") == "phash":
            key = request.phash
        elif request.WhichOneof("key") == "image":
            key = await r.key_of(pb.ImageRequest(image=request.image))
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give an image or a phash")
        return cpb.OwnerReply(phash=key, owner=r.ring.owner(key) or "", order=list(r.ring.walk(key)),
                              placed=r.pick(key, set()) or "")
