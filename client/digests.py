"""Digest-first: name an image by the digest of its bytes, and send the bytes only when the server asks.

A hit then costs a 16-byte digest and one small reply instead of the whole image on every hop (as a
content-addressed store's client asks which blobs are missing before it uploads); a miss costs one
round trip more on the same stream (the reply says ``image_required``, then the image goes). It pays where an
image is much bigger than a message, so it is chosen by size (``ClientConfig.digest_first_min_bytes``).
A server from before digest lookups refuses such an item as an empty image: the client then sends that
item, and every later one for a while (``PAUSE_S``), with its image; then it tries digests again, since
the refusal may have come from an old node in the middle of a roll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ringserve.contract.images import BAD_IMAGE
from ringserve.contract.v1 import inference_pb2 as pb

log = logging.getLogger("ringserve.client")
# How long a refusal stops digest-first: longer than a roll of a few nodes, short enough that a client that
# met one old node during a roll sends digests again soon after it.
PAUSE_S = 300.0


class DigestFirst:
    """Which of a client's images go digest-first: those of at least ``min_bytes``, unless the target refused a
    digest in the last ``PAUSE_S`` seconds. One per client (one target)."""

    def __init__(self, min_bytes: int | None, target: str, clock: Callable[[], float] = time.monotonic) -> None:
        # None: never digest-first.
        self.min_bytes = min_bytes
        self.target = target
        self._clock = clock
        # When the last refusal's pause ends, on ``clock``.
        self._paused_until = float("-inf")

    @property
    def taken(self) -> bool:
        """Whether digests go now: configured, and no refusal in the last ``PAUSE_S`` seconds."""
        return self.min_bytes is not None and self._clock() >= self._paused_until

    def wanted(self, size: int) -> bool:
        """Whether an image of ``size`` bytes goes digest-first."""
        return self.min_bytes is not None and size >= self.min_bytes and self.taken

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
