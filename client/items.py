"""One call's items: each one's request and image, the form it travels in, and its one answer.

An item named by its digest (``digests``) travels without its image until the server answers
``image_required`` (or, a server from before digest lookups, refuses it as an empty image); from then
on it carries the image, on the same stream and on any re-send. Every item gets exactly one answer:
its first reply that is neither UNAVAILABLE (the item stays pending, for a later try) nor a request for
its image, or the call's error for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from ringserve.client import errors
from ringserve.client.digests import DigestFirst
from ringserve.contract.status import code_of
from ringserve.contract.v1 import inference_pb2 as pb


@dataclass
class ItemCall:
    """The state of one call of ``Extract``/``Classify`` over many items, across its streams and re-sends."""

    requests: list[pb.ImageRequest]
    images: dict[str, bytes]  # request id -> image bytes
    digests: DigestFirst
    # Request ids of the items that travel digest-only (their request names their digest).
    named: set[str] = field(default_factory=set)
    # Of those, the ones named because the client sent their bytes before: they go digest-only while digests are
    # taken at all, whatever the recent hit ratio says (``DigestFirst.paying``).
    known: set[str] = field(default_factory=set)
    # Whether the call sends routing hints: an item sent digest-only without one gets it before its image goes.
    hinted: bool = False
    # Whether its answers say what the cluster's caches hold (``DigestFirst`` counts them): not a bypass call's.
    counted: bool = True
    # Request id -> request, for every item without its final answer yet.
    pending: dict[str, pb.ImageRequest] = field(init=False)
    # Items the server answered ``image_required``: their miss is counted then, not again at their final answer.
    asked: set[str] = field(default_factory=set)
    done: dict[str, Any] = field(default_factory=dict)
    # The server's last word on each item it could not take (UNAVAILABLE).
    unavailable: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pending = {r.request_id: r for r in self.requests}

    def digest_only(self, request_id: str) -> bool:
        """Whether the item goes digest-only if it leaves now: named, digests taken, and known or paying."""
        return (request_id in self.named and self.digests.taken
                and (request_id in self.known or self.digests.paying))

    def outgoing(self, request: pb.ImageRequest) -> tuple[bytes, bool]:
        """What goes as ``request``'s image now, and whether it goes digest-only (then the image is empty)."""
        rid = request.request_id
        if self.digest_only(rid):
            return b"", True
        return self.images[rid], False

    def take(self, reply: Any, named: bool) -> bool:
        """Record one reply (``named``: its item went digest-only); True when the item must go again at once,
        with its image, on the same stream."""
        rid = reply.request_id
        if rid not in self.pending:
            return False  # answered already: never hand a caller two answers for one item
        code = code_of(reply.status.code)
        if code == grpc.StatusCode.UNAVAILABLE:
            self.unavailable[rid] = reply.status.message
            return False  # stays pending: re-sent on the next try, in the form it has now
        asked = code == grpc.StatusCode.OK and reply.image_required
        if named and (asked or code == grpc.StatusCode.INVALID_ARGUMENT):
            # A miss, or a refusal of the digest-only form (the image's own answer is what counts).
            if asked:
                self.asked.add(rid)
            else:
                self.digests.refused(reply.status.message)
            self.named.discard(rid)
            return True
        del self.pending[rid]
        if asked:  # asked for the image of an item that carried it: no answer
            self.done[rid] = errors.ServerError("the server asked for the image of an item that carried it", rid)
        else:
            self.done[rid] = reply if code == grpc.StatusCode.OK else errors.from_status(code, reply.status.message, rid)
        return False

    def results(self, error_of: Any) -> list[Any]:
        """Every item's answer in the caller's order; ``error_of(request_id, reason)`` for those still pending."""
        for rid in self.pending:
            self.done[rid] = error_of(rid, self.unavailable.get(rid))
        return [self.done[r.request_id] for r in self.requests]
