"""The asyncio client: many images over one stream, a bounded window in flight, retries on UNAVAILABLE.

A call sends every image on one bidirectional stream, at most ``window`` unanswered
at a time, and puts the replies (which come back in completion order) back in the
caller's order. Items the server could not take (per-item UNAVAILABLE, or a stream
cut by a draining node) are re-sent with exponential backoff; nothing else is
retried. An image of at least ``digest_first_min_bytes`` goes first as its digest alone, and its
bytes follow on the same stream only if the server asks for them (``digests``, ``items``,
``outbox``). Works against a node or the router alike. With ``placement="client"`` an item with a
hint goes straight to the node that owns it on the router's ring (``placement``, ``lanes``), the
router taking every other item and any item its node failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import EllipsisType
from typing import Any

import grpc
import numpy as np
from PIL import Image

from ringserve.client import digests, errors, resend
from ringserve.client.config import CACHE_MODES, ClientConfig, check_cache_mode
from ringserve.client.inputs import ImageInput, hint, identify, identify_inline, to_bytes
from ringserve.client.items import ItemCall
from ringserve.client.lanes import Lanes
from ringserve.client.outbox import Outbox
from ringserve.client.placement import Membership, NodeRoute
from ringserve.client.results import Classification, Feature
from ringserve.client.search import CollectionInfo, Indexed, SearchCalls, SearchResult
from ringserve.client.shared import SharedStreams
from ringserve.contract import arguments, fingerprint, frames, tls, tracecontext, wire
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc


class AsyncClient:
    """The asyncio client: ``async with AsyncClient("host:port") as c: vectors = await c.extract(paths)``.

    Every method of ``Client``, as a coroutine. Works against a router or a node.
    """

    def __init__(self, target: str | None = None, config: ClientConfig | None = None, **overrides: Any) -> None:
        """Open a channel to ``target``.

        Args:
            target: ``host:port`` of a router or a node; overrides ``config.target``.
            config: every setting (deadline, window, retries, hints, model, cache mode); defaults if None.
            **overrides: single ``ClientConfig`` fields to change, e.g. ``timeout_s=10, window=128``.

        Raises:
            InvalidArgument: an unknown ``cache_mode``, a radius out of range, or a TLS file that cannot be read.
        """
        config = config or ClientConfig()
        if target is not None:
            overrides["target"] = target
        self.config = replace(config, **overrides)
        self._channel = self._open_channel(self.config.target)
        self._stub = pb_grpc.InferenceStub(self._channel)
        # Item streams send bytes written by ``contract.wire``: an image is copied once, never re-encoded.
        self._calls = wire.item_calls(self._channel)
        self._search = SearchCalls(self._channel, self.config)
        self._hash_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ringserve-hint")
        self._hints = fingerprint.Memo(4096)  # a repeated image's hint costs a digest, not a decode
        # The ring keys routers placed this client's unhinted items by (``Provenance.placement_key``), by digest: for
        # client placement alone; never a hint of ``_hints``'s (such a key may be made of the digest, not a pHash).
        self._placement_keys = fingerprint.Memo(4096)
        # Hints being computed for images the cluster asked for, by digest: one decode however many items wait.
        self._hinting: dict[bytes, asyncio.Future[int | None]] = {}
        self._framed = self.config.frames  # until the server turns out to serve no frames
        # Every call's items on one long-lived stream per method to the target (``shared.py``).
        self._shared = SharedStreams(self._calls) if self.config.shared_stream else None
        self._digests = digests.DigestFirst(self.config.digest_first_min_bytes, self.config.target,
                                            min_hit_ratio=self.config.digest_first_min_hit_ratio)
        # The router's members, read from the target, with placement="client": hinted items go to their owners.
        self._membership = (Membership(self._channel, self._open_channel, self.config.members_interval_s)
                            if self.config.placement == "client" else None)

    def _open_channel(self, target: str) -> grpc.aio.Channel:
        """A channel for this client's calls to ``target``: its router or node, and each node with client placement."""
        try:
            return tls.aio_channel(target, options=[("grpc.max_receive_message_length", frames.MAX_MESSAGE_BYTES),
                                                    ("grpc.max_send_message_length", frames.MAX_MESSAGE_BYTES)],
                                   tls=self.config.tls)
        except tls.TlsError as exc:
            raise errors.InvalidArgument(str(exc), argument="tls") from exc

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._membership is not None:
            await self._membership.close()
        if self._shared is not None:
            await self._shared.close()
        await self._channel.close()
        self._hash_pool.shutdown(wait=False)

    # ---- public calls --------------------------------------------------------------------

    async def extract(self, images: ImageInput | Sequence[ImageInput], **options: Any) -> np.ndarray:
        """Feature vectors of one image or many, on one stream with ``window`` items in flight.

        Args:
            images: a path, bytes, a PIL image or an RGB array; or any iterable of those.
            **options: per call: ``model``, ``cache_mode`` ("exact", "perceptual", "bypass"), ``radius``,
                ``hints`` (compute the routing pHash here), ``timeout_s`` (the whole call's deadline).

        Returns:
            One image: its vector, shape (D,). Several: an (N, D) array in the caller's order.

        Raises:
            RingserveError: the first item that failed (``InvalidImage``, ``Overloaded``, ``Unavailable``,
                ``DeadlineExceeded``, ``NotFound``, ``ServerError``); use ``extract_detailed`` to get every
                item's outcome instead.
        """
        single = _is_single(images)
        results = await self.extract_detailed([images] if single else list(images), **options)
        vectors = [_raise_if_error(r).vector for r in results]
        return vectors[0] if single else np.stack(vectors) if vectors else np.empty((0, 0), np.float16)

    async def classify(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5, **options: Any):
        """Top-``top_k`` classes: one image gives one ``Classification``, several a list in the caller's order.

        Raises:
            RingserveError: the first item that failed.
        """
        single = _is_single(images)
        results = await self.classify_detailed([images] if single else list(images), top_k=top_k, **options)
        out = [_raise_if_error(r) for r in results]
        return out[0] if single else out

    async def extract_detailed(self, images: Sequence[ImageInput], **options: Any) -> list[Feature | errors.RingserveError]:
        """Every item's ``Feature`` (vector and provenance) or its error, in the caller's order; raises none.

        Items the server could not take (UNAVAILABLE) are re-sent up to ``retries`` times with backoff.
        """
        replies = await self._run("Extract", images, top_k=0, **options)
        return [r if isinstance(r, errors.RingserveError) else Feature.from_pb(r) for r in replies]

    async def classify_detailed(
        self, images: Sequence[ImageInput], top_k: int = 5, **options: Any
    ) -> list[Classification | errors.RingserveError]:
        """Every item's ``Classification`` or its error, in the caller's order; raises none."""
        replies = await self._run("Classify", images, top_k=top_k, **options)
        return [r if isinstance(r, errors.RingserveError) else Classification.from_pb(r) for r in replies]

    async def list_models(self, timeout_s: float | None = 10.0) -> pb.ListModelsReply:
        """The models the cluster serves and the default one.

        Raises:
            RingserveError: the server could not answer.
        """
        try:
            return await self._stub.ListModels(pb.ListModelsRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise errors.from_status(exc.code(), exc.details() or "") from exc

    # ---- search (a router with --search-redis-url) ---------------------------------------

    async def index(self, ids: Sequence[str], images: Sequence[ImageInput], collection: str,
                    model: str | None = None) -> list[Indexed | errors.RingserveError]:
        """Store each image under its id in ``collection`` (made by its first image; re-indexing an id replaces it).

        Args:
            ids: the caller's ids, one per image (a SKU, a URL, a database key).
            images: paths, bytes, PIL images or arrays.
            collection: 1 to 128 characters of [A-Za-z0-9_.-].
            model: the model (default: the configured one, else the server's default).
        Returns:
            One result per item, in order: ``Indexed`` or the item's error (``InvalidImage``, ``Unavailable``...).
        """
        return await self._search.index(ids, images, collection, model if model is not None else self.config.model)

    async def search(self, collection: str, image: ImageInput | None = None, id: str | None = None, k: int = 10,
                     max_distance: int | None = None) -> SearchResult:
        """The ``k`` nearest entries to ``image`` (or to an indexed ``id``) by feature, best first, and with
        ``max_distance`` the entries whose pHash is within that many bits (near-duplicates).

        Raises:
            NotFound: no such collection or id. InvalidArgument: a bad argument (checked before the call) or
                a limit passed; InvalidImage (one of them): a bad image.
            RingserveError: FAILED_PRECONDITION when the collection holds another model version.
        """
        return await self._search.search(collection, image, id, k, max_distance, self.config.model)

    async def delete(self, collection: str, ids: Sequence[str] = (), everything: bool = False) -> tuple[int, list[str]]:
        """Remove ``ids`` (or the whole collection with ``everything``); returns (removed, ids not found)."""
        return await self._search.delete(collection, ids, everything)

    async def describe_collection(self, collection: str) -> CollectionInfo:
        """The collection's model, version, dimension and size in the router's view. Raises NotFound."""
        return await self._search.describe(collection)

    # ---- the stream ----------------------------------------------------------------------

    async def _requests(self, images: Sequence[ImageInput], top_k: int, model: str | None, cache_mode: str | None,
                        radius: int | None, hints: bool | None) -> ItemCall:
        """The call's items: each request without its image (``contract.wire`` adds it), named by its digest where
        it goes digest-first, with its routing hint."""
        cfg = self.config
        mode = cache_mode if cache_mode is not None else cfg.cache_mode
        radius = radius if radius is not None else cfg.radius
        errors.checked(arguments.check_count, "top_k", top_k, 0)
        if radius is not None:
            errors.checked(arguments.check_radius, radius)
        check_cache_mode(mode)
        datas = [to_bytes(image) for image in images]
        use_hints = cfg.hints if hints is None else hints
        # Digest-first where it pays; where it does not, still for bytes this client sent before (None: if its memo of
        # hints knows them, so with hints alone). Never for bypass, which reads no cache: a digest would only miss.
        bypass = mode == "bypass"
        named = [False if bypass else self._digests.naming(len(d), may_know=use_hints) for d in datas]
        # here where that is cheap (a small image seen before); in threads where a hint decodes or a digest is long
        idents = identify_inline(datas, self._hints, use_hints, named)
        slow = [i for i, ident in enumerate(idents) if ident is None]
        if slow:
            loop = asyncio.get_running_loop()
            done = await asyncio.gather(*(loop.run_in_executor(self._hash_pool, identify, datas[i], self._hints,
                                                               use_hints, named[i]) for i in slow))
            for i, ident in zip(slow, done, strict=True):
                idents[i] = ident
        policy = pb.CachePolicy(mode=CACHE_MODES[mode] if mode else pb.CACHE_MODE_UNSPECIFIED)
        if radius is not None:
            policy.max_distance = radius
        requests = []
        for i, (key, phash) in enumerate(idents):
            request = pb.ImageRequest(request_id=str(i), model=model if model is not None else cfg.model,
                                      cache_policy=policy, top_k=top_k)
            if phash is not None:
                request.phash_hint = phash
            if key is not None:
                digests.name(request, key, len(datas[i]))
            requests.append(request)
        # known: named, and hinted, which a named image is from the memo alone (the client sent its bytes before)
        return ItemCall(requests, {str(i): data for i, data in enumerate(datas)}, self._digests,
                        named={r.request_id for r in requests if r.HasField("digest")},
                        known={r.request_id for r in requests if r.HasField("digest") and r.HasField("phash_hint")},
                        hinted=use_hints, counted=not bypass)

    async def _run(self, method: str, images: Sequence[ImageInput], *, top_k: int, model: str | None = None,
                   cache_mode: str | None = None, radius: int | None = None, hints: bool | None = None,
                   timeout_s: float | EllipsisType | None = ...) -> list[Any]:
        call = await self._requests(images, top_k, model, cache_mode, radius, hints)
        timeout = self.config.timeout_s if timeout_s is ... else timeout_s
        via_router: set[str] = set()  # items a node failed (client placement): the router takes them from then on

        async def stream(items: list[pb.ImageRequest], time_left: float | None) -> None:
            await self._stream(method, items, call, time_left, via_router)

        outcome = await resend.items(self.config, timeout, call.pending, stream)
        return call.results(outcome.error)

    async def _stream(self, method: str, items: list[pb.ImageRequest], call: ItemCall, time_left: float | None,
                      via_router: set[str]) -> None:
        """One try over ``items``: framed, unless the server turns out to serve no frames."""
        loop = asyncio.get_running_loop()
        deadline = None if time_left is None else loop.time() + time_left
        if self._membership is not None:
            # the first read of the members within the call's deadline; past it, the items go through the router
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._membership.current(), time_left)
            time_left = None if deadline is None else max(0.001, deadline - loop.time())
        if self._framed:
            try:
                return await self._stream_once(method, items, call, time_left, True, via_router)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._framed = False  # a server from before frames: the same items, one per message
        time_left = None if deadline is None else max(0.001, deadline - loop.time())  # what the framed try left
        items = [r for r in items if r.request_id in call.pending]  # a node may have answered some meanwhile
        await self._stream_once(method, items, call, time_left, False, via_router)

    async def _hint_into(self, request: pb.ImageRequest, data: bytes) -> None:
        """Set ``request``'s routing hint from ``data`` where it decodes: in the client's threads, remembered, and
        decoded once however many items of the same bytes wait for it (a call may repeat an image many times)."""
        key = request.digest.blake3_128
        pending = self._hinting.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().run_in_executor(self._hash_pool, hint, data, self._hints)
            self._hinting[key] = pending
            pending.add_done_callback(lambda _done: self._hinting.pop(key, None))
        phash = await asyncio.shield(pending)  # one waiter going away must not cancel the others' decode
        if phash is not None:
            request.phash_hint = phash

    def _learn_key(self, request: pb.ImageRequest | None, key: int) -> None:
        """With client placement, remember the ring key a router placed an item of ours by, for its bytes: their
        next items are placed by it as they leave (``_key_of``), so a digest-first hit (which the client never
        decodes) goes straight to its node."""
        if (self._membership is not None and request is not None and request.HasField("digest")
                and not request.HasField("phash_hint")):
            self._placement_keys.remember(request.digest.blake3_128, fingerprint.Fingerprint(key, structure=0))

    def _key_of(self, request: pb.ImageRequest, hinted: bool) -> int | None:
        """An item's placement key as it leaves (client placement): its hint, else (a call with hints) the key a
        router named for its bytes since the call began, which it then carries as its hint."""
        if request.HasField("phash_hint"):
            return request.phash_hint
        if hinted and request.HasField("digest"):
            digest = request.digest.blake3_128
            found = self._hints.get(digest) or self._placement_keys.get(digest)
            if found is not None:
                request.phash_hint = found.phash
                return found.phash
        return None

    def _placed_here(self, items: list[pb.ImageRequest], via_router: set[str], hinted: bool) -> bool:
        """Whether some of ``items`` may go straight to their nodes (client placement, a view, a hint or a digest
        whose key may be learned meanwhile, no node failed them); if none may, the try is the one stream to the
        target, without the lanes' work per item."""
        return (self._membership is not None and len(self._membership.ring) > 0
                and any((r.HasField("phash_hint") or (hinted and r.HasField("digest"))) and r.request_id not in via_router
                        for r in items))

    async def _stream_once(self, method: str, items: list[pb.ImageRequest], call: ItemCall, time_left: float | None,
                           framed: bool, via_router: set[str]) -> None:
        """One try: one stream to the target, or with client placement a stream to each owner beside it."""
        if not items:
            return
        loop = asyncio.get_running_loop()
        deadline = None if time_left is None else loop.time() + time_left  # a lane opened later gets what is left
        def unready(request: pb.ImageRequest) -> bool:
            """An item named by its digest that goes with its bytes after all (digest-first stopped paying since the
            call began) is hinted first, as an image sent with its bytes from the start would be."""
            rid = request.request_id
            return (call.hinted and rid in call.named and not call.digest_only(rid)
                    and not request.HasField("phash_hint"))

        def readying(request: pb.ImageRequest) -> Awaitable[None]:
            # its bytes go once it is hinted, whatever the ratio says by then: it has paid for its decode
            call.named.discard(request.request_id)
            return self._hint_into(request, call.images[request.request_id])

        outbox = Outbox(items, call.outgoing, self.config.window, unready, readying)

        def take(reply: Any) -> None:
            rid = reply.request_id
            if reply.provenance.HasField("placement_key"):
                self._learn_key(call.pending.get(rid), reply.provenance.placement_key)
            final = rid in call.pending and rid not in call.asked
            again = call.take(reply, outbox.answered(rid))
            # what the cache had, digest-first's worth: a miss as soon as the image is asked for, else the final answer
            if call.counted and again and rid in call.asked:
                self._digests.missed(len(call.images[rid]))
            elif call.counted and final and rid not in call.pending:
                self._digests.answered(len(call.images[rid]), reply)
            if again:  # asked for its image: it goes now, on this stream
                request = call.pending[reply.request_id]
                if call.hinted and not request.HasField("phash_hint"):
                    # Its hint was left out to spare a hit the decode; a miss pays it now, in the client's threads.
                    outbox.again_when(request, self._hint_into(request, call.images[request.request_id]))
                else:
                    outbox.again(request)

        carrier: dict[str, str] = {}
        tracecontext.inject(carrier)  # the caller's trace, if it uses OpenTelemetry
        metadata = tuple(carrier.items()) or None

        async def carry(route: NodeRoute | None, sent: AsyncIterator[frames.Item], ready: Callable[[], bool],
                        on_reply: Callable[[Any], None]) -> None:
            """``sent`` to the target (``route`` None) or to a node: on the client's shared stream to it where the
            items are framed and no trace rides in the metadata, else on a stream of their own."""
            left = None if deadline is None else max(0.001, deadline - loop.time())
            if framed and metadata is None and self._shared is not None:
                await (self._shared if route is None else route.shared).carry(method, sent, on_reply, left)
                return
            calls = self._calls if route is None else route.calls
            async for reply in _replies(calls[method, framed], framed, sent, ready, left, metadata):
                on_reply(reply)

        try:
            if self._placed_here(items, via_router, call.hinted):
                await Lanes(outbox, self._membership, carry, take, call.pending, via_router,
                            lambda request: self._key_of(request, call.hinted)).run()
            else:
                await carry(None, outbox.items(), outbox.ready, take)
        finally:
            outbox.close()


async def _replies(call: Any, framed: bool, sent: AsyncIterator[frames.Item], ready: Callable[[], bool],
                   time_left: float | None, metadata: tuple | None) -> AsyncIterator[Any]:
    """The replies of one item stream over ``sent``: many items per message (``contract.frames``: every item the
    window lets go at once leaves in one frame), or one per message for a server without frames."""
    if framed:
        async for frame in call(frames.pack(sent, ready=ready), timeout=time_left, metadata=metadata):
            for reply in frame.items:
                yield reply
    else:
        async for reply in call(frames.singles(sent), timeout=time_left, metadata=metadata):
            yield reply


def _is_single(images: Any) -> bool:
    """One image (a path, bytes, a PIL image, an array), or many (any other iterable of those)."""
    if isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike, Image.Image, np.ndarray)):
        return True
    return not isinstance(images, Iterable)


def _raise_if_error(result: Any) -> Any:
    if isinstance(result, errors.RingserveError):
        raise result
    return result
