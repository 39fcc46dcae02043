"""Digest-first: name an image by the digest of its bytes, and send the bytes only when the server asks.

A hit then costs a 16-byte digest and one small reply instead of the whole image on every hop (as a
content-addressed store's client asks which blobs are missing before it uploads); a miss costs one
round trip more on the same stream (the reply says ``image_required``, then the image goes). It pays where an
image is much bigger than a message, so it is chosen by size (``ClientConfig.digest_first_min_bytes``), and
only while it pays: a client whose images are mostly new (a first run over a folder, a stream of fresh uploads)
would pay the extra round trip on nearly every item and spare almost no bytes. So the client watches the
answers to its images of that size, whichever way they went (a hit by digest; an image sent with its bytes and
answered from L1 or L2 by its exact key, which a digest would have found too), and while fewer than
``digest_first_min_hit_ratio`` of the last ``RECENT`` were such hits it sends their bytes at once; it needs no
probes to notice the hits coming back, since the answers to bytes say it as well. Bytes the client has sent
before (their digest is in its memo of hints, so with hints on) still go digest-first whatever the ratio: a
second pass over the images of a first pass that all missed is all hits. A bypass call's answers say nothing of
the cache and are not counted.

A server from before digest lookups refuses such an item as an empty image: the client then sends that item,
and every later one for a while (``PAUSE_S``), with its image; then it tries digests again, since the refusal may
have come from an old node in the middle of a roll.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ringserve.contract.images import BAD_IMAGE
from ringserve.contract.v1 import inference_pb2 as pb

log = logging.getLogger("ringserve.client")
# How long a refusal stops digest-first: longer than a roll of a few nodes, short enough that a client that
# met one old node during a roll sends digests again soon after it.
PAUSE_S = 300.0
# The answers the hit ratio is taken over (the images of at least ``min_bytes``), and how many must have come
# before it is trusted (until then digests go): enough that a cold start's first misses do not decide alone.
RECENT = 64
TRUSTED_AFTER = 16
# What counts as a hit a digest would have had: an exact answer from a cache tier.
_CACHED = (pb.SOURCE_L1, pb.SOURCE_L2)


class DigestFirst:
    """Which of a client's images go digest-first: those of at least ``min_bytes``, unless the target refused a
    digest in the last ``PAUSE_S`` seconds, or fewer than ``min_hit_ratio`` of the recent answers to such images
    were hits a digest would have had. One per client (one target)."""

    def __init__(self, min_bytes: int | None, target: str, clock: Callable[[], float] = time.monotonic,
                 min_hit_ratio: float = 0.0) -> None:
        """
        Args:
            min_bytes: the smallest image that goes digest-first; None: none does.
            target: the server, for log lines.
            clock: seconds, for the pause after a refusal.
            min_hit_ratio: the share of recent answers (``RECENT``) that must be cache hits for digests to go;
                0 keeps them going whatever the answers (a caller that records none, such as Index).
        """
        self.min_bytes = min_bytes
        self.target = target
        self.min_hit_ratio = min_hit_ratio
        self._clock = clock
        # When the last refusal's pause ends, on ``clock``.
        self._paused_until = float("-inf")
        # The last RECENT answers to images of min_bytes or more: whether each was a cache hit; and how many were.
        self._recent: deque[bool] = deque(maxlen=RECENT)
        self._hits = 0

    @property
    def taken(self) -> bool:
        """Whether digests may go now: configured, and no refusal in the last ``PAUSE_S`` seconds."""
        return self.min_bytes is not None and self._clock() >= self._paused_until

    @property
    def paying(self) -> bool:
        """Whether the recent answers had hits enough for digests to pay (or too few answers yet to say)."""
        seen = len(self._recent)
        return seen < TRUSTED_AFTER or self._hits >= self.min_hit_ratio * seen

    def answered(self, size: int, reply: Any) -> None:
        """The final answer to an image of ``size`` bytes, sent either way: counted toward the hit ratio when the
        image is of digest-first size and the answer is a feature (a failed item says nothing about the cache)."""
        if reply.status.code == 0 and not reply.image_required:
            self._record(size, reply.provenance.source in _CACHED and not reply.provenance.perceptual)

    def missed(self, size: int) -> None:
        """An image of ``size`` bytes sent digest-only was answered ``image_required``: a miss, known at once (its
        final answer, once its bytes have gone, is not to be counted again)."""
        self._record(size, False)

    def _record(self, size: int, hit: bool) -> None:
        if self.min_bytes is None or size < self.min_bytes:
            return
        if len(self._recent) == RECENT:
            self._hits -= self._recent[0]
        self._recent.append(hit)
        self._hits += hit

    def eligible(self, size: int) -> bool:
        """Whether an image of ``size`` bytes may go digest-first: big enough, and digests taken now."""
        return self.min_bytes is not None and size >= self.min_bytes and self.taken

    def wanted(self, size: int) -> bool:
        """Whether an image of ``size`` bytes goes digest-first, not knowing more of it: eligible, and paying."""
        return self.eligible(size) and self.paying

    def naming(self, size: int, may_know: bool) -> bool | None:
        """How an image of ``size`` bytes is named as its call begins: True, by its digest (eligible, and paying);
        None, by its digest only if the client sent these bytes before (eligible, not paying, and ``may_know``:
        the client keeps a memo of what it sent); False, with its bytes."""
        if not self.eligible(size):
            return False
        return True if self.paying else (None if may_know else False)

    def refused(self, message: str) -> None:
        """A digest-only item was answered INVALID_ARGUMENT with ``message``; about its (absent) image, the target
        knows no digests: send images for ``PAUSE_S`` seconds, and say so once per pause."""
        if self.taken and message.startswith(BAD_IMAGE):
            self._paused_until = self._clock() + PAUSE_S
            log.warning("%s refused an image named by its digest (%r): a server from before digest-first lookups; "
                        "this client sends every image with its bytes for the next %.0f s", self.target, message,
                        PAUSE_S)


def name(request: pb.ImageRequest, digest: bytes, size: int) -> None:
    """Set ``request``'s digest (``ImageRequest.digest``): BLAKE3-128 of the image's bytes and their length."""
    request.digest.blake3_128 = digest
    request.digest.size_bytes = size
