"""ringserve against real peers, compared fairly: Ray Serve with an LRU, and Triton with its response cache.

    python -m bench.peers [--size 640x480] [--requests 400] [--concurrency 16] [--reps 3] [--threads 2]

Every side runs the same model (mobilenet_v3_small, ringserve's own model code and
weights), the same decode and preprocessing, one replica, the same max batch (16)
and batch delay (5 ms), and the same torch threads (``--threads``). Every side gets
the cache its users would put in front of it:

- ringserve: Redis, one node and the router, called as its users call it (the Python
  client through the router, with its default hints and window);
- Ray Serve: a deployment behind Ray's HTTP proxy with ``@serve.batch`` and an LRU keyed
  by the image's BLAKE3 digest in the deployment (what a Ray user adds);
- Triton (pytriton, Triton server in a wheel): the dynamic batcher and Triton's local
  response cache, called with concurrent unary gRPC requests (its streaming call fails on
  cache misses with the cache on, Triton issue 4362).

Callers: ``--concurrency`` at once, each waiting for its answer. Two workloads, all
distinct and 92% repeats, each on images no side has seen; ``--reps`` runs per side,
alternating, median and spread. Needs the bench extra. Writes bench/results/peers.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np

from bench import report
from bench.workload import repeats_workload
from ringserve.client import AsyncClient
from ringserve.local.cluster import LocalCluster
from ringserve.local.processes import RedisProcess, free_port, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "mobilenet_v3_small"
DIM = 576
MAX_BATCH = 16
BATCH_WAIT_S = 0.005
LRU_ITEMS = 100_000
Send = Callable[[bytes], Awaitable[None]]


async def measure(send: Send, images: list[bytes], order: list[int], concurrency: int) -> dict:
    """``concurrency`` callers, each sending the next image of ``order`` when its last one is answered."""
    latencies: list[float] = []
    queue = list(reversed(order))

    async def caller() -> None:
        while queue:
            image = images[queue.pop()]
            t = time.perf_counter()
            await send(image)
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    values = np.array(latencies) * 1000
    return {"images_per_s": round(len(order) / elapsed, 1), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1)}


# ---- ringserve --------------------------------------------------------------------------------


@contextlib.contextmanager
def ringserve(work: Path) -> Iterator[str]:
    """Redis, one node and a router; yields the router's address."""
    redis = RedisProcess(work / "redis").start()
    cluster = LocalCluster(work / "ringserve", redis.url, router_args=["--drain-delay-s", "0"],
                           node_args=["--models", MODEL, "--max-batch", str(MAX_BATCH),
                                      "--max-delay-ms", str(BATCH_WAIT_S * 1000), "--drain-delay-s", "0"])
    try:
        cluster.add("node-0")
        yield cluster.start_router().target
    finally:
        cluster.stop()
        redis.stop()


@contextlib.asynccontextmanager
async def ringserve_sender(target: str):
    async with AsyncClient(target) as client:
        async def send(image: bytes) -> None:
            vector = await client.extract(image)
            assert vector.shape == (DIM,)

        yield send


# ---- Ray Serve --------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_serve(threads: int) -> Iterator[int]:
    """A Ray Serve deployment of the same model with a digest-keyed LRU; yields its HTTP port."""
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    port = free_port()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
    class Features:
        def __init__(self) -> None:
            import torch
            from cachetools import LRUCache

            from ringserve.server.models import ModelConfig, load

            torch.set_num_threads(threads)
            self.model = load(ModelConfig(name=MODEL))
            self.cache: LRUCache = LRUCache(LRU_ITEMS)

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
        async def compute(self, blobs: list[bytes]) -> list[bytes]:
            from ringserve.contract.images import decode

            tensors = [self.model.preprocess(decode(b, at_least=self.model.decode_side)) for b in blobs]
            return [v.tobytes() for v in self.model.features(tensors)]

        async def __call__(self, request: Request) -> Response:
            from ringserve.contract.fingerprint import digest

            body = await request.body()
            key = digest(body)
            value = self.cache.get(key)
            if value is None:
                value = await self.compute(body)
                self.cache[key] = value
            return Response(value, media_type="application/octet-stream")

    serve.run(Features.bind(), route_prefix="/features")
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


@contextlib.asynccontextmanager
async def ray_sender(port: int, concurrency: int):
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300,
                                 limits=httpx.Limits(max_connections=concurrency * 2)) as http:
        async def send(image: bytes) -> None:
            r = await http.post("/features", content=image)
            r.raise_for_status()
            assert len(r.content) == DIM * 2

        yield send


# ---- Triton -----------------------------------------------------------------------------------


def triton_serve(grpc_port: int, http_port: int, metrics_port: int, threads: int, cache_bytes: int) -> None:
    """Run in its own process (``--serve-triton``): bind the model to a Triton server and serve until killed."""
    import torch
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from ringserve.contract.images import decode
    from ringserve.server.models import ModelConfig as RingserveModel
    from ringserve.server.models import load

    torch.set_num_threads(threads)
    model = load(RingserveModel(name=MODEL))

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        tensors = [model.preprocess(decode(bytes(row[0]), at_least=model.decode_side)) for row in image]
        return {"features": np.stack(model.features(tensors))}

    config = TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                          cache_config=[f"local,size={cache_bytes}"], log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(model_name="features", infer_func=infer,
                    inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
                    outputs=[Tensor(name="features", dtype=np.float16, shape=(DIM,))],
                    config=ModelConfig(max_batch_size=MAX_BATCH, response_cache=True, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=int(BATCH_WAIT_S * 1e6))))
        triton.serve()


def _python_lib_dir() -> str:
    """pytriton's Python backend stub loads libpython from the system path; a pyenv Python keeps it here."""
    import sysconfig

    return sysconfig.get_config_var("LIBDIR") or ""


@contextlib.contextmanager
def triton(work: Path, threads: int, cache_bytes: int = 256 * 1024 * 1024) -> Iterator[str]:
    """Triton with the model bound by pytriton, in a child process; yields its gRPC address."""
    ports = [free_port() for _ in range(3)]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(filter(None, [_python_lib_dir(), os.environ.get("LD_LIBRARY_PATH")]))}
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "triton.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "bench.peers", "--serve-triton", *map(str, ports), str(threads),
                             str(cache_bytes)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
    target = f"127.0.0.1:{ports[0]}"
    try:
        import tritonclient.grpc as tc

        client = tc.InferenceServerClient(target)
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(Exception):
                if client.is_model_ready("features"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Triton did not start; see {work / 'triton.log'}:\n"
                                   + (work / "triton.log").read_text()[-3000:])
            time.sleep(0.5)
        yield target
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@contextlib.asynccontextmanager
async def triton_sender(target: str):
    import tritonclient.grpc.aio as tc

    client = tc.InferenceServerClient(target)
    try:
        async def send(image: bytes) -> None:
            tensor = tc.InferInput("image", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_))
            result = await client.infer("features", [tensor])
            assert result.as_numpy("features").shape == (1, DIM)

        yield send
    finally:
        await client.close()


# ---- the comparison ---------------------------------------------------------------------------


def workloads(size: tuple[int, int], requests: int, reps: int, first: int) -> list[dict[str, tuple[list[bytes], list[int]]]]:
    """Per rep, per workload: fresh images no side has seen, and the order to send them in."""
    from bench.photos import photo

    out = []
    seed = first
    for rep in range(reps):
        reps_order = repeats_workload(requests, 0.92, seed=rep)
        distinct = [photo(seed + i, size) for i in range(requests)]
        seed += requests
        repeated = [photo(seed + i, size) for i in range(max(reps_order) + 1)]
        seed += len(repeated)
        out.append({"all distinct": (distinct, list(range(requests))), "92% repeats": (repeated, reps_order)})
    return out


SIDES = ("ringserve", "Ray Serve + LRU", "Triton + response cache")


def compare(work: Path, size: tuple[int, int] = (640, 480), requests: int = 400, concurrency: int = 16, reps: int = 3,
            threads: int = 2, sides: tuple[str, ...] = SIDES, progress: Callable[[str], None] = print) -> dict:
    """Every side over the same fresh workloads, rep by rep; images/s median and spread, and ratios."""
    sets = {side: workloads(size, requests, reps, first=1_000_000 * (i + 1)) for i, side in enumerate(sides)}
    warm = workloads(size, 16, 1, first=9_000_000)[0]["all distinct"]
    runs: dict = {side: {w: [] for w in ("all distinct", "92% repeats")} for side in sides}

    async def run_side(make_sender, side: str) -> None:
        async with make_sender() as send:
            await measure(send, *warm, concurrency)  # model warm-up on images outside the workloads
            for rep, rep_sets in enumerate(sets[side]):
                for name, (images, order) in rep_sets.items():
                    progress(f"{side}: {name}, run {rep + 1}/{reps}")
                    runs[side][name].append(await measure(send, images, order, concurrency))

    for side in sides:
        if side == "ringserve":
            with ringserve(work / "ringserve") as target:
                asyncio.run(run_side(lambda t=target: ringserve_sender(t), side))
        elif side == "Ray Serve + LRU":
            with ray_serve(threads) as port:
                asyncio.run(run_side(lambda p=port: ray_sender(p, concurrency), side))
        else:
            with triton(work / "triton", threads) as target:
                asyncio.run(run_side(lambda t=target: triton_sender(t), side))
    out: dict = {"size": f"{size[0]}x{size[1]}", "requests": requests, "concurrency": concurrency, "reps": reps,
                 "torch_threads": threads, "max_batch": MAX_BATCH, "batch_wait_ms": BATCH_WAIT_S * 1000,
                 "sides": {}}
    for side in sides:
        out["sides"][side] = {name: {"images_per_s": report.spread([r["images_per_s"] for r in rs]),
                                     "p50_ms": report.spread([r["p50_ms"] for r in rs]),
                                     "p99_ms": report.spread([r["p99_ms"] for r in rs])}
                              for name, rs in runs[side].items()}
    out["ratios"] = {f"ringserve / {side}": {name: round(out["sides"]["ringserve"][name]["images_per_s"]["median"]
                                                          / out["sides"][side][name]["images_per_s"]["median"], 2)
                                             for name in ("all distinct", "92% repeats")}
                     for side in sides if side != "ringserve" and "ringserve" in sides}
    return out


def markdown(r: dict) -> list[str]:
    lines = [f"{r['size']} JPEGs, {r['requests']} requests per run, {r['concurrency']} concurrent callers, "
             f"{r['reps']} runs per side (median, with min-max), max batch {r['max_batch']}, "
             f"{r['batch_wait_ms']:g} ms batch wait, torch threads {r['torch_threads']}, one replica each.", "",
             "| workload | system | images/s | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- |"]
    for name in ("all distinct", "92% repeats"):
        for side, s in r["sides"].items():
            lines.append(f"| {name} | {side} | {report.cell(s[name]['images_per_s'])} | {report.cell(s[name]['p50_ms'])} "
                         f"| {report.cell(s[name]['p99_ms'])} |")
    lines += ["", "| ratio of medians | all distinct | 92% repeats |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['all distinct']} | {v['92% repeats']} |" for k, v in r["ratios"].items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-triton"]:
        grpc_port, http_port, metrics_port, threads, cache_bytes = map(int, argv[1:6])
        triton_serve(grpc_port, http_port, metrics_port, threads, cache_bytes)
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x480", help="JPEG size, WxH")
    p.add_argument("--requests", type=int, default=400, help="requests per run")
    p.add_argument("--concurrency", type=int, default=16, help="callers at once")
    p.add_argument("--reps", type=int, default=3, help="runs per side and workload")
    p.add_argument("--threads", type=int, default=2, help="torch threads on every side")
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    a = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # ringserve's node inherits it
    size = tuple(int(x) for x in a.size.split("x"))
    result = {**report.provenance(argv, "bench.peers"),
              **compare(scratch_dir("ringserve-peers-"), size, a.requests, a.concurrency, a.reps, a.threads,
                        tuple(a.sides))}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    text = "\n".join(["# ringserve against Ray Serve and Triton, each with its cache", "", report.header(result),
                      *markdown(result)]) + "\n"
    (RESULTS / "peers.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
