"""Shared fixtures: a real Redis per session, real node processes on free ports, always stopped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ringserve.contract.v1 import inference_pb2 as pb
from ringserve.contract.v1 import inference_pb2_grpc as pb_grpc
from ringserve.local.processes import NodeProcess, RedisClusterProcess, RedisProcess
from tests import testmodel

# The fast tier (``./scripts/test.sh -m fast``): modules that start no process and need no Redis.
FAST_MODULES = {"test_inprocess", "test_imports", "test_ring", "test_l1", "test_mih", "test_batcher",
                "test_singleflight", "test_codec", "test_breaker", "test_images", "test_client_inputs", "test_config",
                "test_wire", "test_search_view", "test_process", "test_transparency", "test_digest",
                "test_client_digest", "test_hedging", "test_client_lanes"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in FAST_MODULES:
            item.add_marker(pytest.mark.fast)


# Small, fast, deterministic, and its features tell images apart (tests/testmodel.py): every node
# loads the same weights file, so every node computes the same features.
SMALL_MODEL = ["--models", f"{testmodel.NAME}={testmodel.weights_file()}", "--drain-delay-s", "0.2"]


def extract_one(stub: pb_grpc.InferenceStub, image: bytes, mode: int, hint: int | None = None,
                **fields) -> pb.ExtractReply:
    """One raw ImageRequest on its own Extract stream, below the client library (a hostile or odd caller)."""
    request = pb.ImageRequest(request_id="1", image=image, cache_policy=pb.CachePolicy(mode=mode, **fields))
    if hint is not None:
        request.phash_hint = hint
    return next(iter(stub.Extract(iter([request]), timeout=60)))


@pytest.fixture(scope="session", autouse=True)
def test_model_tells_images_apart() -> None:
    """Every test's premise: the test model's features of distinct images are far apart and far from zero.

    A model whose features vanish (float16 zeros) makes "the same feature" and "not the other
    image's feature" true of any two images; this stops the whole run before such a test passes.
    """
    from ringserve.contract.images import decode
    from ringserve.local.imagegen import jpeg
    from ringserve.server import models

    model = models.load(models.ModelConfig(testmodel.NAME, weights=testmodel.weights_file()))
    vectors = np.stack(model.features([model.preprocess(decode(jpeg(20_000 + i))) for i in range(12)]))
    vectors = vectors.astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    tiny = float(np.finfo(np.float16).tiny)  # the smallest normal float16
    assert (norms > 1e4 * tiny).all() and (norms < 1e-2 * float(np.finfo(np.float16).max)).all(), norms
    unit = vectors / norms[:, None]
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -1.0)
    assert cosine.max() < 0.99, f"two distinct test images have features at cosine {cosine.max():.4f}"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ringserve")


@pytest.fixture(scope="session")
def redis_server(workdir) -> Iterator[RedisProcess]:
    redis = RedisProcess(workdir / "redis").start()
    yield redis
    redis.stop(5)


@pytest.fixture
def redis_db(redis_server) -> Iterator[RedisProcess]:
    """The session's Redis, emptied before the test."""
    import redis as redis_py

    with redis_py.Redis(port=redis_server.port) as r:
        r.flushall()
    yield redis_server


@pytest.fixture(scope="session")
def redis_cluster(workdir) -> Iterator[RedisClusterProcess]:
    cluster = RedisClusterProcess(workdir / "cluster").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def nodes(workdir, request) -> Iterator[callable]:
    """Factory: ``nodes("a", "--redis-url", url)`` starts a node; all are stopped after the test."""
    started: list[NodeProcess] = []

    def start(node_id: str, *args: str, wait: bool = True, port: int | None = None, **kwargs) -> NodeProcess:
        node = NodeProcess(workdir / request.node.name, node_id, [*SMALL_MODEL, *args], port=port, **kwargs)
        started.append(node)
        return node.start(wait=wait)

    yield start
    for node in started:
        with contextlib.suppress(Exception):
            node.stop(15)


@pytest.fixture
def busy_cores() -> Iterator[int]:
    """Every core kept busy by other work while the test runs, as on a shared or production machine."""
    count = os.cpu_count() or 2
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield count
    finally:
        for loop in loops:
            loop.kill()
            loop.wait(10)
