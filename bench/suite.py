"""The benchmark suite: every figure a ratio measured side by side in one run, on this machine.

    python -m bench.suite [--quick]

Writes bench/results/suite.json, suite.md and PNG plots. Sections:
  tiers     no cache / L1 / Redis (an L1 too small to hold a feature) at 92% repeats,
            mobilenet_v3_small and resnet50, against the Amdahl bound for that hit rate; each row
            shows the tiers that answered it
  placement ring against round-robin over 4 nodes whose L1 holds about a quarter of the working set
  system    router + node against the same model in a loop in-process, all misses
  ring      keys moved on +1/-1 member, max/mean load for 4..10 members with and without bounded loads
  latency   L1 hit through the router and direct to the node, p50/p99
  batching  dynamic batcher throughput by max batch size on this CPU (and CUDA when present)
then, unless skipped, the fidelity study (bench/fidelity.py) and the peers (bench/peers.py: Ray Serve, Triton),
each writing its own table next to these.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench import report
from bench.node_bench import bare_loop
from bench.router_bench import router_latency
from bench.workload import drive, repeats_workload
from ringserve.local.cluster import LocalCluster
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import NodeProcess, RedisProcess, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"
# One image's bytes in L1 under the default exact policy: its float16 feature and the entry's overhead (a perceptual
# twin is kept only where perceptual reuse is used, server/cache.py).
L1_BYTES_PER_IMAGE = {"mobilenet_v3_small": 576 * 2 + 200, "resnet50": 2048 * 2 + 200}


# ---- tiers ------------------------------------------------------------------------------------


def tiers(work: Path, model: str, requests: int) -> dict:
    order = repeats_workload(requests, 0.92)
    distinct = max(order) + 1
    images = [jpeg(60_000 + i, size=(224, 224)) for i in range(distinct)]
    redis = RedisProcess(work / f"redis-{model}").start()
    out: dict = {"model": model, "requests": requests, "distinct": distinct,
                 "hit_rate_possible": round(1 - distinct / requests, 4)}
    try:
        for mode, args, options in (
            ("no cache", [], {"cache_mode": "bypass"}),
            ("L1", [], {}),
            # One node holds every image in its L1, so with an L1 as well Redis would never be read:
            # an L1 of 1 KB (no feature fits) makes every repeat a Redis hit.
            ("Redis", ["--redis-url", redis.url, "--l1-max-bytes", "1K"], {}),
        ):
            node = NodeProcess(work / model, f"tiers-{mode.replace(' ', '').replace('+', '')}",
                               ["--models", model, "--drain-delay-s", "0", "--metrics-port", "0", *args], metrics_port=0)
            node.start()
            try:
                drive(node.target, images, list(range(min(8, distinct))), cache_mode="bypass")  # warm-up
                out[mode] = drive(node.target, images, order, **options)
            finally:
                node.stop()
    finally:
        redis.stop()
    base = out["no cache"]["images_per_s"]
    miss_share = distinct / requests
    # Amdahl: only misses need the model; with free hits the speed-up is at most 1 / miss share.
    out["amdahl_speedup_bound"] = round(1 / miss_share, 2)
    for mode in ("L1", "Redis"):
        speedup = out[mode]["images_per_s"] / base
        out[mode]["speedup"] = round(speedup, 2)
        out[mode]["share_of_bound"] = round(speedup / out["amdahl_speedup_bound"], 3)
    return out


# ---- placement --------------------------------------------------------------------------------


def placement(work: Path, nodes: int = 4, working_set: int = 400, requests: int = 2400) -> dict:
    model = "mobilenet_v3_small"
    l1_bytes = L1_BYTES_PER_IMAGE[model] * working_set // 4
    rng = random.Random(1)
    images = [jpeg(70_000 + i, size=(128, 128)) for i in range(working_set)]
    order = [rng.randrange(working_set) for _ in range(requests)]
    out: dict = {"nodes": nodes, "working_set": working_set, "requests": requests,
                 "l1_per_node": "a quarter of the working set"}
    redis = RedisProcess(work / "redis-placement").start()
    try:
        for policy in ("ring", "round-robin"):
            import redis as redis_py

            redis_py.Redis(port=redis.port).flushall()
            cluster = LocalCluster(work / f"placement-{policy}", redis.url,
                                   node_args=["--models", model, "--l1-max-bytes", str(l1_bytes), "--drain-delay-s", "0"],
                                   router_args=["--policy", policy, "--drain-delay-s", "0"])
            try:
                cluster.add(*[f"node-{i}" for i in range(nodes)])
                cluster.start_router()
                drive(cluster.router.target, images, order[:400])  # warm L1 and Redis
                before = sum(n.metric("ringserve_cache_lookups_total", tier="l2") for n in cluster.nodes.values())
                stats = drive(cluster.router.target, images, order[400:])
                after = sum(n.metric("ringserve_cache_lookups_total", tier="l2") for n in cluster.nodes.values())
                total = stats["l1"] + stats["l2"] + stats["computed"]
                out[policy] = {"l1_hit_rate": round(stats["l1"] / total, 4), "redis_reads": int(after - before),
                               "redis_reads_per_item": round((after - before) / total, 3),
                               "images_per_s": stats["images_per_s"]}
            finally:
                cluster.stop()
    finally:
        redis.stop()
    return out


# ---- the system against the bare model ----------------------------------------------------------


def system_cost(work: Path, model: str = "mobilenet_v3_small", count: int = 160) -> dict:
    images = [jpeg(80_000 + i, size=(256, 256)) for i in range(count)]
    bare = bare_loop(model, images, 16, reps=3)
    cluster = LocalCluster(work / "system", None, node_args=["--models", model, "--drain-delay-s", "0"],
                           router_args=["--drain-delay-s", "0"])
    try:
        cluster.add("node-0")
        router = cluster.start_router()
        drive(router.target, images[:32], list(range(32)), cache_mode="bypass")
        via_router = [drive(router.target, images, list(range(count)), window=64, cache_mode="bypass")["images_per_s"]
                      for _ in range(3)]
        direct = [drive(cluster.nodes["node-0"].target, images, list(range(count)), window=64,
                        cache_mode="bypass")["images_per_s"] for _ in range(3)]
        latency = router_latency(router, list(cluster.nodes.values()), images[:40])
    finally:
        cluster.stop()
    return {"model": model, "images": count, "bare_loop_images_per_s": round(bare, 1),
            "node_images_per_s": round(float(np.median(direct)), 1),
            "router_node_images_per_s": round(float(np.median(via_router)), 1),
            "router_node_vs_bare": round(float(np.median(via_router)) / bare, 3),
            "node_vs_bare": round(float(np.median(direct)) / bare, 3), "latency": latency}


# ---- the ring alone ---------------------------------------------------------------------------


def ring_properties() -> dict:
    from ringserve.contract.ring import Ring

    rng = random.Random(2)
    keys = [rng.getrandbits(64) for _ in range(20_000)]
    rows = []
    for n in range(4, 11):
        members = {f"node-{i}": 1 for i in range(n)}
        base = Ring(members)
        plus = Ring({**members, f"node-{n}": 1})
        minus = Ring({k: 1 for k in list(members)[:-1]})
        owners = [base.owner(k) for k in keys]
        moved_plus = sum(1 for k, o in zip(keys, owners, strict=True) if plus.owner(k) != o) / len(keys)
        moved_minus = sum(1 for k, o in zip(keys, owners, strict=True) if minus.owner(k) != o) / len(keys)
        # skewed in-flight load: Zipf-like popularity, 20 * n items in flight
        hot = [rng.getrandbits(64) for _ in range(50)]
        weights = [1 / (i + 1) for i in range(50)]
        stream = rng.choices(hot, weights=weights, k=20 * n)
        shares = {}
        for label, factor in (("without", None), ("with c=1.25", 1.25)):
            ring = Ring(members, load_factor=factor or 1.0)
            loads: Counter = Counter()
            for k in stream:
                node = ring.owner(k) if factor is None else ring.place(k, loads)
                loads[node] += 1
            shares[label] = round(max(loads.values()) / (len(stream) / n), 2)
        rows.append({"members": n, "moved_on_add": round(moved_plus, 4), "ideal_add": round(1 / (n + 1), 4),
                     "moved_on_remove": round(moved_minus, 4), "ideal_remove": round(1 / n, 4),
                     "max_over_mean_without_bounded_loads": shares["without"],
                     "max_over_mean_with_bounded_loads": shares["with c=1.25"]})
    return {"rows": rows, "keys": len(keys), "skewed_workload": "Zipf(1) over 50 hot keys, 20 items in flight per node"}


# ---- batching ---------------------------------------------------------------------------------


def batching(model_name: str = "mobilenet_v3_small", items: int = 192) -> dict:
    import torch

    from ringserve.contract.images import decode
    from ringserve.server.batcher import Batcher, BatcherConfig
    from ringserve.server.models import ModelConfig, load

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    images = [jpeg(90_000 + i, size=(224, 224)) for i in range(32)]
    out: dict = {"model": model_name, "items": items, "concurrent_callers": 64}
    for device in devices:
        model = load(ModelConfig(name=model_name, device=device))
        tensors = [model.preprocess(decode(b)) for b in images]
        model.features(tensors[:8])
        rows = []
        for max_batch in (1, 2, 4, 8, 16, 32):
            async def run(max_batch: int = max_batch, model=model, tensors=tensors) -> float:
                batcher = Batcher(model.features, BatcherConfig(max_batch=max_batch, max_delay_ms=5, max_queue=1024))
                batcher.start()
                sem = asyncio.Semaphore(64)

                async def one(i: int) -> None:
                    async with sem:
                        await batcher.submit(tensors[i % len(tensors)])

                started = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(items)))
                elapsed = time.perf_counter() - started
                await batcher.close()
                return items / elapsed

            rows.append({"max_batch": max_batch, "images_per_s": round(asyncio.run(run()), 1)})
        base = rows[0]["images_per_s"]
        for row in rows:
            row["vs_batch_1"] = round(row["images_per_s"] / base, 2)
        out[device] = rows
    return out


# ---- report -----------------------------------------------------------------------------------


def plots(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    modes = ["no cache", "L1", "Redis"]
    width = 0.35
    for i, t in enumerate(result["tiers"]):
        axes[0].bar(np.arange(3) + i * width, [t[m]["images_per_s"] for m in modes], width, label=t["model"])
    axes[0].set_xticks(np.arange(3) + width / 2, modes)
    axes[0].set(ylabel="images/s", title="Cache tiers at 92% repeats")
    axes[0].legend()
    rows = result["ring"]["rows"]
    axes[1].plot([r["members"] for r in rows], [r["max_over_mean_without_bounded_loads"] for r in rows], marker="o",
                 label="plain ring")
    axes[1].plot([r["members"] for r in rows], [r["max_over_mean_with_bounded_loads"] for r in rows], marker="o",
                 label="bounded loads c=1.25")
    axes[1].set(xlabel="members", ylabel="max / mean load", title="Hot keys: busiest node")
    axes[1].legend()
    for device in ("cpu", "cuda"):
        if device in result["batching"]:
            b = result["batching"][device]
            axes[2].plot([r["max_batch"] for r in b], [r["images_per_s"] for r in b], marker="o", label=device)
    axes[2].set(xscale="log", xlabel="max batch", ylabel="images/s", title="Dynamic batcher")
    axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "suite.png", dpi=110)


def markdown(r: dict) -> str:
    lines = ["# ringserve benchmark suite", "", report.header(r),
             "Every row is measured side by side in this one run; compare ratios, not absolute numbers.", ""]
    lines += ["## Cache tiers at 92% repeats", "",
              "| model | mode | answered from L1 / Redis / computed | images/s | p50 ms (stream of 16) | p99 ms "
              "| speed-up | of the Amdahl bound |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t in r["tiers"]:
        for m in ("no cache", "L1", "Redis"):
            s = t[m]
            lines.append(f"| {t['model']} | {m} | {s['l1']} / {s['l2']} / {s['computed']} | {s['images_per_s']} "
                         f"| {s['batch_ms_p50']} | {s['batch_ms_p99']} | {s.get('speedup', 1.0)} "
                         f"| {s.get('share_of_bound', '')} |")
        lines.append(f"| {t['model']} | Amdahl bound ({t['distinct']} misses in {t['requests']}) | | | | | "
                     f"{t['amdahl_speedup_bound']} | 1 |")
    p = r["placement"]
    lines += ["", f"## Ring against round-robin ({p['nodes']} nodes, L1 = {p['l1_per_node']}, "
              f"{p['working_set']} images, {p['requests']} requests)", "",
              "| placement | L1 hit rate | Redis reads per item | images/s |", "| --- | --- | --- | --- |"]
    for policy in ("ring", "round-robin"):
        s = p[policy]
        lines.append(f"| {policy} | {s['l1_hit_rate']} | {s['redis_reads_per_item']} | {s['images_per_s']} |")
    s = r["system"]
    lat = s["latency"]
    lines += ["", f"## The system against the bare model ({s['model']}, all misses)", "",
              "| path | images/s | ratio to the bare loop |", "| --- | --- | --- |",
              f"| model in a loop in-process | {s['bare_loop_images_per_s']} | 1 |",
              f"| client -> node | {s['node_images_per_s']} | {s['node_vs_bare']} |",
              f"| client -> router -> node | {s['router_node_images_per_s']} | {s['router_node_vs_bare']} |",
              "", "## L1 hit latency, one image per call", "", "| path | p50 ms | p99 ms |", "| --- | --- | --- |",
              f"| direct to the node | {lat['direct_l1_ms_p50']} | {lat['direct_l1_ms_p99']} |",
              f"| through the router | {lat['router_l1_ms_p50']} | {lat['router_l1_ms_p99']} |"]
    lines += ["", f"## The ring ({r['ring']['keys']} keys; hot-key workload: {r['ring']['skewed_workload']})", "",
              "| members | moved on +1 | ideal 1/(N+1) | moved on -1 | ideal 1/N | max/mean, plain | max/mean, c=1.25 |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["ring"]["rows"]:
        lines.append(f"| {row['members']} | {row['moved_on_add']} | {row['ideal_add']} | {row['moved_on_remove']} | "
                     f"{row['ideal_remove']} | {row['max_over_mean_without_bounded_loads']} | "
                     f"{row['max_over_mean_with_bounded_loads']} |")
    b = r["batching"]
    lines += ["", f"## Dynamic batcher ({b['model']}, {b['items']} items, {b['concurrent_callers']} callers)", "",
              "| device | max batch | images/s | vs batch 1 |", "| --- | --- | --- | --- |"]
    for device in ("cpu", "cuda"):
        for row in b.get(device, []):
            lines.append(f"| {device} | {row['max_batch']} | {row['images_per_s']} | {row['vs_batch_1']} |")
    if "cuda" not in b:
        lines.append("\nNo GPU on this machine: the CUDA sweep runs when one is present.")
    lines += ["", "![suite](suite.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run, not for reporting)")
    p.add_argument("--skip-resnet50", action="store_true", help="tiers with mobilenet_v3_small only")
    p.add_argument("--skip-fidelity", action="store_true", help="do not run bench.fidelity after the suite")
    p.add_argument("--skip-peer", action="store_true", help="do not run bench.peers (Ray Serve, Triton) after the suite")
    a = p.parse_args(argv)

    work = scratch_dir("ringserve-suite-")
    scale = 4 if a.quick else 1
    result: dict = report.provenance(argv, "bench.suite")
    steps = [("ring", ring_properties), ("batching", batching),
             ("tiers", lambda: [tiers(work, "mobilenet_v3_small", 600 // scale)]
              + ([] if a.skip_resnet50 else [tiers(work, "resnet50", 250 // scale)])),
             ("placement", lambda: placement(work, requests=2400 // scale)),
             ("system", lambda: system_cost(work, count=160 // scale))]
    for name, step in steps:
        started = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        result[name] = step()
        print(f"[{name}] done in {time.perf_counter() - started:.0f}s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "suite.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "suite.md").write_text(markdown(result))
    plots(result)
    print((RESULTS / "suite.md").read_text())
    if not a.skip_fidelity:
        from bench import fidelity

        print("[fidelity] ...", flush=True)
        fidelity.main([])
    if not a.skip_peer:
        from bench import peers

        print("[peers] ...", flush=True)
        peers.main(["--requests", str(400 // scale)])
    return 0


if __name__ == "__main__":
    sys.exit(main())


