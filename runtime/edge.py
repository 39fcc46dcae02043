"""The Inference service's four item streams, written once for node and router.

``Extract``, ``Classify`` and their ``Frames`` forms differ only in the reply types and the
method's name; each hands its stream to ``ItemStreams`` with one handler per item, told the
method, the caller's trace context and the caller's deadline. A servicer that is an ``ItemEdge``
answers one item in ``item`` and gets the four streams from here.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.context import Context

from ringserve.contract import tracecontext
from ringserve.contract.status import Reply
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.runtime.streams import ItemStreams


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


class ItemEdge(pb_grpc.InferenceServicer):
    """The four item streams over ``item``; a subclass sets ``streams`` and answers one item."""

    streams: ItemStreams

    async def item(self, request: pb.ImageRequest, method: Method, parent: Context | None,
                   deadline: float | None) -> Reply:
        """Answer one item of ``method``: never raises for the item's own failure (that is its status)."""
        raise NotImplementedError

    def _handler(self, method: Method, context: grpc.aio.ServicerContext) -> Any:
        return functools.partial(self.item, method=method, parent=tracecontext.extract_metadata(context),
                                 deadline=call_deadline(context))

    async def Extract(self, request_iterator, context) -> AsyncIterator[pb.ExtractReply]:
        async for reply in self.streams.serve(request_iterator, context, self._handler(EXTRACT, context), EXTRACT.reply):
            yield reply

    async def Classify(self, request_iterator, context) -> AsyncIterator[pb.ClassifyReply]:
        async for reply in self.streams.serve(request_iterator, context, self._handler(CLASSIFY, context),
                                              CLASSIFY.reply):
            yield reply

    async def ExtractFrames(self, request_iterator, context) -> AsyncIterator[pb.ExtractFrame]:
        async for frame in self.streams.serve_frames(request_iterator, context, self._handler(EXTRACT, context),
                                                     EXTRACT.reply, EXTRACT.frame):
            yield frame

    async def ClassifyFrames(self, request_iterator, context) -> AsyncIterator[pb.ClassifyFrame]:
        async for frame in self.streams.serve_frames(request_iterator, context, self._handler(CLASSIFY, context),
                                                     CLASSIFY.reply, CLASSIFY.frame):
            yield frame
