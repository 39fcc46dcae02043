"""One node against the bare model loop on the same images, and L1/L2 hit latency.

    python -m bench.node_bench [--model mobilenet_v3_small] [--images 96]

Side by side in one run on this machine: (1) the model alone in a loop (decode,
preprocess, backbone in batches of --max-batch, in this process); (2) the same
images through a real node over gRPC with the cache bypassed, all misses; (3)
L1 hits and (4) L2 hits (a second node with an empty L1), one image per call.
Writes bench/results/node.json and node.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench import report
from bench.workload import ms
from ringserve.client import Client
from ringserve.contract.images import decode
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import NodeProcess, RedisProcess, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"


def rate(fn, count: int, reps: int) -> float:
    """Median images/s of ``reps`` runs of fn(rep)."""
    rates = []
    for rep in range(reps):
        started = time.perf_counter()
        fn(rep)
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def bare_loop(model_name: str, images: list[bytes], batch: int, reps: int) -> float:
    from ringserve.server.models import ModelConfig, load

    model = load(ModelConfig(name=model_name))
    model.features([model.preprocess(decode(b)) for b in images[:batch]])  # warm-up

    def run(_rep: int) -> None:
        for i in range(0, len(images), batch):
            model.features([model.preprocess(decode(b)) for b in images[i : i + batch]])

    return rate(run, len(images), reps)


def one_by_one(client: Client, images: list[bytes], expect: str) -> list[float]:
    times = []
    for image in images:
        started = time.perf_counter()
        r = client.extract_detailed([image], hints=False)[0]
        times.append(time.perf_counter() - started)
        assert r.provenance.source == expect, (expect, r.provenance.source)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenet_v3_small")
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=3, help="runs per measure; the median is reported")
    a = p.parse_args(argv)
    images = [jpeg(10_000 + i, size=(256, 256)) for i in range(a.images)]
    cold_sets = [[jpeg(20_000 + 1000 * r + i, size=(256, 256)) for i in range(a.images)] for r in range(a.reps)]
    work = scratch_dir("ringserve-bench-")
    print(f"bare model loop on {a.images} images ...", flush=True)
    bare = bare_loop(a.model, images, a.max_batch, a.reps)
    redis = RedisProcess(work / "redis").start()
    args = ["--models", a.model, "--redis-url", redis.url, "--max-batch", str(a.max_batch), "--drain-delay-s", "0"]
    node = NodeProcess(work, "bench-a", args).start()
    try:
        with Client(node.target, window=64) as c:
            c.extract_detailed(images[: a.max_batch * 2], cache_mode="bypass")  # warm-up
            print("through the node, cache bypassed ...", flush=True)
            served = rate(lambda _r: c.extract_detailed(images, cache_mode="bypass", hints=False), a.images, a.reps)
            print("cold cache (computes and writes both tiers) ...", flush=True)
            cold = rate(lambda r: c.extract_detailed(cold_sets[r], hints=False), a.images, a.reps)
            c.extract_detailed(images, hints=False)
            print("L1 hits, one image per call ...", flush=True)
            l1 = one_by_one(c, images, "l1")
            l1_stream = rate(lambda _r: c.extract_detailed(images, hints=False), a.images, a.reps)
        node.stop()
        node = NodeProcess(work, "bench-b", args).start()
        with Client(node.target) as c:
            print("L2 hits on a fresh node, one image per call ...", flush=True)
            l2 = one_by_one(c, images, "l2")
    finally:
        node.stop()
        redis.stop()
    result = {
        **report.provenance(argv, "bench.node_bench"),
        "model": a.model, "images": a.images, "reps_median_of": a.reps, "image_size": "256x256 JPEG", "max_batch": a.max_batch,
        "where": "node and bench client on the same machine",
        "bare_model_images_per_s": round(bare, 1),
        "node_bypass_images_per_s": round(served, 1),
        "node_vs_bare_ratio": round(served / bare, 3),
        "node_cold_cache_images_per_s": round(cold, 1),
        "node_all_l1_hits_stream_images_per_s": round(l1_stream, 1),
        "l1_hit_ms_p50": ms(l1, 50), "l1_hit_ms_p99": ms(l1, 99),
        "l2_hit_ms_p50": ms(l2, 50), "l2_hit_ms_p99": ms(l2, 99),
        "l1_hit_ms_mean": round(statistics.mean(l1) * 1000, 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "node.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {v} |" for k, v in result.items() if k not in ("command", "commit", "date", "versions"))
    (RESULTS / "node.md").write_text(f"# One node against the bare model loop\n\n{report.header(result)}\n"
                                     f"| measure | value |\n| --- | --- |\n{rows}\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
