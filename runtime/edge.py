"""The Inference service's edge, written once for node and router.

``Extract``, ``Classify`` and their ``Frames`` forms differ only in the reply types and the
method's name; each hands its stream to ``ItemStreams`` with ``item`` as the handler of one
item. ``item`` is the same for node and router: admit the item or refuse it RESOURCE_EXHAUSTED,
open a span when something listens (or when there is a caller's trace to carry on), ask the
servicer's ``answer``, and turn whatever it raises into the item's status (``contract.status``).
A servicer that is an ``ItemEdge`` answers one admitted item in ``answer`` and nothing else.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context

from ringserve.contract import tracecontext
from ringserve.contract.errors import CallerError
from ringserve.contract.status import Reply, error_reply, status_of
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.runtime.streams import ItemStreams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """One of the service's two item methods."""

    name: str  # "extract" or "classify": metrics, spans, logs
    rpc: str  # "Extract" or "Classify": the gRPC method a router sends the item on
    reply: type[Reply]
    frame: type[Any]


EXTRACT = Method("extract", "Extract", pb.ExtractReply, pb.ExtractFrame)
CLASSIFY = Method("classify", "Classify", pb.ClassifyReply, pb.ClassifyFrame)


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline on the monotonic clock, or None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class Admission:
    """How many items a server holds at once, and has ever admitted: counted here alone."""

    def __init__(self, who: str, limit: int, advice: str, on_refuse: Callable[[], None] | None = None) -> None:
        self.who = who
        self.limit = limit
        self.advice = advice  # what a refused caller should do
        self._on_refuse = on_refuse or (lambda: None)  # a metric
        self.inflight = 0
        self.started = 0  # items admitted, ever: what tells a quiet server from a busy one

    def enter(self) -> str | None:
        """Admit an item (None), or say why it cannot be admitted now; an admitted item must ``leave``."""
        if self.inflight < self.limit:
            self.inflight += 1
            self.started += 1
            return None
        self._on_refuse()
        return f"{self.who} has {self.inflight} items in flight (limit {self.limit}); {self.advice}"

    @property
    def full(self) -> bool:
        return self.inflight >= self.limit

    def leave(self) -> None:
        self.inflight -= 1


class ItemEdge(pb_grpc.InferenceServicer):
    """The four item streams over ``item``; a subclass answers one admitted item in ``answer``.

    Args:
        who: the server as messages name it ("node n0", "router r0").
        role: the first word of its spans' names ("node", "router").
        admission: the server's in-flight limit.
        tracer: where spans go; a no-op tracer builds none (about 5 microseconds an item saved).
        forwards_trace: a router carries the caller's trace on to a node even when it records none.
        on_internal: told the exception type of every item answered INTERNAL (a metric).
    """

    def __init__(self, who: str, role: str, admission: Admission, tracer: trace.Tracer | None,
                 forwards_trace: bool, on_internal: Callable[[str], None]) -> None:
        self.who = who
        self.role = role
        self.admission = admission
        self.tracer = tracer or trace.NoOpTracer()
        self.tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self.forwards_trace = forwards_trace
        self._on_internal = on_internal
        self.streams = ItemStreams(who, on_error=on_internal)

    async def answer(self, request: pb.ImageRequest, method: Method, deadline: float | None,
                     span: trace.Span | None) -> Reply:
        """Answer one admitted item; raise a ``ServiceError`` (or anything, a bug) to fail it alone."""
        raise NotImplementedError

    def answer_now(self, request: pb.ImageRequest, method: Method) -> Reply | None:
        """The item's reply when it can be had without waiting (a node's L1 hit), else None; must not raise."""
        return None

    def answered(self, method: Method, reply: Reply, seconds: float) -> None:
        """Told of every item's reply, refusals included, with the seconds it took (metrics)."""

    def activity(self) -> int | None:
        """None while items are in flight, else a count that grows with work: how a quiet server is told."""
        return None if self.admission.inflight else self.admission.started

    async def drain(self, timeout_s: float) -> None:
        """Stop reading new items on every stream, and wait for the admitted ones to be answered."""
        await self.streams.drain(timeout_s)

    async def item(self, request: pb.ImageRequest, method: Method, parent: Context | None = None,
                   deadline: float | None = None) -> Reply:
        """One item of ``method``, answered once: never raises for the item's own failure (that is its status).

        ``deadline`` is the call's; an item that carries its own (``timeout_ms``: a sender that multiplexes many
        calls on one stream) ends at the earlier of the two.
        """
        started = time.perf_counter()
        if request.timeout_ms:
            own = time.monotonic() + request.timeout_ms / 1000
            deadline = own if deadline is None else min(deadline, own)
        refusal = self.admission.enter()
        if refusal is not None:
            reply = error_reply(method.reply, request, grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        else:
            try:
                if self.tracing or (self.forwards_trace and parent is not None):
                    reply = await self._traced(request, method, parent, deadline)
                else:  # nothing listens and nothing to carry on: build no span, and no frame for one
                    reply = await self.answer(request, method, deadline, None)
            except Exception as exc:  # every failure becomes the item's status; INTERNAL ones are logged
                reply = self._failed(request, method, exc)
            finally:
                self.admission.leave()
        self.answered(method, reply, time.perf_counter() - started)
        return reply

    def item_now(self, request: pb.ImageRequest, method: Method) -> Reply | None:
        """``item``'s reply when ``answer_now`` has it: in the turn that read the item, with no task of its own
        (a task and its scheduling are most of what an L1 hit costs a node); None, and ``item`` answers it."""
        if self.tracing or self.admission.full:
            return None
        started = time.perf_counter()
        self.admission.enter()
        try:
            reply = self.answer_now(request, method)
        finally:
            self.admission.leave()
        if reply is not None:
            self.answered(method, reply, time.perf_counter() - started)
        return reply

    async def _traced(self, request: pb.ImageRequest, method: Method, parent: Context | None,
                      deadline: float | None) -> Reply:
        # An item multiplexed by a router carries its own trace context; a direct call's is the call's.
        if self.tracing and request.trace_context:
            parent = tracecontext.extract(request.trace_context)
        with self.tracer.start_as_current_span(f"{self.role}.{method.name}", context=parent) as span:
            return await self.answer(request, method, deadline, span)

    def _failed(self, request: pb.ImageRequest, method: Method, exc: Exception) -> Reply:
        """The item's reply for ``exc``: the caller's mistake as it is, the server's own condition or bug named."""
        code, message = status_of(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s: item %r failed", self.who, request.request_id, exc_info=exc)
            self._on_internal(type(exc).__name__)
            message = f"{self.who} failed on this item: {message}"
        elif not isinstance(exc, CallerError):
            message = f"{self.who}: {message}"
        return error_reply(method.reply, request, code, message)

    def _handler(self, method: Method, context: grpc.aio.ServicerContext) -> Any:
        return functools.partial(self.item, method=method, parent=tracecontext.extract_metadata(context),
                                 deadline=call_deadline(context))

    def _now(self, method: Method) -> Any:
        """``item_now`` for the stream engine, or None where the servicer never answers at once (the router): its
        items then cost no admission, timing and call of a fast path that cannot take them."""
        if type(self).answer_now is ItemEdge.answer_now:
            return None
        return functools.partial(self.item_now, method=method)

    async def Extract(self, request_iterator, context) -> AsyncIterator[pb.ExtractReply]:
        async for reply in self.streams.serve(request_iterator, context, self._handler(EXTRACT, context), EXTRACT.reply,
                                              self._now(EXTRACT)):
            yield reply

    async def Classify(self, request_iterator, context) -> AsyncIterator[pb.ClassifyReply]:
        async for reply in self.streams.serve(request_iterator, context, self._handler(CLASSIFY, context),
                                              CLASSIFY.reply, self._now(CLASSIFY)):
            yield reply

    async def ExtractFrames(self, request_iterator, context) -> AsyncIterator[pb.ExtractFrame]:
        async for frame in self.streams.serve_frames(request_iterator, context, self._handler(EXTRACT, context),
                                                     EXTRACT.reply, EXTRACT.frame, self._now(EXTRACT)):
            yield frame

    async def ClassifyFrames(self, request_iterator, context) -> AsyncIterator[pb.ClassifyFrame]:
        async for frame in self.streams.serve_frames(request_iterator, context, self._handler(CLASSIFY, context),
                                                     CLASSIFY.reply, CLASSIFY.frame, self._now(CLASSIFY)):
            yield frame
