"""The router's services: Inference (the same contract as a node) and Cluster.

An item's path: its placement key (the caller's pHash hint, or the pHash the
router computes off the event loop) -> the ring with bounded loads -> that
node's long-lived stream -> past the try's per-try bound (the node's recent
latency for this kind of item, ``latency.py``), a hedged try on the next node,
the first answer winning (``hedging.py``) -> on a broken link or UNAVAILABLE, the
next distinct node, then new rounds over the members as they are now, with
backoff, until the caller's deadline (``retry.py``) -> the reply, with the
caller's request id.
Every item gets exactly one reply: a node's answer, RESOURCE_EXHAUSTED when
every node it was offered to is full, or, when time runs out, DEADLINE_EXCEEDED
(or UNAVAILABLE after the router's retry budget) naming the nodes tried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import grpc
from opentelemetry import trace

from ringserve.contract import fingerprint, tracecontext
from ringserve.contract.images import ImageError, ImageLimits
from ringserve.contract.status import Reply, error_reply, source_name
from ringserve.contract.v1 import cluster_pb2 as cpb
from ringserve.contract.v1 import cluster_pb2_grpc as cpb_grpc
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.router.config import PlacementConfig
from ringserve.router.health import HealthTracker
from ringserve.router.hedging import HedgeBudget, HedgingConfig, Race, Try
from ringserve.router.kinds import Kind, RecentKeys, kind_of
from ringserve.router.latency import LatencyTracker
from ringserve.router.link import FramesUnsupported, LinkError
from ringserve.router.metrics import RouterMetrics
from ringserve.router.registry import Node, Registry
from ringserve.router.retry import Attempts, RetryConfig
from ringserve.runtime.edge import Admission, ItemEdge, Method
from ringserve.runtime.singleflight import Group

log = logging.getLogger(__name__)
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
# A reply's Provenance.source as the tier label of ``answered`` (once here, not per item).
TIERS = {value: source_name(value) for value in pb.Source.values()}


@dataclass(slots=True)
class _Item:
    """One item on its way to a node: what every try of it needs."""

    key: int
    kind: Kind
    method: Method
    request: pb.ImageRequest  # without its image, which travels beside it
    image: bytes
    deadline: float | None


class RouterServicer(ItemEdge):
    """Places every item on a node and answers it once; see the module docstring for the path."""

    def __init__(self, router_id: str, registry: Registry, config: PlacementConfig, retry: RetryConfig,
                 limits: ImageLimits, pool: Executor, metrics: RouterMetrics, tracer: trace.Tracer | None = None,
                 fingerprint_memo: int = 65_536, hedging: HedgingConfig = HedgingConfig()) -> None:
        who = f"router {router_id}"
        admission = Admission(who, config.max_inflight, "back off and retry",
                              on_refuse=lambda: metrics.errors.add(1, {"reason": "router_overloaded"}))
        super().__init__(who, "router", admission, tracer, forwards_trace=True,
                         on_internal=lambda kind: metrics.errors.add(1, {"reason": "internal", "type": kind}))
        # inputs
        self.router_id = router_id
        self.registry = registry
        self.config = config
        self.retry = retry
        self.limits = limits
        self.pool = pool
        self.metrics = metrics
        self.hedging = hedging
        # state
        self.latency = LatencyTracker(hedging)
        self.budget = HedgeBudget(hedging.budget_share, hedging.budget_burst)
        self.recent = RecentKeys(hedging.recent_keys)
        # A repeated image without a hint costs a digest here, not a decode.
        self.fingerprints = fingerprint.Memo(fingerprint_memo)
        # Where a caller's hinted item of a digest went: placement only, never a fingerprint (a caller's hint is
        # never stored, and the Search service stores what ``fingerprints`` says), so a separate memo.
        self.placements = fingerprint.Memo(fingerprint_memo)
        self._fingerprinting: Group[fingerprint.Fingerprint] = Group()
        self.fingerprinted = 0  # images digested, ever (the Search service's too)

    @property
    def health(self) -> HealthTracker:
        return self.registry.health

    def activity(self) -> int | None:
        return None if self.admission.inflight else self.admission.started + self.fingerprinted

    async def ListModels(self, request, context) -> pb.ListModelsReply:
        """Any serving node's answer: every node of a deployment serves the same models."""
        for node in self.registry.serving():
            try:
                return await pb_grpc.InferenceStub(node.link.channel).ListModels(request, timeout=5)
            except grpc.aio.AioRpcError as exc:
                log.warning("ListModels on %s failed: %s", node.name, exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "no serving node answered ListModels")

    # ---- one item's key -------------------------------------------------------------------

    async def key_of(self, request: pb.ImageRequest) -> int:
        """Placement key: the hint if given, else the pHash (remembered by digest), else (undecodable bytes) the digest.

        A digest-only item (no image) has no bytes to fingerprint: it goes where its image went if this router saw
        those bytes, else by its digest; the node answers it from L2 or with ``image_required``.
        """
        if request.HasField("phash_hint"):
            if request.HasField("digest"):  # where this digest's later items, sent without a hint, are to go
                self.placements.remember(request.digest.blake3_128, fingerprint.Fingerprint(request.phash_hint, 0))
            return request.phash_hint
        if not request.image and request.HasField("digest"):
            return self._digest_key(request.digest.blake3_128)
        return (await self.fingerprint_of(request.image)).phash

    def _digest_key(self, digest: bytes) -> int:
        """The key of bytes known only by their BLAKE3-128: where a hinted item of that digest went, else the pHash
        this router computed for those bytes, else one made of the digest."""
        found = self.placements.get(digest) or self.fingerprints.get(digest)  # both keyed by the BLAKE3-128
        return found.phash if found is not None else int.from_bytes(digest[:8], "big")

    async def fingerprint_of(self, data: bytes) -> fingerprint.Fingerprint:
        """The bytes' fingerprint, remembered by their digest; undecodable bytes get one made of the digest."""
        digest = await fingerprint.digest_off_loop(data, self.pool)
        self.fingerprinted += 1
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
        self.fingerprints.remember(digest, found)
        return found

    # ---- one item's trip ------------------------------------------------------------------

    async def answer(self, request: pb.ImageRequest, method: Method, deadline: float | None,
                     span: trace.Span | None) -> Reply:
        """Place one admitted item and answer it: every caller's item, and the Search service's images."""
        caller_id = request.request_id  # the links write their own ids into the request
        hinted = request.HasField("phash_hint")
        try:
            key = await self.key_of(request)
            reply = await self._forward(request, key, method, deadline, span)
            reply.request_id = caller_id  # a node's reply carries its link's id: the caller's, here only
            if not hinted and reply.provenance.source != pb.SOURCE_UNSPECIFIED:
                # so a caller that places items itself sends its next items of these bytes straight to their node
                reply.provenance.placement_key = key
            return reply
        finally:
            request.request_id = caller_id

    async def _forward(self, request: pb.ImageRequest, key: int, method: Method, deadline: float | None,
                       span: trace.Span | None) -> Reply:
        kind = kind_of(method.rpc, bool(request.image), key in self.recent)
        item = _Item(key, kind, method, request, self._detach(request, key, span), deadline)
        attempts = Attempts(self.retry, deadline, reason=f"{self.who}: no serving node on the ring; check the "
                            "nodes' health")
        self.budget.earn()
        reply = None
        while reply is None:
            node = self.registry.pick(key, attempts.excluded, self.config.max_node_inflight)
            if node is None:
                reply = await self._wait(method, request, attempts)
            elif attempts.remaining() <= 0:
                reply = self._out_of_time(method, request, attempts, attempts.reason)
            else:
                reply = await self._race(item, node, attempts)
        if span is not None and attempts.tried:
            span.set_attribute("ringserve.node", attempts.tried[-1])
            span.set_attribute("ringserve.attempts", len(attempts.tried))
        return reply

    def _detach(self, request: pb.ImageRequest, key: int, span: trace.Span | None) -> bytes:
        """Ready the item for a node; its image, which leaves it to be written as it came (``contract.wire``).

        The item is the router's own (parsed from the caller's message): its fields are changed in place.
        """
        image = request.image
        request.ClearField("image")
        request.phash_hint = key
        request.trace_context.clear()
        if span is not None:
            tracecontext.inject(request.trace_context)
        return image

    async def _wait(self, method: Method, request: pb.ImageRequest, attempts: Attempts) -> Reply | None:
        """No node can take the item now: wait for room or for the next round; the reply when waiting is over."""
        if self.registry.busy(attempts.excluded, self.config.max_node_inflight):
            # Nodes that could take it are busy with this router's other items: wait here for room.
            if attempts.remaining() <= 0:
                return self._out_of_time(method, request, attempts, "every node was busy")
            await self.registry.wait_for_room(min(attempts.remaining(), self.retry.backoff_max_s))
            return None
        if attempts.shed is not None:  # every node still on the ring is full: shed the load, do not queue it
            return self._gave_up(attempts.shed, attempts, "overloaded")
        pause = attempts.next_round()
        if pause is None:
            return self._out_of_time(method, request, attempts, attempts.reason)
        await asyncio.sleep(pause)
        return None

    # ---- one round of tries: the first answer wins (``hedging.py``) -------------------------

    async def _race(self, item: _Item, node: Node, attempts: Attempts) -> Reply | None:
        """Send the item to ``node``, and on to the next node if that try is late or its node stalls: the first
        answer for the caller, or None to try the next node (every try failed)."""
        race = Race()
        try:
            self._send(item, node, attempts, race)
            while True:
                await race.wait(attempts.remaining())
                finished = race.finished()
                for done in finished:  # the first that gives the caller a reply wins; the rest are done with
                    reply = self._settle(item, done, attempts, race)
                    if reply is not None:
                        return reply
                if not race.tries:
                    return None
                if attempts.remaining() <= 0:
                    late = ", ".join(sorted(race.names()))
                    return self._out_of_time(item.method, item.request, attempts, f"{late} did not answer in time")
                self._hedge(item, race, attempts)
        finally:
            race.abandon()  # the losers, and every try when the caller went away

    def _send(self, item: _Item, node: Node, attempts: Attempts, race: Race, why: str = "") -> None:
        """Put one try of the item on ``node``'s link; ``why`` names a hedge ("late", "stalled")."""
        request = item.request
        if why:  # a second try: its own message, as the first may not be written yet
            request = pb.ImageRequest()
            request.CopyFrom(item.request)
            self.metrics.hedges.add(1, {"node": node.name, "reason": why})
        elif attempts.tried:
            self.metrics.retries.add(1, {"node": node.name})
        if item.deadline is not None:
            request.timeout_ms = max(1, int(attempts.remaining() * 1000))
        attempts.sent(node.name)
        self.metrics.placed.add(node.name)
        now = time.monotonic()
        try:
            answer = node.link.send(item.method.rpc, request, item.image)
        except LinkError as exc:  # settled with the others: the item goes elsewhere
            answer = asyncio.get_running_loop().create_future()
            answer.set_exception(exc)
        bound = self.latency.bound(node.latency, item.kind, now) if self.hedging.enabled else math.inf
        race.add(Try(node, answer, node.link.stall_signal, now, now + bound, why=why))

    def _settle(self, item: _Item, done: Try, attempts: Attempts, race: Race) -> Reply | None:
        """A try that finished: the reply for the caller, or None when its node could not take the item."""
        node = done.node
        try:
            reply = done.answer.result()
        except FramesUnsupported:  # the same node again, one item per message (``NodeLink.send``)
            return None
        except (LinkError, asyncio.CancelledError) as exc:
            reason = str(exc) or f"{node.name}: the try was cancelled"
            self.health.failure(node.health, reason)
            attempts.failed(node.name, reason)
            return None
        if reply.status.code == UNAVAILABLE:
            self.health.failure(node.health, reply.status.message)
            attempts.failed(node.name, reply.status.message)
            return None
        self.health.success(node.health)
        if reply.status.code == RESOURCE_EXHAUSTED:
            # offered to as many nodes as it may be, and no other try out: the caller hears it
            shed = attempts.shed_by(node.name, reply)
            return self._gave_up(reply, attempts, "overloaded") if shed and not race.tries else None
        if reply.status.code == 0:
            self._learn(item, done, reply)
        return reply

    def _learn(self, item: _Item, done: Try, reply: Reply) -> None:
        """What an answer teaches: its node's latency for its kind, that its key is answered, and who won."""
        source = reply.provenance.source
        self.latency.observe(done.node.latency, item.kind.rpc, item.kind.image, source, time.monotonic() - done.sent)
        tier = TIERS.get(source) or str(source)  # a source a newer node knows and this router does not
        self.metrics.answered.add(done.node.name, tier, reply.provenance.model_version)
        if source != pb.SOURCE_UNSPECIFIED:
            self.recent.add(item.key)
        if done.why:
            self.metrics.hedges_won.add(1, {"node": done.node.name, "reason": done.why})

    def _hedge(self, item: _Item, race: Race, attempts: Attempts) -> None:
        """Act on tries whose bound passed: a silent node is stalled (its items move, free); a late try on a node
        that answers others is hedged if the budget allows."""
        late, now, grace = [], time.monotonic(), self.hedging.stall_grace_s
        for t in race.late(now):
            if t.node.link.heard_at < t.sent:  # not a word from the node since this try went out
                # stalled once the router has listened on time (``NodeLink.suspect``): that wakes every item
                # on it, and each moves as this one does below; heard by then, the try is looked at again
                t.node.link.suspect(t.sent, grace)
                t.late_at = now + 2 * grace
                continue
            t.handled = True
            late.append(t)
        for t in race.stalled():
            t.moved = t.handled = True
            self._hedge_to_next(item, race, attempts, "stalled")
        for t in late:
            if not t.moved and self._hedge_to_next(item, race, attempts, "late", budget=True) is False:
                self.metrics.hedges_denied.add(1, {"node": t.node.name})

    def _hedge_to_next(self, item: _Item, race: Race, attempts: Attempts, why: str, budget: bool = False) -> bool | None:
        """Send a try to the next node with room; False when the budget refused it, None when no node could
        take it (the tries out keep their chance)."""
        node = self.registry.pick(item.key, {*attempts.excluded, *race.names()}, self.config.max_node_inflight)
        if node is None:
            return None
        if budget and not self.budget.take():
            return False
        self._send(item, node, attempts, race, why)
        return True

    def _gave_up(self, reply: Reply, attempts: Attempts, why: str) -> Reply:
        """A node's own error reply, passed on with the nodes tried."""
        self.metrics.errors.add(1, {"reason": why})
        reply.status.message = f"{reply.status.message} ({attempts.describe()})"
        return reply

    def _out_of_time(self, method: Method, request: pb.ImageRequest, attempts: Attempts, reason: str) -> Reply:
        """No node took the item before the caller's deadline, or within the retry budget when it set none."""
        if attempts.deadline is not None:
            self.metrics.errors.add(1, {"reason": "deadline"})
            return error_reply(method.reply, request, grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"{self.who}: the caller's deadline passed before a node answered "
                               f"({attempts.describe()}); last: {reason}")
        self.metrics.errors.add(1, {"reason": "no_node"})
        return error_reply(method.reply, request, grpc.StatusCode.UNAVAILABLE,
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
        answered = [cpb.Answered(node=node, tier=tier, model_version=version, items=count)
                    for (node, tier, version), count in sorted(r.metrics.answered.counts.items())]
        return cpb.MembersReply(members=members, router=r.router_id, load_factor=r.registry.ring.load_factor,
                                min_load=r.registry.ring.min_load, spill=r.registry.ring.spill.value,
                                answered=answered)

    async def Owner(self, request, context) -> cpb.OwnerReply:
        r = self.router
        if request.WhichOneof("key") == "phash":
            key = request.phash
        elif request.WhichOneof("key") == "image":
            key = await r.key_of(pb.ImageRequest(image=request.image))
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give an image or a phash")
        ring = r.registry.ring
        placed = r.registry.pick(key, (), r.config.max_node_inflight)
        return cpb.OwnerReply(phash=key, owner=ring.owner(key) or "", order=list(ring.walk(key)),
                              placed=placed.name if placed is not None else "")
