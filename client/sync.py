"""The blocking client: the asyncio client run on a private event loop thread.

One implementation of the stream logic (``aio.py``) serves both; this only
carries calls across to that loop and back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np

from ringserve.client.aio import AsyncClient
from ringserve.client.config import ClientConfig
from ringserve.client.errors import RingserveError
from ringserve.client.inputs import ImageInput
from ringserve.client.results import Classification, Feature
from ringserve.client.search import CollectionInfo, Indexed, SearchResult
from ringserve.contract.v1 import inference_pb2 as pb

T = TypeVar("T")


class Client:
    """The blocking client: ``with Client("host:port") as c: vector = c.extract("cat.jpg")``.

    Thread-safe: every call runs on the client's own event loop thread, in the caller's context (so a
    caller's OpenTelemetry trace continues through router and node). Works against a router or a node.
    """

    def __init__(self, target: str | None = None, config: ClientConfig | None = None, **overrides: Any) -> None:
        """Open a channel to ``target``.

        Args:
            target: ``host:port`` of a router or a node; overrides ``config.target``.
            config: every setting (deadline, window, retries, hints, model, cache mode); defaults if None.
            **overrides: single ``ClientConfig`` fields to change, e.g. ``timeout_s=10, window=128``.

        Raises:
            ValueError: an unknown ``cache_mode``.
        """
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ringserve-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncClient:
            return AsyncClient(target, config, **overrides)

        self._client = self._call(make())
        self.config = self._client.config

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the client's loop in the caller's context, so its trace context goes along."""
        context = contextvars.copy_context()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def finish(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                done.cancel()
            elif task.exception() is not None:
                done.set_exception(task.exception())
            else:
                done.set_result(task.result())

        def start() -> None:
            self._loop.create_task(coro, context=context).add_done_callback(finish)

        self._loop.call_soon_threadsafe(start)
        return done.result()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and stop the client's thread; calling it twice is harmless."""
        if self._loop.is_closed():
            return
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def extract(self, images: ImageInput | Sequence[ImageInput], **options: Any) -> np.ndarray:
        """Feature vectors; see ``AsyncClient.extract`` for the arguments.

        Returns:
            One image: its vector, shape (D,). Several: an (N, D) array in the caller's order.

        Raises:
            RingserveError: the first item that failed (``InvalidImage``, ``Overloaded``, ``Unavailable``,
                ``DeadlineExceeded``, ``NotFound``, ``ServerError``); ``extract_detailed`` never raises per item.
        """
        return self._call(self._client.extract(images, **options))

    def classify(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5,
                 **options: Any) -> Classification | list[Classification]:
        """Class scores; one image gives one ``Classification``, several a list in the caller's order.

        Raises:
            RingserveError: the first item that failed.
        """
        return self._call(self._client.classify(images, top_k=top_k, **options))

    def extract_detailed(self, images: Sequence[ImageInput], **options: Any) -> list[Feature | RingserveError]:
        """Every item's ``Feature`` (vector and provenance) or its error, in the caller's order; raises none."""
        return self._call(self._client.extract_detailed(images, **options))

    def classify_detailed(self, images: Sequence[ImageInput], top_k: int = 5,
                          **options: Any) -> list[Classification | RingserveError]:
        """Every item's ``Classification`` or its error, in the caller's order; raises none."""
        return self._call(self._client.classify_detailed(images, top_k=top_k, **options))

    def index(self, ids: Sequence[str], images: Sequence[ImageInput], collection: str,
              model: str | None = None) -> list[Indexed | RingserveError]:
        """Store each image under its id in ``collection``; see ``AsyncClient.index``."""
        return self._call(self._client.index(ids, images, collection, model))

    def search(self, collection: str, image: ImageInput | None = None, id: str | None = None, k: int = 10,
               max_distance: int | None = None) -> SearchResult:
        """Nearest entries and near-duplicates of an image or an indexed id; see ``AsyncClient.search``."""
        return self._call(self._client.search(collection, image, id, k, max_distance))

    def delete(self, collection: str, ids: Sequence[str] = (), everything: bool = False) -> tuple[int, list[str]]:
        """Remove ids (or the whole collection); returns (removed, ids not found)."""
        return self._call(self._client.delete(collection, ids, everything))

    def describe_collection(self, collection: str) -> CollectionInfo:
        """The collection's model, version, dimension and size. Raises NotFound."""
        return self._call(self._client.describe_collection(collection))

    def list_models(self, timeout_s: float | None = 10.0) -> pb.ListModelsReply:
        """The models the cluster serves (name, version, feature size, classes) and the default one.

        Raises:
            RingserveError: the server could not answer (``Unavailable`` when no node serves).
        """
        return self._call(self._client.list_models(timeout_s))
