"""The ring against round-robin over the same 4 nodes, and the router's added latency.

    python -m bench.router_bench [--nodes 4] [--images 200] [--requests 1000] [--windows 32 8]

Workload: a fixed set of distinct images requested over and over in random
order (each image ~requests/images times), sent through the router with a
window of 32 items in flight (a busy cluster), then 8 (a quiet one). For each
window and placement policy the nodes start fresh (empty L1) over an emptied
Redis, so the policies see the same cold start. Reports the share of replies
served from L1, L2 and computed, and throughput. Then, on warm caches, single
image calls: L1 hit direct to its node against the same hit through the router.
Writes bench/results/router.json and router.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import redis as redis_py

from bench import report
from bench.workload import drive, ms
from ringserve.client import Client
from ringserve.local.cluster import LocalCluster
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import NodeProcess, RedisProcess, RouterProcess, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = {
    "ring c=1.25": ["--policy", "ring", "--load-factor", "1.25", "--min-load", "1"],
    "ring c=1.25, min load 8": ["--policy", "ring", "--load-factor", "1.25", "--min-load", "8"],
    "ring c=2.0": ["--policy", "ring", "--load-factor", "2.0", "--min-load", "1"],
    "round-robin": ["--policy", "round-robin"],
}


def run_policy(work: Path, label: str, args: list[str], nodes_n: int, redis: RedisProcess, images: list[bytes],
               order: list[int], window: int, measure_latency: bool):
    redis_py.Redis(port=redis.port).flushall()
    cluster = LocalCluster(work / f"{label} w{window}", redis.url, node_args=["--drain-delay-s", "0"],
                           router_args=[*args, "--drain-delay-s", "0"])
    try:
        cluster.add(*[f"node-{i}" for i in range(nodes_n)])
        router = cluster.start_router()
        stats = drive(router.target, images, order, window=window)
        latency = router_latency(router, list(cluster.nodes.values()), images[:50]) if measure_latency else None
    finally:
        cluster.stop()
    total = stats["l1"] + stats["l2"] + stats["computed"]
    return {
        "l1_hit_rate": round(stats["l1"] / total, 4), "l2_hit_rate": round(stats["l2"] / total, 4),
        "computed_share": round(stats["computed"] / total, 4), "images_per_s": stats["images_per_s"],
    }, latency


def router_latency(router: RouterProcess, nodes: list[NodeProcess], images: list[bytes]) -> dict:
    """One image per call, every one an L1 hit: direct to the owning node, then through the router."""
    by_name = {n.node_id: n for n in nodes}
    with Client(router.target, window=1) as via_router:  # one at a time: no spill under bounded loads
        owners = [r.provenance.node for r in via_router.extract_detailed(images)]
    direct_clients = {name: Client(node.target) for name, node in by_name.items()}
    direct, routed = [], []
    try:
        with Client(router.target) as via_router:
            for _rep in range(3):
                for image, owner in zip(images, owners, strict=True):
                    t = time.perf_counter()
                    assert direct_clients[owner].extract_detailed([image], hints=True)[0].provenance.source == "l1"
                    direct.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    r = via_router.extract_detailed([image], hints=True)[0]
                    routed.append(time.perf_counter() - t)
                    assert r.provenance.source == "l1" and r.provenance.node == owner
    finally:
        for c in direct_clients.values():
            c.close()
    return {"direct_l1_ms_p50": ms(direct, 50), "direct_l1_ms_p99": ms(direct, 99),
            "router_l1_ms_p50": ms(routed, 50), "router_l1_ms_p99": ms(routed, 99),
            "router_added_ms_p50": round(ms(routed, 50) - ms(direct, 50), 2), "calls": len(direct)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--windows", type=int, nargs="+", default=[32, 8], help="items in flight, one run per window")
    a = p.parse_args(argv)
    rng = random.Random(0)
    images = [jpeg(50_000 + i, size=(160, 160)) for i in range(a.images)]
    order = [rng.randrange(a.images) for _ in range(a.requests)]
    work = scratch_dir("ringserve-bench-router-")
    redis = RedisProcess(work / "redis").start()
    result: dict = {**report.provenance(argv, "bench.router_bench"), "nodes": a.nodes, "distinct_images": a.images,
                    "requests": a.requests,
                    "workload": "uniform random repeats of a fixed image set, one stream, cold start",
                    "ideal_l1_hit_rate": round(1 - len(set(order)) / len(order), 4), "runs": []}
    try:
        for window in a.windows:
            for label, args in POLICIES.items():
                print(f"window {window}, {label} ...", flush=True)
                stats, latency = run_policy(work, label, args, a.nodes, redis, images, order, window,
                                            label == "ring c=1.25" and window == a.windows[0])
                result["runs"].append({"window": window, "placement": label, **stats})
                if latency:
                    result["latency"] = latency
    finally:
        redis.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "router.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {r['window']} | {r['placement']} | {r['l1_hit_rate']} | {r['l2_hit_rate']} | {r['computed_share']} "
            f"| {r['images_per_s']} |" for r in result["runs"]]
    lat = result["latency"]
    (RESULTS / "router.md").write_text(
        f"# Ring against round-robin over {a.nodes} nodes\n\n{report.header(result)}\n{result['workload']}; {a.images} images, "
        f"{a.requests} requests (best possible L1 hit rate {result['ideal_l1_hit_rate']}).\n\n"
        "| items in flight | placement | L1 hit rate | L2 hit rate | computed | images/s |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + f"\n\nL1 hit, one image per call ({lat['calls']} calls): direct p50 {lat['direct_l1_ms_p50']} ms, "
        f"p99 {lat['direct_l1_ms_p99']} ms; through the router p50 {lat['router_l1_ms_p50']} ms, "
        f"p99 {lat['router_l1_ms_p99']} ms; the router adds {lat['router_added_ms_p50']} ms at p50.\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
