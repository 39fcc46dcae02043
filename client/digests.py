"""Digest-first: name an image by the digest of its bytes, and send the bytes only when the server asks.

A hit then costs a 16-byte digest and one small reply instead of the whole image on every hop (as a
content-addressed store's client asks which blobs are missing before it uploads); a miss costs one
round trip more on the same stream (the reply says ``image_required``, then the image goes). It pays where an
image is much bigger than a message, so it is chosen by size (``ClientConfig.digest_first_min_bytes``).
A server from before digest lookups refuses such an item as an empty image: the client then sends that
item, and every later one, with its image.
"""

from __future__ import annotations

import logging

from ringserve.contract.images import BAD_IMAGE
from ringserve.contract.v1 import inference_pb2 as pb

log = logging.getLogger("ringserve.client")


class DigestFirst:
    """Which of a client's images go digest-first: those of at least ``min_bytes``, while the target takes digests.

    One per client (one target): a refusal from an older server turns digest-first off for the client's life.
    """

    def __init__(self, min_bytes: int | None, target: str) -> None:
        # None: never digest-first.
        self.min_bytes = min_bytes
        self.target = target
        # False once the target refused a digest-only item as an image (a server from before digest lookups).
        self.taken = min_bytes is not None

    def wanted(self, size: int) -> bool:
        """Whether an image of ``size`` bytes goes digest-first."""
        return self.taken and self.min_bytes is not None and size >= self.min_bytes

    def refused(self, message: str) -> None:
        """A digest-only item was answered INVALID_ARGUMENT with ``message``; about its (absent) image, the target
        knows no digests: send images from now on, and say so once."""
        if self.taken and message.startswith(BAD_IMAGE):
            self.taken = False
            log.warning("%s refused an image named by its digest (%r): a server from before digest-first lookups; "
                        "this client sends every image with its bytes from now on", self.target, message)


def name(request: pb.ImageRequest, digest: bytes, size: int) -> None:
    """Set ``request``'s digest (``ImageRequest.digest``): BLAKE3-128 of the image's bytes and their length."""
    request.digest.blake3_128 = digest
    request.digest.size_bytes = size
