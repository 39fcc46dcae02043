"""The hot path side by side, at the sizes people send: one run, every target of issue 10.

    python -m bench.hotpath [--sizes 64x48 640x480 1920x1080 4000x3000] [--requests 400] [--reps 3] [--skip-peers]

Per size, on Redis, 3 nodes (mobilenet_v3_small) and a router, with a load of 4
streams x 8 items in flight, the issue's set-up (all on this machine's cores):

- through the router at 92% repeats, callers with and without the pHash hint, and with
  client placement (``placement="client"``: hinted items straight to their owners, the
  router's membership read by the client);
- the same with the cache bypassed (every item computed): the cache's speed-up against
  its Amdahl bound, 1 / (share of misses);
- all distinct images, cache on against cache bypassed;
- L1 hits with hints: the router's CPU per item against the nodes' (process CPU time
  over the run / items answered);
- the Python client's L1 hits through the router, with client placement, and straight to
  one node that holds every image in its L1;
- L1 hits on one node, many items per message (frames) against one per message.

Then misses at 4000x3000 through one node, decoding only what the model needs against
``--full-decode``, and the peers (``bench.peers``: Ray Serve with an LRU and Triton with
its response cache, against ringserve through its router) at 640x480. Every workload
uses images no process has seen; each measure runs ``--reps`` times, alternating, and
the median is reported with its spread. Writes bench/results/hotpath.{json,md,png}.
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
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from bench import peers, report
from bench.frames import measure as frames_measure
from bench.photos import SOURCE, photo
from bench.workload import repeats_workload
from ringserve.client import AsyncClient
from ringserve.local.cluster import LocalCluster
from ringserve.local.processes import NodeProcess, RedisProcess, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "mobilenet_v3_small"
STREAMS = 4
IN_FLIGHT = 8


class Images:
    """Fresh photo-sized JPEGs: every call returns images never handed out before in this run."""

    def __init__(self, size: tuple[int, int], first: int) -> None:
        self.size = size
        self.next = first

    def take(self, n: int) -> list[bytes]:
        out = [photo(self.next + i, self.size) for i in range(n)]
        self.next += n
        return out


async def streams(client: AsyncClient, images: list[bytes], order: list[int], tiers: Counter) -> float:
    """``order`` over ``STREAMS`` concurrent calls of ``client``, counting the tiers that answered into ``tiers``;
    the seconds it took. Raises the first item's error."""
    async def stream(part: list[int]) -> None:
        for r in await client.extract_detailed([images[i] for i in part]):
            if isinstance(r, Exception):
                raise r
            tiers[r.provenance.source] += 1

    started = time.perf_counter()
    await asyncio.gather(*(stream(order[s::STREAMS]) for s in range(STREAMS)))
    return time.perf_counter() - started


async def load(target: str, images: list[bytes], order: list[int], **options) -> dict:
    """``STREAMS`` streams of ``IN_FLIGHT`` items each over ``order``; items/s and the tiers that answered."""
    tiers: Counter = Counter()
    async with AsyncClient(target, window=IN_FLIGHT, **options) as client:
        elapsed = await streams(client, images, order, tiers)
    return {"items_per_s": len(order) / elapsed, "seconds": elapsed, **tiers}


def cpu_seconds(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


@contextlib.contextmanager
def cluster(work: Path) -> Iterator[LocalCluster]:
    redis = RedisProcess(work / "redis").start()
    c = LocalCluster(work / "cluster", redis.url, node_args=["--models", MODEL, "--drain-delay-s", "0"],
                     router_args=["--drain-delay-s", "0"])
    try:
        c.add("node-0", "node-1", "node-2")
        c.start_router()
        yield c
    finally:
        c.stop()
        redis.stop()


def cluster_section(work: Path, size: tuple[int, int], requests: int, reps: int, distinct_n: int,
                    progress: Callable[[str], None]) -> dict:
    images = Images(size, first=10_000_000 * size[0] // 640)
    order = repeats_workload(requests, 0.92, seed=0)
    distinct = max(order) + 1
    runs: dict[str, list[dict]] = {k: [] for k in ("hints", "no hint", "client placement", "bypass", "distinct cached",
                                                   "distinct bypass")}
    with cluster(work) as c:
        router = c.router.target
        asyncio.run(load(router, images.take(16), list(range(16)), cache_mode="bypass"))  # the models' warm-up
        for rep in range(reps):
            for name, options in (("hints", {"hints": True}), ("no hint", {"hints": False}),
                                  ("client placement", {"hints": True, "placement": "client"}),
                                  ("bypass", {"hints": True, "cache_mode": "bypass"})):
                progress(f"{size[0]}x{size[1]}: 92% repeats, {name}, run {rep + 1}/{reps}")
                runs[name].append(asyncio.run(load(router, images.take(distinct), order, **options)))
            for name, options in (("distinct cached", {}), ("distinct bypass", {"cache_mode": "bypass"})):
                progress(f"{size[0]}x{size[1]}: all distinct, {name}, run {rep + 1}/{reps}")
                runs[name].append(asyncio.run(load(router, images.take(distinct_n), list(range(distinct_n)),
                                                   **options)))
        # L1 hits with hints: every image below is already in its owner's L1.
        # Bounded loads spill a few items to a second node, which then reads Redis once: a pass first.
        cached = images.take(64)
        hits_order = list(range(64)) * max(4, requests // 64)
        asyncio.run(load(router, cached, hits_order))
        pids = {"router": [c.router.pid], "nodes": [n.pid for n in c.nodes.values()]}
        cpu: dict[str, list[float]] = {"router": [], "nodes": [], "items_per_s": []}
        l1_share: list[float] = []
        for rep in range(reps):
            progress(f"{size[0]}x{size[1]}: L1 hits with hints, CPU per item, run {rep + 1}/{reps}")
            before = {k: cpu_seconds(v) for k, v in pids.items()}
            r = asyncio.run(load(router, cached, hits_order))
            assert r.get("computed", 0) == 0, f"a cached image was computed: {r}"
            l1_share.append(r.get("l1", 0) / len(hits_order))
            for k, v in pids.items():
                cpu[k].append((cpu_seconds(v) - before[k]) / len(hits_order) * 1000)
            cpu["items_per_s"].append(r["items_per_s"])
        # The Python client's L1 hits through the cluster against straight to one node (issue 17): node-0 first
        # answers each cached image once, which puts all of them in its L1 too. Longer runs than above: a hit is
        # cheap, and a run of a few hundred is over in a fraction of a second.
        straight = c.nodes["node-0"].target
        client_order = list(range(64)) * 20
        asyncio.run(load(straight, cached, hits_order))
        client_ways = {"through the router": (router, {}), "client placement": (router, {"placement": "client"}),
                       "straight to one node": (straight, {})}
        client_rates: dict[str, list[float]] = {w: [] for w in client_ways}
        for rep in range(reps):
            for way in (list(client_ways) if rep % 2 == 0 else list(client_ways)[::-1]):
                progress(f"{size[0]}x{size[1]}: the Python client's L1 hits, {way}, run {rep + 1}/{reps}")
                target, options = client_ways[way]
                r = asyncio.run(load(target, cached, client_order, **options))
                assert r.get("computed", 0) == 0, f"a cached image was computed: {r}"
                client_rates[way].append(r["items_per_s"])
        progress(f"{size[0]}x{size[1]}: frames against one item per message on one node")
        frames = asyncio.run(frames_measure(c.nodes["node-0"].target, images.take(64), 64, reps))

    def rate(name: str) -> dict:
        return report.spread([r["items_per_s"] for r in runs[name]])

    tiers = {name: {t: sum(r.get(t, 0) for r in rs) for t in ("l1", "l2", "computed")} for name, rs in runs.items()}
    out: dict = {"size": f"{size[0]}x{size[1]}", "bytes_per_image": statistics.median(len(b) for b in cached),
                 "requests": requests, "distinct_per_run": distinct, "distinct_workload": distinct_n,
                 "rates": {name: rate(name) for name in runs}, "tiers": tiers,
                 "cpu_ms_per_item": {k: report.spread(v) for k, v in cpu.items() if k != "items_per_s"},
                 "l1_hits_per_s_with_hints": report.spread(cpu["items_per_s"]), "l1_share_of_hits": min(l1_share),
                 "frames": {k: report.spread(v) for k, v in frames.items()},
                 "client_l1_hits_per_s": {k: report.spread(v) for k, v in client_rates.items()}}
    med = {name: out["rates"][name]["median"] for name in runs}
    bound = requests / distinct
    def cut(value: float, higher_is_better: bool = True) -> float:
        """3 decimals, cut toward the side that does not flatter (never rounded across a target)."""
        return float(report.ratio(value, 3, higher_is_better))

    out["ratios"] = {
        "no hint / hint": cut(med["no hint"] / med["hints"]),
        "client placement / router": cut(med["client placement"] / med["hints"]),
        "router CPU / nodes' CPU": cut(out["cpu_ms_per_item"]["router"]["median"]
                                       / out["cpu_ms_per_item"]["nodes"]["median"], higher_is_better=False),
        "frames / one item per message": cut(out["frames"]["frames"]["median"]
                                             / out["frames"]["one item per message"]["median"]),
        "speed-up at 92% repeats": cut(med["hints"] / med["bypass"]),
        "Amdahl bound": round(bound, 3),
        "share of the Amdahl bound": cut(med["hints"] / med["bypass"] / bound),
        "all distinct: cache on / bypassed": cut(med["distinct cached"] / med["distinct bypass"]),
    }
    hits = {k: v["median"] for k, v in out["client_l1_hits_per_s"].items()}
    for way in ("through the router", "client placement"):
        out["ratios"][f"Python client {way} / straight to one node"] = cut(hits[way] / hits["straight to one node"])
    return out


def misses_section(work: Path, size: tuple[int, int], count: int, reps: int, progress: Callable[[str], None]) -> dict:
    """All-distinct misses through one node: the reduced decode against ``--full-decode``."""
    images = Images(size, first=90_000_000)
    nodes = {"new (reduced decode)": [], "old (--full-decode)": ["--full-decode"]}
    procs = {name: NodeProcess(work / "misses", f"misses-{i}", ["--models", MODEL, "--drain-delay-s", "0", *flags])
             for i, (name, flags) in enumerate(nodes.items())}
    runs: dict[str, list[float]] = {name: [] for name in nodes}
    try:
        for p in procs.values():
            p.start()
            asyncio.run(load(p.target, images.take(8), list(range(8))))  # warm-up
        for rep in range(reps):
            for name, p in procs.items():
                progress(f"{size[0]}x{size[1]}: misses, {name}, run {rep + 1}/{reps}")
                r = asyncio.run(load(p.target, images.take(count), list(range(count)), hints=False))
                assert r.get("computed", 0) == count, r
                runs[name].append(r["items_per_s"])
    finally:
        for p in procs.values():
            p.stop()
    out = {"size": f"{size[0]}x{size[1]}", "images_per_run": count,
           "images_per_s": {k: report.spread(v) for k, v in runs.items()}}
    new, old = (out["images_per_s"][k]["median"] for k in nodes)
    out["new / old"] = round(new / old, 2)
    return out


TARGETS = [
    # (measure, target text, how to read it from the result, passes)
    ("router without hint / with hint, items/s at 92% repeats", ">= 0.8", "no hint / hint", lambda v: v >= 0.8),
    ("router CPU per item / nodes' CPU per item, L1 hits with hints", "<= 0.5", "router CPU / nodes' CPU",
     lambda v: v <= 0.5),
    ("L1 hits per node, frames / one item per message", ">= 3x", "frames / one item per message", lambda v: v >= 3),
    ("mobilenet_v3_small at 92% repeats, share of the Amdahl bound", ">= 0.5", "share of the Amdahl bound",
     lambda v: v >= 0.5),
    ("all distinct: cache on / cache bypassed", ">= 0.95", "all distinct: cache on / bypassed", lambda v: v >= 0.95),
    ("Python client's L1 hits through the router / straight to one node", ">= 0.85",
     "Python client through the router / straight to one node", lambda v: v >= 0.85),
    ("the same with client placement / straight to one node", ">= 0.85",
     "Python client client placement / straight to one node", lambda v: v >= 0.85),
]


def images_line(r: dict) -> str:
    """Where a run's images come from, their sizes and how many each workload sends."""
    s = r["sizes"][0]
    line = (f"Images: JPEGs at {', '.join(x['size'] for x in r['sizes'])} ({SOURCE}), new for every run: 92% repeats, "
            f"{s['requests']} items over {s['distinct_per_run']} images; all distinct, {s['distinct_workload']} images; "
            "L1 hits, the Python client's hits and frames, 64 images cached beforehand")
    if "misses" in r:
        line += f"; misses, {r['misses']['images_per_run']} images at {r['misses']['size']} a run"
    return line + "."


def markdown(r: dict) -> str:
    lines = ["# The hot path at the sizes people send", "", report.header(r), "",
             f"Redis, 3 nodes ({MODEL}) and a router; {STREAMS} streams x {IN_FLIGHT} in flight; every process on "
             "this machine's 2 cores. Each cell is the median of the runs, with min-max; every workload uses fresh "
             "images.", "", images_line(r), "", "## Targets", "",
             "| measure | target | " + " | ".join(s["size"] for s in r["sizes"]) + " |",
             "| --- | --- | " + " | ".join("---" for _ in r["sizes"]) + " |"]
    for measure, target, key, ok in TARGETS:
        cells = [f"{s['ratios'][key]:g} {'✓' if ok(s['ratios'][key]) else '✗'}" for s in r["sizes"]]
        lines.append(f"| {measure} | {target} | " + " | ".join(cells) + " |")
    if "misses" in r:
        m = r["misses"]
        lines.append(f"| misses at {m['size']}: images/s through a node, new / old decode | >= 2x | "
                     f"{m['new / old']:g}x {'✓' if m['new / old'] >= 2 else '✗'} (at {m['size']} only) |")
    if "peers" in r:
        for name, v in r["peers"]["ratios"].items():
            if not name.startswith("ringserve /"):  # issue 10's targets are ringserve through its router's
                continue
            target = "> 1.5 and > 1" if "Ray" in name else "> 1"
            need = (1.5, 1.0) if "Ray" in name else (1.0, 1.0)
            ok = v["92% repeats"] > need[0] and v["all distinct"] > need[1]
            lines.append(f"| {name}, 92% repeats and all distinct | {target} | {v['92% repeats']:g} and "
                         f"{v['all distinct']:g} {'✓' if ok else '✗'} (at {r['peers']['size']}) |")
    lines += ["", "## Through the router", "",
              "| size | bytes | 92% repeats, hint | no hint | client placement | cache bypassed | all distinct, cache on "
              "| bypassed | L1 hits with hints (L1 share) | router / nodes CPU ms per item |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in r["sizes"]:
        rt, cpu = s["rates"], s["cpu_ms_per_item"]
        lines.append(f"| {s['size']} | {s['bytes_per_image'] / 1000:.0f} KB | {report.cell(rt['hints'])} "
                     f"| {report.cell(rt['no hint'])} | {report.cell(rt['client placement'])} | {report.cell(rt['bypass'])} "
                     f"| {report.cell(rt['distinct cached'])} "
                     f"| {report.cell(rt['distinct bypass'])} | {report.cell(s['l1_hits_per_s_with_hints'])} "
                     f"({s['l1_share_of_hits']:.3f}) "
                     f"| {cpu['router']['median']:.3f} / {cpu['nodes']['median']:.3f} |")
    lines += ["", "Items/s. Tiers that answered, summed over the runs (a row claims only what it shows):", "",
              "| size | workload | L1 | Redis | computed |", "| --- | --- | --- | --- | --- |"]
    for s in r["sizes"]:
        for name, t in s["tiers"].items():
            lines.append(f"| {s['size']} | {name} | {t['l1']} | {t['l2']} | {t['computed']} |")
    lines += ["", "## The Python client's L1 hits: through the cluster against straight to one node (hits/s)", "",
              f"{STREAMS} calls of {IN_FLIGHT} in flight over 64 cached images, 1,280 hits a run (20 passes), the "
              "client's defaults: images of 64 KB and more go digest-first. Each run is a fresh client. With client "
              "placement, a digest-first hit has no hint until the router's answer names its key "
              "(`Provenance.placement_key`): the first pass over the images of 64 KB and more goes through the "
              "router, the other 19 straight to the nodes; smaller images carry their hint from the start.", "",
              "| size | through the router | client placement | straight to one node |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['size']} | " + " | ".join(report.cell(s["client_l1_hits_per_s"][w]) for w in
                                               ("through the router", "client placement", "straight to one node"))
              + " |" for s in r["sizes"] if "client_l1_hits_per_s" in s]
    lines += ["", "## L1 hits on one node: frames against one item per message (hits/s)", "",
              "| size | frames | one item per message |", "| --- | --- | --- |"]
    lines += [f"| {s['size']} | {report.cell(s['frames']['frames'])} | {report.cell(s['frames']['one item per message'])} |"
              for s in r["sizes"]]
    if "misses" in r:
        m = r["misses"]
        lines += ["", f"## Misses at {m['size']} through one node ({m['images_per_run']} distinct images per run)", "",
                  "| decode | images/s |", "| --- | --- |"]
        lines += [f"| {k} | {report.cell(v)} |" for k, v in m["images_per_s"].items()]
    if "peers" in r:
        lines += ["", "## Peers (`bench.peers`)", "", *peers.markdown(r["peers"])]
    lines += ["", "![hot path](hotpath.png)", ""]
    return "\n".join(lines)


def plot(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sizes = [s["size"] for s in r["sizes"]]
    x = np.arange(len(sizes))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    width = 0.16
    for i, (name, label) in enumerate((("hints", "92% repeats, hint"), ("no hint", "92% repeats, no hint"),
                                       ("client placement", "92% repeats, client placement"),
                                       ("bypass", "92% repeats, cache bypassed"),
                                       ("distinct cached", "all distinct"))):
        axes[0].bar(x + (i - 2) * width, [s["rates"][name]["median"] for s in r["sizes"]], width, label=label)
    axes[0].set(xticks=x, xticklabels=sizes, ylabel="items/s", yscale="log", title="Through the router")
    axes[0].legend(fontsize=8)
    for i, who in enumerate(("router", "nodes")):
        axes[1].bar(x + (i - 0.5) * 0.35, [s["cpu_ms_per_item"][who]["median"] for s in r["sizes"]], 0.35,
                    label=f"{who} CPU")
    axes[1].set(xticks=x, xticklabels=sizes, ylabel="CPU ms per item", yscale="log", title="L1 hits with hints")
    axes[1].legend(fontsize=8)
    if "peers" in r:
        sides = list(r["peers"]["sides"])
        for i, w in enumerate(("all distinct", "92% repeats")):
            axes[2].bar(np.arange(len(sides)) + (i - 0.5) * 0.35,
                        [r["peers"]["sides"][s][w]["images_per_s"]["median"] for s in sides], 0.35, label=w)
        axes[2].set(xticks=np.arange(len(sides)), ylabel="images/s", title=f"Peers at {r['peers']['size']}")
        axes[2].set_xticklabels(sides, fontsize=8)
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(RESULTS / "hotpath.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["64x48", "640x480", "1920x1080", "4000x3000"],
                   help="JPEG sizes, WxH")
    p.add_argument("--requests", type=int, default=400, help="items per run at 92%% repeats")
    p.add_argument("--distinct", type=int, default=48, help="items per all-distinct run")
    p.add_argument("--reps", type=int, default=3, help="runs per measure")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every process (OMP_NUM_THREADS)")
    p.add_argument("--skip-misses", action="store_true", help="no 4000x3000 decode comparison")
    p.add_argument("--skip-peers", action="store_true", help="no Ray Serve and Triton (they need the bench extra)")
    a = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    progress = report.progress_printer()

    work = scratch_dir("ringserve-hotpath-")
    result: dict = {**report.provenance(argv, "bench.hotpath"), "sizes": []}
    for text in a.sizes:
        size = tuple(int(v) for v in text.split("x"))
        result["sizes"].append(cluster_section(work / text, size, a.requests, a.reps, a.distinct, progress))
    if not a.skip_misses:
        result["misses"] = misses_section(work, (4000, 3000), a.distinct, a.reps, progress)
    if not a.skip_peers:
        result["peers"] = peers.compare(work / "peers", (640, 480), a.requests, 16, a.reps, a.threads,
                                        progress=progress)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hotpath.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "hotpath.md").write_text(markdown(result))
    plot(result)
    print(markdown(result))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
