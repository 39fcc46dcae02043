"""The in-process tier's stand-ins: a model that counts its calls, and a node or router served on loopback.

Everything here runs in the test's own event loop: the node's and the router's
real servicers and stream engine, over real gRPC on a free port, with a fake
model where a real one would make a test slow or nondeterministic (groupcache
tests ``load`` with ``fakePeers`` the same way).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace

import grpc
import numpy as np
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from PIL import Image

from ringserve.contract.images import ImageLimits
from ringserve.contract.ring import Ring
from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.router.config import PlacementConfig
from ringserve.router.health import SERVICE as INFERENCE
from ringserve.router.health import HealthConfig
from ringserve.router.hedging import HedgingConfig
from ringserve.router.membership.base import Member
from ringserve.router.metrics import RouterMetrics
from ringserve.router.registry import Registry
from ringserve.router.retry import RetryConfig
from ringserve.router.servicer import RouterServicer
from ringserve.server import mih
from ringserve.server.batcher import Batcher, BatcherConfig
from ringserve.server.cache import ModelSlot
from ringserve.server.errors import CacheMiss, CacheUnavailable
from ringserve.server.keys import Namespace
from ringserve.server.l1 import L1, L1Config
from ringserve.server.l2 import L2, NoL2
from ringserve.server.metrics import Metrics
from ringserve.server.servicer import InferenceServicer
from ringserve.server.settings import NodeLimits, PolicyConfig

FEATURE_DIM = 12
# The metric reader of each fake's MeterProvider, so a test can read what was counted.
_READERS: dict[int, InMemoryMetricReader] = {}


def meter_provider() -> MeterProvider:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    _READERS[id(provider)] = reader
    return provider


def metric_total(provider: MeterProvider, name: str, **attributes: str) -> float:
    """Sum of a counter's points whose attributes include ``attributes``."""
    total = 0.0
    data = _READERS[id(provider)].get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    total += sum(p.value for p in metric.data.data_points
                                 if all(p.attributes.get(k) == v for k, v in attributes.items()))
    return total


class FakeModel:
    """A model whose feature is the image's mean colour per region; counts every image it runs on.

    ``gate`` (a threading.Event), when set up, holds every batch until the test opens it; ``fail``
    makes every batch raise that exception; ``delay_s`` makes every batch take that long.
    """

    name = "fake"
    version = "v1"
    feature_dim = FEATURE_DIM
    feature_dtype = np.dtype("float16")
    input_size = 32
    random_weights = False
    decode_side = 256  # as the real models: the node fingerprints the decode it makes for the model
    square = None  # no Resize-then-CenterCrop: the verifier's thumbnail covers the whole image
    class_names = tuple(f"class-{i}" for i in range(4))
    num_classes = 4

    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None, gate: threading.Event | None = None) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.gate = gate
        self.batches = 0
        self.images = 0
        self.started = threading.Event()  # set when a batch first reaches the model

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        small = np.asarray(image.resize((2, 2)), dtype=np.float32) / 255.0
        return torch.from_numpy(small.reshape(-1))

    def features(self, batch: Sequence[torch.Tensor]) -> list[np.ndarray]:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        if self.fail is not None:
            raise self.fail
        self.batches += 1
        self.images += len(batch)
        return [t.numpy().astype(self.feature_dtype) for t in batch]

    def scores_batch(self, features: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.full(self.num_classes, 1.0 / self.num_classes, np.float32) for _ in features]


class MemoryL2:
    """L2 in a dict, with L2's verbs; ``down`` makes every call fail as a Redis that is away does.

    Shared by several node servicers, it is the Redis they share. Writes land at once.
    """

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.fingerprints: dict[Namespace, set[int]] = {}
        self.locks: dict[str, str] = {}
        self.down = False
        self.pending_writes = 0

    def _check(self, what: str) -> None:
        if self.down:
            raise CacheUnavailable(f"Redis {what} failed: the fake is down")

    async def get(self, key: str) -> bytes:
        self._check("GET")
        if key not in self.values:
            raise CacheMiss(key)
        return self.values[key]

    async def near(self, ns: Namespace, phash: int, radius: int) -> list[tuple[int, int]]:
        self._check("SMEMBERS")
        return mih.nearest(phash, self.fingerprints.get(ns, set()), radius)

    async def try_lock(self, key: str, token: str) -> bool:
        self._check("SET NX")
        return self.locks.setdefault(key, token) == token

    async def wait_for(self, key: str) -> bytes:
        return await self.get(key)

    def write(self, values: list[tuple[str, bytes]]) -> bool:
        if not self.down:
            self.values.update(values)
        return not self.down

    # The real tier's rule for what a computed feature is written under, over this fake's write and add_fingerprint.
    store = L2.store
    point = L2.point
    pointer = L2.pointer

    def add_fingerprint(self, ns: Namespace, phash: int) -> bool:
        if not self.down:
            self.fingerprints.setdefault(ns, set()).add(phash)
        return not self.down

    def remove_fingerprint(self, ns: Namespace, phash: int) -> bool:
        self.fingerprints.get(ns, set()).discard(phash)
        return True

    def unlock_later(self, key: str, token: str) -> bool:
        if self.locks.get(key) == token:
            del self.locks[key]
        return True


def node_servicer(model: FakeModel, node_id: str = "fake-node", batcher: BatcherConfig | None = None,
                  policy: PolicyConfig = PolicyConfig(), l2: MemoryL2 | None = None) -> InferenceServicer:
    """A node's servicer around ``model``, with its own L1 and ``l2`` if given; call ``start_batchers`` in the loop."""
    config = batcher or BatcherConfig(max_batch=8, max_delay_ms=1.0)
    slot = ModelSlot(model, Batcher(model.features, config, name="fake-batcher"),
                     Batcher(model.scores_batch, replace(config, max_delay_ms=0.0), name="fake-head"))
    return InferenceServicer(node_id, {model.name: slot}, model.name, L1(L1Config()), l2 or NoL2(), NodeLimits(), policy,
                             ThreadPoolExecutor(2), Metrics(meter_provider(), node_id))


def start_batchers(servicer: InferenceServicer) -> None:
    for slot in servicer.slots.values():
        slot.batcher.start()
        slot.head.start()


@asynccontextmanager
async def serving(servicer: pb_grpc.InferenceServicer) -> AsyncIterator[str]:
    """Serve an Inference servicer on a free loopback port; yields its target."""
    server = grpc.aio.server()
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    health = health_aio.HealthServicer()  # a router puts a node on its ring when this says SERVING
    await health.set(INFERENCE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=0.5)


async def router_servicer(members: dict[str, str], retry: RetryConfig = RetryConfig(),
                          placement: PlacementConfig = PlacementConfig(),
                          hedging: HedgingConfig = HedgingConfig()) -> RouterServicer:
    """A router's servicer over ``members`` (name -> target of a servicer run by ``serving``), once each is on
    its ring (their health services say SERVING); close it with ``await servicer.registry.close()``.
    """
    registry = Registry(HealthConfig(watch_retry_s=0.05), Ring(load_factor=placement.load_factor,
                        min_load=placement.min_load), placement.policy)
    registry.update([Member(name, target) for name, target in members.items()])
    await wait_until(lambda: len(registry.ring) == len(members))
    return RouterServicer("fake-router", registry, placement, retry, ImageLimits(), ThreadPoolExecutor(2),
                          RouterMetrics(meter_provider(), "fake-router"), hedging=hedging)


async def extract(target: str, images: Sequence[bytes], ids: Sequence[str] | None = None,
                  timeout_s: float = 30.0) -> dict[str, pb.ExtractReply]:
    """Send ``images`` on one Extract stream; the replies by request id (asserting one per item)."""
    ids = list(ids) if ids is not None else [str(i) for i in range(len(images))]
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.InferenceStub(channel).Extract(
            iter([pb.ImageRequest(request_id=i, image=image) for i, image in zip(ids, images, strict=True)]),
            timeout=timeout_s)
        replies: dict[str, pb.ExtractReply] = {}
        async for reply in call:
            assert reply.request_id not in replies, f"two replies for item {reply.request_id}"
            replies[reply.request_id] = reply
    return replies


async def wait_until(predicate, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)
