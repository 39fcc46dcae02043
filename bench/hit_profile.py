"""Where a node's time goes on an L1 hit: the request path in process, step by step.

    python -m bench.hit_profile [--images 256] [--rounds 20]

The node's real servicer in this process (mobilenet_v3_small, random weights: the
model runs only to fill L1), every image already in L1; each step of the hit path timed alone over the same items, and a
cProfile of the whole, its top functions by own time. No gRPC: this is the Python work a
node does per item, what frames cannot amortise. Writes bench/results/hit_profile.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


async def profile(images: int, rounds: int) -> tuple[list[tuple[str, float]], str]:
    from concurrent.futures import ThreadPoolExecutor

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from ringserve.contract.v1 import inference_pb2 as pb
    from ringserve.local.imagegen import jpeg
    from ringserve.runtime.edge import EXTRACT
    from ringserve.server import keys, models
    from ringserve.server.batcher import Batcher, BatcherConfig
    from ringserve.server.cache import ModelSlot
    from ringserve.server.l1 import L1, L1Config
    from ringserve.server.l2 import NoL2
    from ringserve.server.metrics import Metrics
    from ringserve.server.servicer import InferenceServicer
    from ringserve.server.settings import NodeLimits, PolicyConfig

    model = models.load(models.ModelConfig("mobilenet_v3_small"))
    slot = ModelSlot(model, Batcher(model.features, BatcherConfig()), Batcher(model.scores_batch, BatcherConfig()))
    node = InferenceServicer("profile", {model.name: slot}, model.name, L1(L1Config()), NoL2(), NodeLimits(),
                             PolicyConfig(), ThreadPoolExecutor(2),
                             # a reader attached, as a node's Prometheus reader is: without one, measurements cost little
                             Metrics(MeterProvider(metric_readers=[InMemoryMetricReader()]), "profile"))
    slot.batcher.start()
    slot.head.start()
    requests = [pb.ImageRequest(request_id=str(i), image=jpeg(i)) for i in range(images)]

    def item(r: pb.ImageRequest) -> Awaitable[object]:
        return node.item(r, EXTRACT)

    for r in requests:  # every image into L1
        await item(r)

    async def per_item_us(fn: Callable[[pb.ImageRequest], Awaitable[object]]) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            for r in requests:
                await fn(r)
        return (time.perf_counter() - started) / (rounds * len(requests)) * 1e6

    async def digest(r: pb.ImageRequest) -> None:
        keys.exact_digest(r.image)

    async def latency(r: pb.ImageRequest) -> None:
        node.metrics.latency.record(0.001, node.metrics.attrs(method="extract", source="l1"))

    steps = [
        ("the whole item (the edge's item: admission, status, metrics)", item),
        ("answer it (the node's answer: path and reply)", lambda r: node.answer(r, EXTRACT, None, None)),
        ("find it (_feature)", lambda r: node._feature(r, slot)),
        ("exact digest (BLAKE3)", digest),
        ("latency histogram, one record", latency),
    ]
    timings = [(name, await per_item_us(fn)) for name, fn in steps]
    profiler = cProfile.Profile()
    profiler.enable()
    for r in requests:
        await item(r)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return timings, out.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hit_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    timings, top = asyncio.run(profile(args.images, args.rounds))
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    lines = ["# Where a node's time goes on an L1 hit", "",
             f"`python -m bench.hit_profile --images {args.images} --rounds {args.rounds}` at {commit}, in process "
             "(no gRPC), one run on this machine.", "",
             "| step | microseconds per item |", "| --- | --- |"]
    lines += [f"| {name} | {us:.1f} |" for name, us in timings]
    lines += ["", "Top functions by own time (cProfile inflates small calls):", "", "```",
              *[line for line in top.splitlines() if line.strip()][:22], "```"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hit_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
