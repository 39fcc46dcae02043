"""The node's cache path, one room: groupcache's Get -> lookupCache -> load -> populateCache.

``get`` looks in L1 then L2 for these very bytes; decodes and fingerprints them; looks for
another encoding of the same picture where the policy allows, served only when the verifier stored beside
it agrees with the request's (``server.verifier``); then, inside the single
flight, looks in L1 again, takes the cross-node lock (or waits for the node that holds
it) and runs the batcher; the result goes to L1 at once and to L2 in the background. L2
is always there: without Redis it is ``NoL2``, a tier that holds nothing, so no step asks
whether it exists. Knows no gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np
import torch

from ringserve.contract import codec, fingerprint
from ringserve.contract.images import ImageLimits, decode
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.runtime.singleflight import Group
from ringserve.server import keys, verifier
from ringserve.server.batcher import Batcher
from ringserve.server.errors import CacheMiss, CacheUnavailable, CorruptValue
from ringserve.server.keys import Namespace
from ringserve.server.l1 import L1
from ringserve.server.l2 import L2, NoL2
from ringserve.server.metrics import Metrics
from ringserve.server.models import Model

log = logging.getLogger(__name__)


@dataclass
class ModelSlot:
    """A served model with its key namespace and its own batchers: the backbone's, and the head's for Classify."""

    model: Model
    batcher: Batcher[torch.Tensor, np.ndarray]
    head: Batcher[np.ndarray, np.ndarray]

    @property
    def ns(self) -> Namespace:
        return Namespace(self.model.name, self.model.version)


def verifier_region(model: Model) -> float:
    """The share of the centre square the model's transform keeps (its crop of its resize), where it has one."""
    return model.input_size / model.square[0] if model.square else 1.0


@dataclass(frozen=True)
class Prepared:
    """A miss's decode: the model's input and, where perceptual reuse may read or write them, the image's
    fingerprint and verifier (None where it cannot: about an eighth of a miss's CPU at 640x480 saved)."""

    tensor: torch.Tensor
    fingerprint: fingerprint.Fingerprint | None
    # The thumbnail a near match is verified by (``server.verifier``), from the same decode.
    verifier: bytes | None

    @property
    def phash(self) -> int | None:
        """The perceptual key, or None for a low-information image (never matched perceptually) or one not
        fingerprinted."""
        if self.fingerprint is None or self.fingerprint.low_information:
            return None
        return self.fingerprint.phash

    @property
    def low_information(self) -> bool:
        return self.fingerprint is not None and self.fingerprint.low_information


@dataclass(frozen=True)
class Served:
    """A feature and where it came from; ``digest`` and ``phash`` are the L1 keys it may be kept under."""

    vector: np.ndarray
    source: int
    # The exact digest of the bytes it was computed from, when these are the requester's bytes: a
    # perceptual hit is a neighbour's feature and must never sit under the requester's exact key.
    digest: str | None = None
    phash: int | None = None
    perceptual: bool = False
    distance: int = 0
    low_information: bool = False
    # The verifier of the image this feature was computed from, kept beside it in L1; and, for a near match,
    # its score against the requester's (PSNR in dB, at least the node's threshold).
    verifier: bytes | None = None
    verifier_score: float = 0.0


class FeatureCache:
    """Features by image bytes, from L1, L2, a near match, another node's computation, or the model."""

    def __init__(self, node_id: str, l1: L1, l2: L2 | NoL2, images: ImageLimits, pool: Executor,
                 metrics: Metrics, perceptual_index: bool = False,
                 verify_min_psnr: float = verifier.DEFAULT_MIN_PSNR) -> None:
        self.l1 = l1
        # A near match is served only when its verifier scores at least this against the request's.
        self.verify_min_psnr = verify_min_psnr
        # Write every computed feature's fingerprint to L2 (a deployment that uses perceptual reuse), not only
        # those of items that asked for it.
        self.perceptual_index = perceptual_index
        self.l2 = l2
        self.images = images
        self.pool = pool
        self.metrics = metrics
        self._prepares: Group[Prepared] = Group()
        self._loads: Group[Served] = Group()
        self._lock_token = f"{node_id}:{secrets.token_hex(4)}"

    async def get(self, slot: ModelSlot, data: bytes, mode: int, radius: int) -> Served:
        """The feature of ``data`` under cache policy ``mode`` (a ``pb.CacheMode``) and ``radius``.

        Raises:
            ImageError: the bytes are not an image this node accepts.
            Overloaded: the model's queue is full.
        """
        if mode == pb.CACHE_MODE_BYPASS:
            # No cache is read or written, so neither key is needed: decode and run the model, nothing else.
            tensor = await asyncio.get_running_loop().run_in_executor(
                self.pool, lambda: slot.model.preprocess(decode(data, self.images, slot.model.decode_side)))
            return Served(await slot.batcher.submit(tensor), pb.SOURCE_COMPUTED)
        digest = await fingerprint.digest_off_loop(data, self.pool, keys.exact_digest)
        served = await self._lookup_exact(slot, digest)
        if served is not None:
            return served
        perceptual = mode == pb.CACHE_MODE_PERCEPTUAL or self.perceptual_index
        prepared = await self._prepare(slot, digest, data, perceptual)  # the request's hint is never used here
        if mode == pb.CACHE_MODE_PERCEPTUAL and prepared.phash is not None:  # a pHash that means something
            served = await self._lookup_near(slot, prepared, radius)
            if served is not None:
                return served
        served, shared = await self._loads.do((slot.ns, digest), lambda: self._load(slot, digest, prepared, perceptual))
        if shared:
            self.metrics.singleflight.add(1, self.metrics.attrs())
            if perceptual and prepared.phash is not None:
                # The flight was another item's, which may not have asked for perceptual reuse: this one did.
                self._findable(slot.ns, digest, prepared, served.vector)
        return replace(served, low_information=prepared.low_information)

    async def find(self, slot: ModelSlot, digest: str) -> Served | None:
        """The feature held for the bytes named ``digest`` (``keys.named``), or None: a digest-first item.

        Only the bytes a node digested itself are ever stored, so this writes nothing but L1's copy of an L2 hit
        (the same value under the same key): no model run, no lock, no L2 write, whatever it finds.
        """
        return await self._lookup_exact(slot, digest, kind="digest")

    def hit_now(self, slot: ModelSlot, digest: str, kind: str) -> Served | None:
        """The L1 hit for the bytes named ``digest``, or None, without waiting: an item answered in the turn that
        read it, counted as ``kind`` of lookup ("exact", or "digest" for a digest-only item). A miss is not counted
        here: the item then takes the whole path (``get`` or ``find``), which does."""
        try:
            vector = self.l1.get_exact(slot.ns, digest)
        except CacheMiss:
            return None
        self._count("l1", kind, "hit")
        return Served(vector, pb.SOURCE_L1)

    # ---- lookups -------------------------------------------------------------------------

    async def _lookup_exact(self, slot: ModelSlot, digest: str, kind: str = "exact") -> Served | None:
        """These very bytes, in L1 then L2; counted as ``kind`` of lookup."""
        ns = slot.ns
        served = self.hit_now(slot, digest, kind)
        if served is not None:
            return served
        self._count("l1", kind, "miss")
        try:
            vector = await self._l2_value(slot, ns.exact(digest))
            self._count("l2", kind, "hit")
            return self._remember(ns, Served(vector, pb.SOURCE_L2, digest=digest))
        except CacheMiss:
            self._count("l2", kind, "miss")
        except CacheUnavailable:
            self._count("l2", kind, "error")
        return None

    async def _lookup_near(self, slot: ModelSlot, prepared: Prepared, radius: int) -> Served | None:
        """Another encoding of the same picture, within ``radius`` bits, in L1 then L2, served only when its
        verifier passes (nearest first: a refused one makes way for the next)."""
        ns, phash = slot.ns, prepared.phash
        assert phash is not None  # the caller never asks for a low-information image
        for hit in self.l1.near(ns, phash, radius):
            score = self._verified(prepared, hit.verifier, "l1")
            if score is not None:
                self._count("l1", "perceptual", "hit")
                return Served(hit.vector, pb.SOURCE_L1, perceptual=True, distance=hit.distance,
                              verifier=hit.verifier, verifier_score=score)
        self._count("l1", "perceptual", "miss")
        try:
            for distance, found in await self.l2.near(ns, phash, radius):
                served = await self._l2_near(slot, prepared, found, distance)
                if served is not None:
                    self._count("l2", "perceptual", "hit")
                    return self._remember(ns, served)
            self._count("l2", "perceptual", "miss")
        except CacheUnavailable:
            self._count("l2", "perceptual", "error")
        return None

    async def _l2_near(self, slot: ModelSlot, prepared: Prepared, found: int, distance: int) -> Served | None:
        """The feature the fingerprint ``found`` points to, if its verifier passes; None to try the next."""
        ns = slot.ns
        try:
            pointer = await self.l2.pointer(ns, found)
        except CorruptValue as exc:
            log.warning("corrupt fingerprint pointer in L2 treated as a miss: %s", exc)
            self.metrics.l2_events.add(1, self.metrics.attrs(event="corrupt"))
            return None
        except CacheMiss:  # the fingerprint expired: prune the index
            self.l2.remove_fingerprint(ns, found)
            return None
        score = self._verified(prepared, pointer.verifier, "l2")
        if score is None:
            return None
        try:
            vector = await self._l2_value(slot, ns.exact(pointer.digest))
        except CorruptValue:
            return None  # logged and counted; the next computation of it overwrites the value
        except CacheMiss:  # the feature it points to expired: prune the index
            self.l2.remove_fingerprint(ns, found)
            return None
        return Served(vector, pb.SOURCE_L2, phash=found, perceptual=True, distance=distance,
                      verifier=pointer.verifier, verifier_score=score)

    def _verified(self, prepared: Prepared, stored: bytes | None, tier: str) -> float | None:
        """The verifier's score of a near match found in ``tier``, or None when it may not be served: stored
        without a verifier (an earlier layout), an unreadable one, or one scoring under the node's threshold.
        Counted as lookups of kind "verifier" (passed, refused, unverifiable, corrupt), apart from the
        perceptual lookups' hit ratio."""
        if stored is None:
            self._count(tier, "verifier", "unverifiable")
            return None
        assert prepared.verifier is not None, "a perceptual lookup's prepare computes the verifier"
        try:
            score = verifier.score(prepared.verifier, stored)
        except CorruptValue as exc:
            log.warning("corrupt verifier treated as a refusal: %s", exc)
            self._count(tier, "verifier", "corrupt")
            return None
        if score < self.verify_min_psnr:
            self._count(tier, "verifier", "refused")
            return None
        self._count(tier, "verifier", "passed")
        return score

    # ---- load, inside the flight -----------------------------------------------------------

    async def _load(self, slot: ModelSlot, digest: str, prepared: Prepared, perceptual: bool) -> Served:
        """The feature of these bytes, from L1, another node's computation, or the model; ``perceptual``:
        also make it findable by its fingerprint, in L2 and in L1 (the exact entry's twin, 968 more bytes of
        L1 per image, which a deployment that never asks for perceptual reuse does not pay).

        Its result is remembered in L1 before the flight ends, so a request arriving just after finds it.
        """
        ns = slot.ns
        phash = prepared.phash if perceptual else None  # the L1 keys of what this flight keeps
        # L1 again, inside the flight (groupcache's load does the same): a request that missed L1 just
        # before another finished computing these bytes enters a new flight after that one has ended,
        # and would otherwise compute them a second time.
        try:
            vector = self.l1.get_exact(ns, digest)
        except CacheMiss:
            pass
        else:
            if phash is not None:  # kept by an exact-only flight that ended after this item looked
                self._findable(ns, digest, prepared, vector)
            return Served(vector, pb.SOURCE_L1)
        lock = None
        try:
            if await self.l2.try_lock(ns.lock(digest), self._lock_token):
                lock = (ns.lock(digest), self._lock_token)
            else:  # another node computes these bytes right now: wait briefly for its result
                vector = await self._wait_for_peer(slot, ns.exact(digest))
                if vector is not None:
                    if phash is not None:  # the other node's item may not have asked for perceptual reuse
                        self.l2.point(ns, digest, phash, prepared.verifier)
                    return self._remember(ns, Served(vector, pb.SOURCE_L2, digest=digest, phash=phash,
                                                     verifier=prepared.verifier))
        except CacheUnavailable:
            pass  # Redis away: no cross-node flight, compute here
        try:
            vector = await slot.batcher.submit(prepared.tensor)
        except BaseException:
            if lock is not None:
                self.l2.unlock_later(*lock)
            raise
        self.l2.store(ns, digest, prepared.phash, vector, slot.model.version, perceptual, prepared.verifier)
        if lock is not None:
            self.l2.unlock_later(*lock)  # after the values: a waiting node polls for them
        return self._remember(ns, Served(vector, pb.SOURCE_COMPUTED, digest=digest, phash=phash,
                                         verifier=prepared.verifier))

    def _findable(self, ns: Namespace, digest: str, prepared: Prepared, vector: np.ndarray) -> None:
        """Make a feature another item's flight kept by its exact key alone findable by this image's fingerprint: its
        pointer in L2 and its twin in L1. For an item that asked for perceptual reuse and has paid the decode."""
        self.l2.point(ns, digest, prepared.phash, prepared.verifier)
        self._remember(ns, Served(vector, pb.SOURCE_L1, digest=digest, phash=prepared.phash, verifier=prepared.verifier))

    def _remember(self, ns: Namespace, served: Served) -> Served:
        """The one place L1 is written: under the keys ``served`` may be kept under."""
        self.l1.store(ns, served.digest, served.phash, served.vector, served.verifier)
        return served

    # ---- steps -----------------------------------------------------------------------------

    async def _prepare(self, slot: ModelSlot, digest: str, data: bytes, perceptual: bool) -> Prepared:
        """One decode for all three: the model's input and, where ``perceptual`` (the item asks for perceptual
        reuse, or this node indexes every image's fingerprint), the pHash of its perceptual keys (the same
        function as client and router, over a decode at least as large as theirs) and the verifier. An
        exact-only miss writes neither, so it computes neither."""
        def work() -> Prepared:
            model = slot.model
            image = decode(data, self.images, at_least=model.decode_side)
            if not perceptual:
                return Prepared(model.preprocess(image), None, None)
            return Prepared(model.preprocess(image), fingerprint.of_image(image),
                            verifier.of_image(image, verifier_region(model)))

        loop = asyncio.get_running_loop()
        prepared, _ = await self._prepares.do((slot.model.name, digest, perceptual),
                                              lambda: loop.run_in_executor(self.pool, work))
        return prepared

    async def _wait_for_peer(self, slot: ModelSlot, key: str) -> np.ndarray | None:
        try:
            return self._checked(slot, await self.l2.wait_for(key))
        except CacheMiss:
            return None

    async def _l2_value(self, slot: ModelSlot, key: str) -> np.ndarray:
        return self._checked(slot, await self.l2.get(key))

    def _checked(self, slot: ModelSlot, blob: bytes) -> np.ndarray:
        """An L2 value as the model's feature; CorruptValue (a miss, counted) for one that does not fit."""
        try:
            vector = codec.decode(blob, slot.model.version)
        except codec.CodecError as exc:
            log.warning("corrupt value in L2 treated as a miss: %s", exc)
            self.metrics.l2_events.add(1, self.metrics.attrs(event="corrupt"))
            raise CorruptValue(str(exc)) from exc
        if vector.shape != (slot.model.feature_dim,) or vector.dtype != slot.model.feature_dtype:
            self.metrics.l2_events.add(1, self.metrics.attrs(event="corrupt"))
            raise CorruptValue(f"L2 value of shape {vector.shape} {vector.dtype} does not fit {slot.model.name}")
        return vector

    def _count(self, tier: str, kind: str, result: str) -> None:
        self.metrics.lookups.add(tier, kind, result)
