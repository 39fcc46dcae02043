"""Search at scale: recall, query latency through the router, index rate, memory, restart, near-duplicates.

    python -m bench.search [--sizes 20000 200000] [--dim 1280] [--queries 1000]

For each size, a collection of synthetic features (``--dim``, float16, drawn around
2,000 cluster centres so that neighbourhoods exist, as in real catalogues) is
written straight into a durable Redis through the store (``search/store.py``,
1,000 entries per atomic script), then a router with the Search service starts
over it:

- start-up: the router builds its view from Redis alone, then, restarted, loads the
  snapshot it saved and follows the log: seconds until it serves the collection;
- query latency through the router (a search by id, k=10, one caller), p50 and p99;
- recall@10 against exact search (numpy, cosine) on 200 of those queries;
- the router's memory (RSS) with the collection loaded.

Then, on real images with a real node (mobilenet_v3_small): the index rate through
the router (``Index``, features computed by the node), and near-duplicates: the
fidelity study's photos indexed, each of their 12 re-encodings searched with
``max_distance`` 16: at which distance its original is found. Writes
bench/results/search.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from bench import report
from bench.fidelity import photos, variants
from ringserve.client import Client, RingserveError
from ringserve.local.cluster import LocalCluster
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import RedisProcess, RouterProcess, scratch_dir
from ringserve.runtime.redisconn import connect
from ringserve.search.store import Entry, Meta, Store

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "efficientnet_lite0"  # real ImageNet weights (the pretrained extra): features that mean something


def synthetic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        out[start:start + m] = (centres[rng.integers(0, 2000, m)]
                                + 0.6 * rng.standard_normal((m, dim)).astype(np.float32)).astype(np.float16)
    return out


async def fill(url: str, collection: str, vectors: np.ndarray, progress) -> float:
    store = Store(connect(url, 30.0))
    meta = Meta("synthetic", "bench-v1", vectors.shape[1])
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    for start in range(0, len(vectors), 1000):
        batch = [Entry(f"e{i}", int(rng.integers(0, 2**63)), vectors[i])
                 for i in range(start, min(start + 1000, len(vectors)))]
        await store.add(collection, meta, batch)
        if start % 50_000 == 0:
            progress(f"  stored {start + len(batch)} / {len(vectors)}")
    await store.redis.aclose()
    return len(vectors) / (time.perf_counter() - started)


def start_router(work: Path, redis_url: str, snapshots: Path, collection: str, entries: int) -> tuple[RouterProcess, float]:
    """A router with no nodes (searches by id need none) over the collection; seconds until it serves all of it."""
    work.mkdir(parents=True, exist_ok=True)
    members = work / "members"
    members.write_text("")
    router = RouterProcess(work, "search-router", members_file=members,
                           args=["--search-redis-url", redis_url, "--search-snapshot-dir", str(snapshots)])
    started = time.perf_counter()
    router.start()  # health SERVING comes at once; the collection's view is what is waited for below
    with Client(router.target, retries=0, timeout_s=5) as c:
        while True:
            try:
                if c.describe_collection(collection).entries == entries:
                    break
            except RingserveError:  # not up yet, or still loading: poll again
                if not router.running:
                    raise RuntimeError(f"router exited: {router.log_tail()}") from None
            time.sleep(0.1)
    return router, time.perf_counter() - started


def at_scale(work: Path, n: int, dim: int, queries: int, progress) -> dict:
    redis = RedisProcess(work / f"redis-{n}", durable=True).start()
    collection = f"synthetic-{n}"
    try:
        vectors = synthetic(n, dim)
        progress(f"{n}: writing {n} entries to Redis")
        store_rate = asyncio.run(fill(redis.url, collection, vectors, progress))
        snapshots = work / f"views-{n}"
        progress(f"{n}: router builds its view from Redis")
        router, build_s = start_router(work / f"router-{n}-a", redis.url, snapshots, collection, n)
        rss = psutil.Process(router.pid).memory_info().rss
        rng = np.random.default_rng(2)
        picks = rng.integers(0, n, queries)
        latencies, recalls = [], []
        normed = vectors.astype(np.float32)
        normed /= np.linalg.norm(normed, axis=1, keepdims=True)
        progress(f"{n}: {queries} searches by id through the router")
        with Client(router.target) as c:
            for i, q in enumerate(picks):
                t = time.perf_counter()
                found = c.search(collection, id=f"e{q}", k=10)
                latencies.append(time.perf_counter() - t)
                if i < 200:
                    exact = np.argpartition(-(normed @ normed[q]), 10)[:10]
                    recalls.append(len({f"e{j}" for j in exact} & {h.id for h in found.nearest}) / 10)
        router.stop()  # saves its snapshot
        progress(f"{n}: router restarts from its snapshot")
        router, restart_s = start_router(work / f"router-{n}-b", redis.url, snapshots, collection, n)
        router.stop()
    finally:
        redis.stop()
    ms = np.array(latencies) * 1000
    return {"entries": n, "dim": dim, "store_entries_per_s": round(store_rate), "build_from_redis_s": round(build_s, 1),
            "restart_from_snapshot_s": round(restart_s, 1), "router_rss_mb": round(rss / 2**20),
            "query_ms_p50": round(float(np.percentile(ms, 50)), 2), "query_ms_p99": round(float(np.percentile(ms, 99)), 2),
            "recall_at_10": round(float(np.mean(recalls)), 4), "queries": queries}


def real_images(work: Path, index_images: int, progress) -> dict:
    redis = RedisProcess(work / "redis-real", durable=True).start()
    cluster = LocalCluster(work / "real", redis.url, ["--models", MODEL, "--drain-delay-s", "0"],
                           ["--search-redis-url", redis.url, "--drain-delay-s", "0"])
    try:
        cluster.add("node-0")
        router = cluster.start_router()
        images = [jpeg(400_000 + i, size=(320, 240)) for i in range(index_images)]
        with Client(router.target) as c:
            progress(f"index rate: {index_images} new images through the router")
            started = time.perf_counter()
            done = c.index([f"img-{i}" for i in range(index_images)], images, collection="rate")
            rate = sum(1 for r in done if not isinstance(r, Exception)) / (time.perf_counter() - started)
            started = time.perf_counter()
            c.index([f"again-{i}" for i in range(index_images)], images, collection="rate")  # cached features
            cached_rate = index_images / (time.perf_counter() - started)
            progress("near-duplicates: fidelity photos and their re-encodings")
            named = photos()
            originals = {name: jpeg(img, 90, exif=True) for name, img in named.items()}
            c.index(list(originals), list(originals.values()), collection="fidelity")
            rows: dict[str, list[int | None]] = {}
            for name, original in originals.items():
                for variant, data in variants(original).items():
                    found = c.search("fidelity", image=data, k=1, max_distance=16)
                    hit = next((h.distance for h in found.duplicates if h.id == name), None)
                    rows.setdefault(variant, []).append(hit)
                    rows.setdefault(f"{variant}: nearest by feature is the original", []).append(
                        int(found.nearest[0].id == name))
    finally:
        cluster.stop()
        redis.stop()
    radii = (0, 2, 4, 6, 8, 12, 16)
    table = {}
    for variant, distances in rows.items():
        if variant.endswith("is the original"):
            continue
        table[variant] = {f"<= {r}": round(sum(1 for d in distances if d is not None and d <= r) / len(distances), 3)
                          for r in radii}
        table[variant]["nearest is original"] = round(float(np.mean(rows[f"{variant}: nearest by feature is the original"])), 3)
    return {"index_per_s_new_images": round(rate, 1), "index_per_s_cached_images": round(cached_rate, 1),
            "index_images": index_images, "photos": len(originals), "near_duplicates": table, "radii": list(radii)}


def markdown(r: dict) -> str:
    lines = ["# Search at scale", "", report.header(r), "",
             "Synthetic float16 features around 2,000 centres, written to a durable Redis (AOF, fsync always); one "
             "router with the Search service, searched by id (k=10) by one caller on this machine.", "",
             "| entries | dim | recall@10 | query p50 ms | query p99 ms | router RSS MB | view built from Redis s "
             "| restart from snapshot s | stored entries/s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in r["scales"]:
        lines.append(f"| {s['entries']} | {s['dim']} | {s['recall_at_10']} | {s['query_ms_p50']} | {s['query_ms_p99']} "
                     f"| {s['router_rss_mb']} | {s['build_from_redis_s']} | {s['restart_from_snapshot_s']} "
                     f"| {s['store_entries_per_s']} |")
    real = r.get("real")
    if real:
        lines += ["", f"## Real images ({MODEL}, one node)", "",
                  f"Index rate through the router: {real['index_per_s_new_images']} images/s for new images (the node "
                  f"computes each feature), {real['index_per_s_cached_images']} images/s for the same images under new "
                  f"ids (features from the cache); {real['index_images']} images of 320x240.", "",
                  f"Near-duplicates: {real['photos']} photos indexed; each re-encoding searched with max_distance 16. "
                  "Share of re-encodings whose original is found within each radius, and whose nearest entry by "
                  "feature is the original:", "",
                  "| re-encoding | " + " | ".join(f"d <= {x}" for x in real["radii"]) + " | nearest by feature |",
                  "| --- | " + " | ".join("---" for _ in real["radii"]) + " | --- |"]
        for variant, row in real["near_duplicates"].items():
            lines.append(f"| {variant} | " + " | ".join(str(row[f'<= {x}']) for x in real["radii"])
                         + f" | {row['nearest is original']} |")
    lines += ["", "![search](search.png)", ""]
    return "\n".join(lines)


def plot(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    sizes = [s["entries"] for s in r["scales"]]
    axes[0].plot(sizes, [s["query_ms_p50"] for s in r["scales"]], marker="o", label="p50")
    axes[0].plot(sizes, [s["query_ms_p99"] for s in r["scales"]], marker="o", label="p99")
    axes[0].set(xscale="log", xlabel="entries", ylabel="ms", title="Search by id through the router (k=10)")
    axes[0].legend()
    real = r.get("real")
    if real:
        for variant, row in real["near_duplicates"].items():
            axes[1].plot(real["radii"], [row[f"<= {x}"] for x in real["radii"]], marker=".", label=variant)
        axes[1].set(xlabel="max_distance (bits)", ylabel="share found", title="Re-encodings found as near-duplicates")
        axes[1].legend(fontsize=6, ncol=2)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "search.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000], help="entries per collection")
    p.add_argument("--dim", type=int, default=1280, help="feature dimension (efficientnet_lite0: 1280)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--index-images", type=int, default=300, help="real images for the index rate")
    p.add_argument("--skip-real", action="store_true", help="no index rate or near-duplicate study (no model)")
    a = p.parse_args(argv)
    progress = report.progress_printer()

    work = scratch_dir("ringserve-search-bench-")
    result: dict = {**report.provenance(argv, "bench.search"),
                    "scales": [at_scale(work, n, a.dim, a.queries, progress) for n in a.sizes]}
    if not a.skip_real:
        result["real"] = real_images(work, a.index_images, progress)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "search.md").write_text(markdown(result))
    plot(result)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
