"""ringserve against real peers, one replica each: Ray Serve with an LRU, and Triton with its response cache.

    python -m bench.peers [--size 640x480] [--requests 400] [--concurrency 16] [--reps 3] [--threads 2]
                          [--decode-threads 2] [--sides ...] [--workloads ...] [--out bench/results]

Every side runs the same model (mobilenet_v3_small, ringserve's own model code and weights), the same decode
and preprocessing, one replica, the same max batch (16) and batch delay (5 ms), the same torch threads
(``--threads``, the model in one worker thread off the serving loop) and the same decode threads
(``--decode-threads``). Every side gets the cache its users would put in front of it:

- ringserve: Redis, one node and the router, called as its users call it (the Python client through the
  router, with its default hints and window). The node decodes and hashes in its pool (``--decode-workers``)
  while the model runs, and runs one computation per image however many requests for it are in flight
  (single-flight coalescing), with Redis as its second cache tier.
- ringserve, one node: one replica as the peers are one, a node of its own and nothing else (no router, no
  Redis: L1 is its one cache, as the peers have one), the Python client straight to it, without routing
  hints (``hints=False``: a hint is for a router, and a client pointed at a node has none to use it). The
  router places images on a ring; with one node there is nothing to place, and the router's hop is a cost
  the peers' single replicas do not pay.
- Ray Serve: a deployment behind Ray's HTTP proxy with ``@serve.batch`` and an LRU keyed by the image's
  BLAKE3 digest in the deployment (what a Ray user adds). A miss is decoded in a thread pool in the request
  handler, so decoding overlaps the model as in ringserve, and the batch method runs the model in a worker
  thread, so that LRU hits are answered while a batch computes. Ray's docs: the batch method must be
  ``async def`` because the decorator batches in the replica's asyncio event loop ("Dynamic Request
  Batching", docs.ray.io/en/latest/serve/advanced-guides/dyn-req-batch.html; Ray 2.60 raises TypeError for
  a sync one), and for CPU-bound work such as model inference the handler should be ``def`` or ``async def``
  with the work offloaded, since blocking code in an ``async def`` blocks the loop that serves every other
  request ("Asyncio and concurrency best practices in Ray Serve",
  docs.ray.io/en/master/serve/advanced-guides/asyncio-best-practices.html). So the batch method awaits the
  model in a one-thread executor (``run_in_executor``).
- Triton (pytriton, Triton server in a wheel, bench/triton_peer.py): the dynamic batcher and Triton's local
  response cache, called with concurrent unary gRPC requests (its streaming call fails on cache misses with
  the cache on, Triton issue 4362). The model function decodes its batch's images in a thread pool, then
  runs the model: in Triton the decode cannot overlap the model of the same instance.

Callers: ``--concurrency`` at once, each sending the next request when its last one is answered. Workloads,
each on images no server has seen (new images per rep; the same images in the same order for every side):

- "all distinct": every request a new image (the model's throughput, nothing to cache);
- "92% repeats": each request repeats an earlier request with probability 0.92 (``repeats_workload``).
  Repeats are drawn from earlier requests, so one image gets most of them and several requests for an
  image still being computed are common: ringserve's coalescing computes it once, the peers once per
  request that misses;
- "92% answered repeats": the same share, but a repeat only of an image whose first request has been
  answered (``answered_repeats_workload``: drawn at least ``--concurrency`` positions back, and the sender
  waits for that answer if it is still out). No request finds its image being computed: coalescing has
  nothing to share, and every repeat is a cache hit on every side.

All sides are up at once; each rep runs every workload on every side in turn, the side that goes first
rotating each rep, after the same warm-up for each. Reported per side and workload: images/s, p50 and p99
(median and min-max over reps) and model runs (images the model computed), with the ratios of ringserve's
images/s to each peer's. Needs the bench extra. Writes peers.{json,md} into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import report
from bench.triton_peer import triton, triton_sender
from bench.workload import answered_repeats_workload, repeats_workload
from ringserve.client import AsyncClient
from ringserve.local.cluster import LocalCluster
from ringserve.local.processes import RedisProcess, free_port, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "mobilenet_v3_small"
DIM = 576
MAX_BATCH = 16
BATCH_WAIT_S = 0.005
LRU_ITEMS = 100_000
TRITON_CACHE_BYTES = 256 * 1024 * 1024
REPEAT_SHARE = 0.92
WARM_IMAGES = 32
SEED_BASE = 1_000_000
Send = Callable[[bytes], Awaitable[None]]

ALL_DISTINCT, REPEATS, ANSWERED = "all distinct", "92% repeats", "92% answered repeats"
WORKLOADS = (ALL_DISTINCT, REPEATS, ANSWERED)
RINGSERVE, RINGSERVE_NODE = "ringserve", "ringserve, one node"
RAY, TRITON = "Ray Serve + LRU", "Triton + response cache"
SIDES = (RINGSERVE, RINGSERVE_NODE, RAY, TRITON)
OURS = (RINGSERVE, RINGSERVE_NODE)


@dataclass
class Side:
    """A running server: how to call it, and its counts (``model_runs`` at least), read now."""

    name: str
    sender: Callable[[], contextlib.AbstractAsyncContextManager[Send]]
    counts: Callable[[], dict[str, int]]


async def measure(send: Send, images: list[bytes], order: list[int], concurrency: int, gate: bool = False) -> dict:
    """``concurrency`` callers, each sending the next image of ``order`` when its last one is answered.

    ``gate``: a repeat is sent only once its image's first request has been answered (the answered-repeats
    workload); ``waited`` counts the repeats that had to wait for it.
    """
    firsts: list[float] = []  # latencies of each image's first request (a miss on every side)
    repeats: list[float] = []  # and of every other request
    last_first = 0.0  # when the last first request was answered, from the start
    queue = list(reversed(range(len(order))))
    answered: dict[int, asyncio.Event] = {}
    first: set[int] = set()
    for position, image in enumerate(order):
        if image not in answered:
            answered[image] = asyncio.Event()
            first.add(position)
    waited = 0

    async def caller() -> None:
        nonlocal waited, last_first
        while queue:
            position = queue.pop()
            image = order[position]
            if gate and position not in first and not answered[image].is_set():
                waited += 1
                await answered[image].wait()
            t = time.perf_counter()
            await send(images[image])
            done = time.perf_counter()
            if position in first:
                firsts.append(done - t)
                last_first = max(last_first, done - started)
                answered[image].set()
            else:
                repeats.append(done - t)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    values = np.array(firsts + repeats) * 1000
    out = {"images_per_s": round(len(order) / elapsed, 1), "p50_ms": round(float(np.percentile(values, 50)), 1),
           "p99_ms": round(float(np.percentile(values, 99)), 1), "elapsed_s": round(elapsed, 3),
           "first_p50_ms": round(float(np.percentile(np.array(firsts) * 1000, 50)), 1),
           "last_first_s": round(last_first, 3)}
    if repeats:
        out["repeat_p50_ms"] = round(float(np.percentile(np.array(repeats) * 1000, 50)), 1)
    if gate:
        out["gate_waits"] = waited
    return out


# ---- ringserve --------------------------------------------------------------------------------


@contextlib.contextmanager
def ringserve(work: Path, decode_threads: int, router: bool = True) -> Iterator[tuple[str, Callable[[], dict[str, int]]]]:
    """Redis, one node and a router, or (``router=False``) one node alone; yields the address the client
    calls and the node's counts."""
    redis = RedisProcess(work / "redis").start() if router else None
    cluster = LocalCluster(work / "ringserve", redis.url if redis else None, router_args=["--drain-delay-s", "0"],
                           node_args=["--models", MODEL, "--max-batch", str(MAX_BATCH),
                                      "--max-delay-ms", str(BATCH_WAIT_S * 1000), "--drain-delay-s", "0",
                                      "--decode-workers", str(decode_threads)])
    try:
        cluster.add("node-0")
        node = cluster.nodes["node-0"]
        target = cluster.start_router().target if router else node.target

        def counts() -> dict[str, int]:
            return {"model_runs": int(node.metric("ringserve_backbone_images_total")),
                    "coalesced": int(node.metric("ringserve_singleflight_shared_total"))}

        yield target, counts
    finally:
        cluster.stop()
        if redis is not None:
            redis.stop()


@contextlib.asynccontextmanager
async def ringserve_sender(target: str, sources: Counter, hints: bool = True) -> AsyncIterator[Send]:
    """Each reply's provenance source (l1, l2, computed) is counted into ``sources``; ``hints``: the client's
    routing hints (off for a node as target, which has no router to use them)."""
    async with AsyncClient(target, hints=hints) as client:
        async def send(image: bytes) -> None:
            (reply,) = await client.extract_detailed([image])
            if isinstance(reply, Exception):
                raise reply
            assert reply.vector.shape == (DIM,)
            sources[reply.provenance.source] += 1

        yield send


# ---- Ray Serve --------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_serve(threads: int, decode_threads: int) -> Iterator[int]:
    """A Ray Serve deployment of the same model with a digest-keyed LRU; yields its HTTP port.

    ``POST /features``: the image's feature (float16 bytes). ``GET /features/counts``: the deployment's
    counts, JSON (``model_runs``: images the model computed; ``cache_hits``: LRU hits; ``requests``).
    """
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    port = free_port()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
    class Features:
        def __init__(self) -> None:
            from concurrent.futures import ThreadPoolExecutor

            import torch
            from cachetools import LRUCache

            from ringserve.server.models import ModelConfig, load

            torch.set_num_threads(threads)
            self.model = load(ModelConfig(name=MODEL))
            self.cache: LRUCache = LRUCache(LRU_ITEMS)
            self.decode_pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")
            self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
            self.counts = {"model_runs": 0, "cache_hits": 0, "requests": 0}

        def prepare(self, blob: bytes):
            from ringserve.contract.images import decode

            return self.model.preprocess(decode(blob, at_least=self.model.decode_side))

        @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
        async def compute(self, tensors: list) -> list[bytes]:
            # The model in a worker thread: this coroutine runs on the replica's event loop.
            vectors = await asyncio.get_running_loop().run_in_executor(self.model_thread, self.model.features, tensors)
            self.counts["model_runs"] += len(tensors)
            return [v.tobytes() for v in vectors]

        async def __call__(self, request: Request) -> Response:
            from ringserve.contract.fingerprint import digest

            if request.url.path.rstrip("/").endswith("/counts"):
                return JSONResponse(self.counts)
            body = await request.body()
            self.counts["requests"] += 1
            key = digest(body)
            value = self.cache.get(key)
            if value is None:
                tensor = await asyncio.get_running_loop().run_in_executor(self.decode_pool, self.prepare, body)
                value = await self.compute(tensor)
                self.cache[key] = value
            else:
                self.counts["cache_hits"] += 1
            return Response(value, media_type="application/octet-stream")

    serve.run(Features.bind(), route_prefix="/features")
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


def ray_counts(port: int) -> dict[str, int]:
    import httpx

    r = httpx.get(f"http://127.0.0.1:{port}/features/counts", timeout=30)
    r.raise_for_status()
    return r.json()


@contextlib.asynccontextmanager
async def ray_sender(port: int, concurrency: int) -> AsyncIterator[Send]:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300,
                                 limits=httpx.Limits(max_connections=concurrency * 2)) as http:
        async def send(image: bytes) -> None:
            r = await http.post("/features", content=image)
            r.raise_for_status()
            assert len(r.content) == DIM * 2

        yield send


# ---- the comparison ---------------------------------------------------------------------------


@dataclass
class Run:
    """One workload of one rep: the images and the order to send them in, the same for every side."""

    workload: str
    images: list[bytes]
    order: list[int]
    gate: bool = False
    seeds: tuple[int, int] = (0, 0)
    stats: dict = field(default_factory=dict)


def plan(size: tuple[int, int], requests: int, concurrency: int, rep: int, workloads: tuple[str, ...]) -> list[Run]:
    """Rep ``rep``'s runs: for each workload, images ``photo(SEED_BASE + (rep * len(WORKLOADS) + w) * requests + i)``."""
    from bench.photos import photo

    runs = []
    for name in workloads:
        w = WORKLOADS.index(name)
        if name == ALL_DISTINCT:
            order = list(range(requests))
        elif name == REPEATS:
            order = repeats_workload(requests, REPEAT_SHARE, seed=rep)
        else:
            order = answered_repeats_workload(requests, REPEAT_SHARE, gap=concurrency, seed=rep)
        first = SEED_BASE + (rep * len(WORKLOADS) + w) * requests
        count = max(order) + 1
        runs.append(Run(name, [photo(first + i, size) for i in range(count)], order, gate=name == ANSWERED,
                        seeds=(first, first + count)))
    return runs


def describe(order: list[int]) -> dict:
    """What a workload's order is: distinct images, the most requests for one image."""
    c = Counter(order)
    return {"requests": len(order), "distinct_images": len(c), "most_requests_for_one_image": max(c.values())}


async def _run_sides(sides: list[Side], warm: Run, plans: list[list[Run]], concurrency: int,
                     progress: Callable[[str], None], runs: dict, sources: dict[str, Counter]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        senders = {s.name: await stack.enter_async_context(s.sender()) for s in sides}
        for s in sides:  # the same warm-up for every side, on images outside the workloads
            progress(f"{s.name}: warm-up, {len(warm.order)} images")
            await measure(senders[s.name], warm.images, warm.order, concurrency)
        for rep, rep_runs in enumerate(plans):
            order = sides[rep % len(sides):] + sides[: rep % len(sides)]
            for run in rep_runs:
                for s in order:
                    progress(f"{s.name}: {run.workload}, rep {rep + 1}/{len(plans)}")
                    sources[s.name].clear()
                    before = await asyncio.to_thread(s.counts)
                    stats = await measure(senders[s.name], run.images, run.order, concurrency, gate=run.gate)
                    after = await asyncio.to_thread(s.counts)
                    stats.update({k: after[k] - before.get(k, 0) for k in after})
                    if sources[s.name]:
                        stats["reply_sources"] = dict(sources[s.name])
                    stats["first_of_rep"] = s is order[0]
                    runs[s.name][run.workload].append(stats)


def compare(work: Path, size: tuple[int, int] = (640, 480), requests: int = 400, concurrency: int = 16, reps: int = 3,
            threads: int = 2, decode_threads: int = 2, sides: tuple[str, ...] = SIDES,
            workloads: tuple[str, ...] = WORKLOADS, progress: Callable[[str], None] = print) -> dict:
    """Every side up at once over the same fresh workloads, rep by rep, the first side rotating."""
    from bench.photos import photo

    os.environ["OMP_NUM_THREADS"] = str(threads)  # ringserve's node and Triton's child inherit it
    sides = tuple(s for s in SIDES if s in sides)
    workloads = tuple(w for w in WORKLOADS if w in workloads)
    progress("making the images")
    plans = [plan(size, requests, concurrency, rep, workloads) for rep in range(reps)]
    warm = Run("warm-up", [photo(SEED_BASE - WARM_IMAGES + i, size) for i in range(WARM_IMAGES)],
               list(range(WARM_IMAGES)), seeds=(SEED_BASE - WARM_IMAGES, SEED_BASE))
    runs: dict = {s: {w: [] for w in workloads} for s in sides}
    sources: dict[str, Counter] = {s: Counter() for s in sides}
    with contextlib.ExitStack() as stack:
        up: list[Side] = []
        for name in sides:
            progress(f"starting {name}")
            if name in OURS:
                target, counts = stack.enter_context(ringserve(work / name.replace(", ", "-").replace(" ", "-"),
                                                               decode_threads, router=name == RINGSERVE))
                up.append(Side(name, lambda t=target, n=name: ringserve_sender(t, sources[n], hints=n == RINGSERVE),
                               counts))
            elif name == RAY:
                port = stack.enter_context(ray_serve(threads, decode_threads))
                up.append(Side(name, lambda p=port: ray_sender(p, concurrency), lambda p=port: ray_counts(p)))
            else:
                replica = stack.enter_context(triton(work / "triton", threads, TRITON_CACHE_BYTES, MAX_BATCH,
                                                     BATCH_WAIT_S, decode_threads))
                up.append(Side(name, lambda t=replica.target: triton_sender(t), replica.counts))
        asyncio.run(_run_sides(up, warm, plans, concurrency, progress, runs, sources))

    out: dict = {"size": f"{size[0]}x{size[1]}", "requests": requests, "concurrency": concurrency, "reps": reps,
                 "torch_threads": threads, "decode_threads": decode_threads, "max_batch": MAX_BATCH,
                 "batch_wait_ms": BATCH_WAIT_S * 1000, "repeat_share": REPEAT_SHARE, "warm_up_images": WARM_IMAGES,
                 "triton_cache_bytes": TRITON_CACHE_BYTES, "ray_lru_items": LRU_ITEMS,
                 "images": {"source": "bench.photos.photo", "size": f"{size[0]}x{size[1]}",
                            "per_rep": {w: describe(r.order) | {"seeds": list(r.seeds)}
                                        for w, r in zip(workloads, plans[0], strict=True)},
                            "total_distinct": sum(len(r.images) for p in plans for r in p) + WARM_IMAGES},
                 "workload_shapes": {w: [describe(p[i].order) for p in plans] for i, w in enumerate(workloads)},
                 "sides": {}, "runs": runs}
    for side in sides:
        out["sides"][side] = {}
        for name, rs in runs[side].items():
            summary = {k: report.spread([r[k] for r in rs]) for k in ("images_per_s", "p50_ms", "p99_ms")}
            summary["model_runs"] = report.spread([r["model_runs"] for r in rs])
            for key in ("elapsed_s", "first_p50_ms", "last_first_s", "repeat_p50_ms"):
                if all(key in r for r in rs):
                    summary[key] = report.spread([r[key] for r in rs])
            if "coalesced" in rs[0]:
                summary["coalesced"] = report.spread([r["coalesced"] for r in rs])
            out["sides"][side][name] = summary
    # ringserve's images/s over each peer's (medians): cut down to 3 decimals (report.ratio), never up across 1.0.
    out["ratios"], out["ratios_unrounded"] = {}, {}
    for ours in (s for s in sides if s in OURS):
        for side in (s for s in sides if s not in OURS):
            key = f"{ours} / {side}"
            out["ratios"][key], out["ratios_unrounded"][key] = {}, {}
            for name in workloads:
                x = (out["sides"][ours][name]["images_per_s"]["median"]
                     / out["sides"][side][name]["images_per_s"]["median"])
                out["ratios"][key][name] = float(report.ratio(x, 3))
                out["ratios_unrounded"][key][name] = x
    return out


def markdown(r: dict) -> list[str]:
    workloads = [w for w in WORKLOADS if any(w in s for s in r["sides"].values())]
    img = r["images"]
    lines = [
        f"Images: `bench.photos.photo` JPEGs, {img['size']}: real photos from the fidelity set (scikit-image, "
        "scikit-learn) fitted to the size, with sensor noise and a random coloured square of their own, so each "
        f"seed has its own bytes. {img['total_distinct']} distinct images in all: {WARM_IMAGES} for the warm-up "
        "(the same for every side), then new ones for every rep and workload, the same images in the same order "
        "for every side.", "",
        f"{r['requests']} requests per run, {r['concurrency']} concurrent callers, {r['reps']} reps (median, with "
        f"min-max), every side up at once and run in turn within a rep, the first side rotating each rep. One "
        f"replica each: max batch {r['max_batch']}, {r['batch_wait_ms']:g} ms batch wait, torch threads "
        f"{r['torch_threads']} (the model in one worker thread), decode threads {r['decode_threads']} on every side.",
        "", "| workload | requests | distinct images | most requests for one image |", "| --- | --- | --- | --- |"]
    for w in workloads:
        shapes = r["workload_shapes"][w]
        lines.append(f"| {w} | {shapes[0]['requests']} | {'/'.join(str(s['distinct_images']) for s in shapes)} "
                     f"| {'/'.join(str(s['most_requests_for_one_image']) for s in shapes)} |")
    lines += ["", "(per rep, separated by /)", "",
              "| workload | system | images/s | p50 ms | p99 ms | model runs |", "| --- | --- | --- | --- | --- | --- |"]
    for w in workloads:
        for side, s in r["sides"].items():
            lines.append(f"| {w} | {side} | {report.cell(s[w]['images_per_s'])} | {report.cell(s[w]['p50_ms'])} "
                         f"| {report.cell(s[w]['p99_ms'])} | {report.cell(s[w]['model_runs'])} |")
    if r["ratios"]:
        lines += ["", "| images/s, ratio of medians | " + " | ".join(workloads) + " |",
                  "| --- |" + " --- |" * len(workloads)]
        lines += [f"| {k} | " + " | ".join(report.ratio(v[w], 3) for w in workloads) + " |"
                  for k, v in r["ratios"].items()]
        lines += ["", "(3 decimals, cut down: a ratio just under 1 never prints as 1.000)"]
    timed = [w for w in workloads if w != ALL_DISTINCT and all("repeat_p50_ms" in s[w] for s in r["sides"].values())]
    if timed:
        lines += ["", "Where a run's time goes: each image's first request (a miss on every side) against its repeats, "
                  "and when the last first request was answered against the run's length (a run bound by its "
                  "misses ends with its last one):", "",
                  "| workload | system | first requests, p50 ms | repeats, p50 ms | last first request answered, s "
                  "| run, s |", "| --- | --- | --- | --- | --- | --- |"]
        for w in timed:
            for side, s in r["sides"].items():
                lines.append(f"| {w} | {side} | {report.cell(s[w]['first_p50_ms'])} | "
                             f"{report.cell(s[w]['repeat_p50_ms'])} | {report.cell(s[w]['last_first_s'])} | "
                             f"{report.cell(s[w]['elapsed_s'])} |")
    for ours in (s for s in OURS if s in r["sides"]):
        lines += ["", f"{ours}: coalesced requests (served by a computation already in flight, the node's "
                  "`ringserve_singleflight_shared_total`), median per run: "
                  + ", ".join(f"{w} {r['sides'][ours][w]['coalesced']['median']:g}" for w in workloads) + "."]
    if ANSWERED in workloads:
        waits = {side: statistics.median(x.get("gate_waits", 0) for x in r["runs"][side][ANSWERED]) for side in r["sides"]}
        lines += ["", f"In \"{ANSWERED}\" a caller holds a repeat until its image's first request is answered; "
                  "repeats held, median per run: " + ", ".join(f"{k} {v:g}" for k, v in waits.items()) + "."]
    lines += ["", "Model runs: images the model computed in the run (ringserve: the node's "
              "`ringserve_backbone_images_total`; Ray: a counter in the deployment; Triton: a counter in its model "
              "function). A peer computes an image once per request that misses its cache; ringserve once per image "
              "however many requests for it are in flight.", "",
              "What helps ringserve here, and is its own design rather than the peers' setup:", "",
              "- single-flight coalescing: in \"92% repeats\" requests for an image still being computed wait for "
              "that one computation (`coalesced` in the JSON: requests served by a computation already in flight); "
              "the peers compute it for each such request. \"92% answered repeats\" has no such requests;",
              "- its node decodes and hashes in a pool of decode threads while the model runs. Ray's deployment does "
              "the same (a decode pool in the request handler); Triton's model function decodes its batch in a pool "
              "of the same size, but not while it runs the model;",
              "- its Redis second tier (L2, through the router only): unused by these workloads (each image is new "
              "to every tier, and L1 holds them all), but it is one more process on the machine; \"ringserve, one "
              "node\" has none, and so writes nothing to Redis on a miss;",
              "- every server is up for the whole run, so each side's turn shares the machine with the others' idle "
              "processes (Ray's GCS, raylet and HTTP proxy are the busiest of them); on a small machine that costs "
              "every side, not ringserve alone;",
              "- its client and router are its own; the peers are called with their own clients (httpx for Ray's "
              "HTTP proxy, tritonclient's gRPC aio client for Triton). \"ringserve, one node\"'s client computes "
              "no routing hints (`hints=False`): there is no router to read them, so a miss costs its client no "
              "decode; through the router it computes them (its default), as the router places by them;",
              "- a node decodes an exact-only miss for the model alone: the pHash and the verifier's thumbnail, "
              "which only perceptual reuse reads, are computed only where they are written (since 6c3f2bd)."]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x480", help="JPEG size, WxH")
    p.add_argument("--requests", type=int, default=400, help="requests per run")
    p.add_argument("--concurrency", type=int, default=16, help="callers at once")
    p.add_argument("--reps", type=int, default=3, help="reps: every workload on every side in each")
    p.add_argument("--threads", type=int, default=2, help="torch threads on every side")
    p.add_argument("--decode-threads", type=int, default=2, help="decode threads on every side")
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--out", type=Path, default=RESULTS, help="where peers.json and peers.md go")
    a = p.parse_args(argv)
    size = tuple(int(x) for x in a.size.split("x"))
    result = {**report.provenance(argv, "bench.peers"),
              **compare(scratch_dir("ringserve-peers-"), size, a.requests, a.concurrency, a.reps, a.threads,
                        a.decode_threads, tuple(a.sides), tuple(a.workloads), report.progress_printer())}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "peers.json").write_text(json.dumps(result, indent=2) + "\n")
    text = "\n".join(["# ringserve against Ray Serve and Triton, one replica each, each with its cache", "",
                      report.header(result), *markdown(result)]) + "\n"
    (a.out / "peers.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
