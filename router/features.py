"""The router as the Search service's source of features: an image through the normal path.

An image to index or to search with is placed and answered like any Extract item
(so a cached image costs no model run, and a node that fails it is retried), and
its pHash is computed here from the bytes, never taken from a caller's hint: a
wrong hint would only misplace an item, but a wrong stored pHash would poison
near-duplicate search.
"""

from __future__ import annotations

import itertools

import grpc
import numpy as np

from ringserve.contract.status import code_of
from ringserve.contract.tensor import to_array
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.router.servicer import RouterServicer
from ringserve.runtime.edge import EXTRACT
from ringserve.search.servicer import Feature, FeatureFailed


class RoutedFeatures:
    """``await features(image, model)`` -> the image's Feature; raises FeatureFailed with the node's answer."""

    _ids = itertools.count()

    def __init__(self, router: RouterServicer) -> None:
        self.router = router

    async def __call__(self, image: bytes, model: str) -> Feature:
        request = pb.ImageRequest(request_id=f"search-{next(self._ids)}", image=image, model=model)
        found = await self.router.fingerprint_of(image)
        # Placed by that pHash as its hint, so the router does not digest the bytes a second time.
        request.phash_hint = found.phash
        reply = await self.router.item(request, EXTRACT)
        code = code_of(reply.status.code)
        if code != grpc.StatusCode.OK:
            raise FeatureFailed(code, reply.status.message)
        return Feature(to_array(reply.feature, np.float16).reshape(-1), found.phash, reply.provenance.model,
                       reply.provenance.model_version, found.low_information)
