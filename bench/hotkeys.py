"""Hot keys: the router's bounded-load spill rules (``--spill``) under a Zipf workload with a hot head (issue 20).

    python -m bench.hotkeys [--requests 6000] [--keys 600] [--exponent 1.2] [--concurrency 32] [--reps 3]
                            [--size 320x240] [--spills clockwise,jump,hot] [--models mobilenet_v3_small]
                            [--load-factor 1.25] [--min-load 8] [--out bench/results]

Redis, three nodes (node-0..2) and one router per spill rule over the same nodes, each router with its own
``--spill`` (contract/ring.py's ``Spill``: ``clockwise``, the next node clockwise; ``jump``, pseudo-random jumps
per key, Chen et al. 2021 and Envoy; ``hot``, a hot key on the less loaded of its first two nodes). Each run sends
``--requests`` requests drawn from a bounded Zipf law with ``--exponent`` over ``--keys`` images
(``bench.workload.zipf_workload``, rank 1 hottest, ranks permuted over the images) through one router, from
``--concurrency`` asyncio callers sharing one ``AsyncClient`` (each sends its next request, one image, when its
last is answered). Every run uses images no node has seen (``bench.photos.photo`` with seeds never used before in
the process), so L1 and Redis start cold for each run; within a rep every rule gets the same Zipf sequence over its
own images (so the hot images sit at other ring points for each rule: reps average that out). The rules run
interleaved, the one going first rotating each rep.

Reported per rule (median and min-max over reps): L1 hit ratio (items answered from the answering node's L1),
max/mean of the items each node answered (``provenance.node``; a node that answered none counts as 0), p50/p99
latency of one request, items/s, and model runs (items answered ``computed``). Writes hotkeys.{json,md} into
``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench import report
from bench.photos import photo
from bench.workload import ms, zipf_workload
from ringserve.client import AsyncClient
from ringserve.contract.ring import DEFAULT_LOAD_FACTOR, DEFAULT_MIN_LOAD, Spill
from ringserve.local.cluster import LocalCluster
from ringserve.local.processes import RedisProcess, RouterProcess, scratch_dir

NODES = ("node-0", "node-1", "node-2")
MODEL = "mobilenet_v3_small"


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


@contextlib.contextmanager
def cluster(work: Path, models: str, spills: list[Spill], load_factor: float, min_load: int,
            progress) -> Iterator[dict[Spill, str]]:
    """Redis, the three nodes and one router per spill rule; yields each rule's router address."""
    redis = RedisProcess(work / "redis").start()
    local = LocalCluster(work / "ringserve", redis.url,
                         node_args=["--models", models, "--drain-delay-s", "0"])
    routers: dict[Spill, RouterProcess] = {}
    try:
        local.add(*NODES)
        for spill in spills:
            router = RouterProcess(local.workdir, router_id=f"router-{spill}", members_file=local.members_file,
                                   args=["--members-interval-s", "0.1", "--drain-delay-s", "0",
                                         "--spill", str(spill), "--load-factor", str(load_factor),
                                         "--min-load", str(min_load)])
            routers[spill] = router
            router.start()
            router.wait_members(len(NODES))
            progress(f"router --spill {spill}: {router.target}")
        yield {spill: router.target for spill, router in routers.items()}
    finally:
        for router in routers.values():
            router.stop(15)
        local.stop()
        redis.stop()


async def run(target: str, images: list[bytes], order: list[int], concurrency: int) -> dict:
    """Send ``order`` (indexes into ``images``) from ``concurrency`` callers; what came back, and how fast."""
    sources: Counter = Counter()
    nodes: Counter = Counter()
    latencies: list[float] = []
    failed = 0
    queue = iter(order)
    async with AsyncClient(target) as client:
        async def caller() -> None:
            nonlocal failed
            for i in queue:  # shared: each caller takes the next request when its last is answered
                t = time.perf_counter()
                (reply,) = await client.extract_detailed([images[i]])
                latencies.append(time.perf_counter() - t)
                if isinstance(reply, Exception):
                    failed += 1
                    continue
                sources[reply.provenance.source] += 1
                nodes[reply.provenance.node] += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    answered = sum(sources.values())
    per_node = [nodes.get(n, 0) for n in NODES] + [c for n, c in nodes.items() if n not in NODES]
    mean = statistics.fmean(per_node) if per_node else 0.0
    return {"requests": len(order), "answered": answered, "failed": failed,
            "l1_ratio": round(sources["l1"] / answered, 4) if answered else 0.0,
            "l1": sources["l1"], "l2": sources["l2"], "computed": sources["computed"],
            "per_node": dict(sorted(nodes.items())),
            "max_mean": round(max(per_node) / mean, 3) if mean else 0.0,
            "p50_ms": ms(latencies, 50), "p99_ms": ms(latencies, 99),
            "items_per_s": round(answered / elapsed, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hotkeys", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=6000, help="requests per run")
    ap.add_argument("--keys", type=int, default=600, help="distinct images in each run's working set")
    ap.add_argument("--exponent", type=float, default=1.2, help="Zipf exponent (0: uniform)")
    ap.add_argument("--concurrency", type=int, default=32, help="callers at once")
    ap.add_argument("--reps", type=int, default=3, help="runs of every rule")
    ap.add_argument("--size", type=parse_size, default=(320, 240), help="image size WxH")
    ap.add_argument("--spills", default=",".join(s.value for s in Spill),
                    help="comma-separated spill rules to compare")
    ap.add_argument("--models", default=MODEL, help="the nodes' --models")
    ap.add_argument("--load-factor", type=float, default=DEFAULT_LOAD_FACTOR, help="every router's --load-factor")
    ap.add_argument("--min-load", type=int, default=DEFAULT_MIN_LOAD, help="every router's --min-load")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first rep's Zipf sequence")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args(argv)
    spills = [Spill(s) for s in args.spills.split(",") if s]
    progress = report.progress_printer()
    meta = report.provenance(argv, "bench.hotkeys")
    meta["images"] = {"source": "bench.photos.photo", "size": f"{args.size[0]}x{args.size[1]}",
                      "count": args.keys * len(spills) * args.reps,
                      "per_run": args.keys, "note": "fresh images for every run (cold caches)"}
    meta["workload"] = {"requests": args.requests, "keys": args.keys, "exponent": args.exponent,
                        "concurrency": args.concurrency, "reps": args.reps, "seed": args.seed,
                        "load_factor": args.load_factor, "min_load": args.min_load, "nodes": len(NODES),
                        "models": args.models}
    runs: dict[str, list[dict]] = {s.value: [] for s in spills}
    next_seed = 1_000_000  # image seeds: a fresh range for every run
    work = scratch_dir("ringserve-hotkeys-")
    progress(f"work dir (logs): {work}")
    with cluster(work, args.models, spills, args.load_factor, args.min_load,
                 progress) as targets:
        for rep in range(args.reps):
            order = zipf_workload(args.requests, args.keys, args.exponent, seed=args.seed + rep)
            turn = rep % len(spills)
            for spill in spills[turn:] + spills[:turn]:
                images = [photo(next_seed + k, args.size) for k in range(args.keys)]
                next_seed += args.keys
                result = asyncio.run(run(targets[spill], images, order, args.concurrency))
                runs[spill.value].append(result)
                progress(f"rep {rep + 1}/{args.reps} {spill}: L1 {result['l1_ratio']:.3f}, max/mean "
                         f"{result['max_mean']}, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
                         f"{result['items_per_s']} items/s, computed {result['computed']}, failed {result['failed']}")
    shutil.rmtree(work, ignore_errors=True)  # kept when a run failed: the processes' logs are in it
    summary = {name: {key: report.spread([r[key] for r in rs], digits=3 if key in ("l1_ratio", "max_mean") else 2)
                      for key in ("l1_ratio", "max_mean", "p50_ms", "p99_ms", "items_per_s", "computed")}
               for name, rs in runs.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hotkeys.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2)
                                           + "\n")
    (args.out / "hotkeys.md").write_text(markdown(meta, summary))
    progress(f"wrote {args.out / 'hotkeys.md'} and hotkeys.json")
    return 0


def markdown(meta: dict, summary: dict) -> str:
    w, images = meta["workload"], meta["images"]
    lines = ["# Hot keys: bounded-load spill rules under Zipf", "", report.header(meta),
             f"Images: {images['count']} distinct {images['size']} JPEGs made by {images['source']}, "
             f"{images['per_run']} fresh ones per run (cold L1 and Redis for each run).",
             "",
             f"Workload: {w['requests']} requests per run, Zipf exponent {w['exponent']} over {w['keys']} images, "
             f"{w['concurrency']} callers, {w['nodes']} nodes ({w['models']}), one router per rule with "
             f"--load-factor {w['load_factor']} --min-load {w['min_load']}; {w['reps']} reps, rules interleaved. "
             "Median (min-max) over reps.", "",
             "| --spill | L1 hit ratio | max/mean items per node | p50 ms | p99 ms | items/s | model runs |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| `{name}` | {report.cell(s['l1_ratio'])} | {report.cell(s['max_mean'])} | "
                     f"{report.cell(s['p50_ms'])} | {report.cell(s['p99_ms'])} | {report.cell(s['items_per_s'])} | "
                     f"{report.cell(s['computed'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
