"""A real peer: the same model and images through Ray Serve (@serve.batch) and through ringserve.

    python -m bench.ray_peer [--concurrency 16] [--requests 400]

Same model (ringserve's own model code, same weights), same images, same
concurrency (C callers, each sending one image at a time and waiting for the
answer), same max batch (16) and batch delay (5 ms), one replica each, in the
same run on this machine. Two workloads: all distinct images, and 92% repeats.
Ray Serve has no feature cache, so repeats cost it a forward pass each; that is
the point of ringserve, and the distinct workload shows what the cache costs
when it cannot help. Needs the bench extra (ray[serve], httpx).
Writes bench/results/ray_peer.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.workload import repeats_workload
from ringserve.client import AsyncClient
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import NodeProcess, RedisProcess, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "mobilenet_v3_small"
MAX_BATCH = 16
BATCH_WAIT_S = 0.005


def start_ray_serve(port: int):
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
    class Features:
        def __init__(self) -> None:
            from ringserve.server.models import ModelConfig, load

            self.model = load(ModelConfig(name=MODEL))

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
        async def run(self, blobs: list[bytes]) -> list[bytes]:
            from ringserve.contract.images import decode

            tensors = [self.model.preprocess(decode(b)) for b in blobs]
            return [v.tobytes() for v in self.model.features(tensors)]

        async def __call__(self, request: Request) -> Response:
            return Response(await self.run(await request.body()), media_type="application/octet-stream")

    serve.run(Features.bind(), route_prefix="/features")
    return ray, serve


async def measure(send, images: list[bytes], order: list[int], concurrency: int) -> dict:
    latencies: list[float] = []
    queue = list(order)

    async def worker() -> None:
        while queue:
            index = queue.pop()
            t = time.perf_counter()
            await send(images[index])
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    values = np.array(latencies) * 1000
    return {"images_per_s": round(len(order) / elapsed, 1), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1)}


async def run_ray(port: int, workloads: dict, images: list[bytes], concurrency: int) -> dict:
    import httpx

    out = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency * 2)) as http:
        async def send(image: bytes) -> None:
            r = await http.post("/features", content=image)
            r.raise_for_status()
            assert len(r.content) == 576 * 2

        await measure(send, images, list(range(32)), concurrency)  # warm-up
        for name, order in workloads.items():
            out[name] = await measure(send, images, order, concurrency)
    return out


async def run_ringserve(target: str, workloads: dict, images: list[bytes], concurrency: int) -> dict:
    out = {}
    async with AsyncClient(target, hints=False) as client:
        async def send(image: bytes) -> None:
            vector = await client.extract(image)
            assert vector.shape == (576,)

        async def bypass(image: bytes) -> None:
            await client.extract(image, cache_mode="bypass")

        await measure(bypass, images, list(range(32)), concurrency)  # warm-up, caches stay cold
        for name, order in workloads.items():
            out[name] = await measure(send, images, order, concurrency)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=400)
    a = p.parse_args(argv)
    repeats = repeats_workload(a.requests, 0.92, seed=3)
    # 32 warm-up images, then a fresh set per workload so neither side has seen them before
    images = [jpeg(100_000 + i, size=(224, 224)) for i in range(32 + a.requests)]
    workloads = {"distinct": list(range(32, 32 + a.requests))}
    offset = len(images)
    images += [jpeg(200_000 + i, size=(224, 224)) for i in range(max(repeats) + 1)]
    workloads["92% repeats"] = [offset + i for i in repeats]
    from ringserve.local.processes import free_port

    work = scratch_dir("ringserve-ray-")
    result: dict = {"model": MODEL, "concurrency": a.concurrency, "requests": a.requests, "max_batch": MAX_BATCH,
                    "batch_wait_ms": BATCH_WAIT_S * 1000, "replicas": 1,
                    "workloads": {"distinct": "every request a new image",
                                  "92% repeats": f"{max(repeats) + 1} distinct in {a.requests}"}}
    print("ringserve (node + Redis) ...", flush=True)
    redis = RedisProcess(work / "redis").start()
    node = NodeProcess(work, "peer-node", ["--model", MODEL, "--redis-url", redis.url, "--max-batch", str(MAX_BATCH),
                                           "--max-delay-ms", str(BATCH_WAIT_S * 1000), "--drain-delay", "0",
                                           "--metrics-port", "0"], metrics_port=0)
    try:
        node.start()
        result["ringserve"] = asyncio.run(run_ringserve(node.target, workloads, images, a.concurrency))
    finally:
        node.stop()
        redis.stop()
    print("Ray Serve ...", flush=True)
    port = free_port()
    ray, serve = start_ray_serve(port)
    try:
        result["ray_serve"] = asyncio.run(run_ray(port, workloads, images, a.concurrency))
    finally:
        serve.shutdown()
        ray.shutdown()
    for name in workloads:
        result[f"ratio_{name}"] = round(result["ringserve"][name]["images_per_s"]
                                        / result["ray_serve"][name]["images_per_s"], 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_peer.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# ringserve against Ray Serve ({MODEL}, {a.concurrency} concurrent callers, {a.requests} requests, "
             f"max batch {MAX_BATCH}, {BATCH_WAIT_S * 1000:.0f} ms wait, one replica each)", "",
             "| workload | system | images/s | p50 ms | p99 ms | ringserve / Ray |", "| --- | --- | --- | --- | --- | --- |"]
    for name in workloads:
        for system in ("ringserve", "ray_serve"):
            s = result[system][name]
            lines.append(f"| {name} | {system} | {s['images_per_s']} | {s['p50_ms']} | {s['p99_ms']} | "
                         f"{result[f'ratio_{name}'] if system == 'ringserve' else ''} |")
    (RESULTS / "ray_peer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
