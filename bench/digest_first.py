"""Digest-first against sending every image, through a real cluster: what a hit and a miss cost each way.

    python -m bench.digest_first [--sizes 64x48 320x240 640x480 1920x1080] [--requests 400] [--distinct 48] [--reps 3]

Redis, 3 nodes (mobilenet_v3_small) and a router on this machine, the Python client with frames,
4 streams x 8 items in flight (``bench.hotpath``'s load). Per JPEG size, each way (``image``: the
client's ``digest_first_min_bytes`` None; ``digest-first``: 0, every image while it pays, the client's default
``digest_first_min_hit_ratio``), alternating, ``--reps``
times, each run on images no process has seen:

- 92% repeats (each request repeats an earlier image with probability 0.92): items/s;
- all distinct (every item a miss: digest-first pays its extra round trip on each): items/s, by a fresh client
  (its first images: it has no answers yet to tell it digests do not pay) and by a long-lived one (a client
  that has just sent as many new images, untimed: it sends their bytes at once, ``client/digests.py``);
- hits only (every image cached): items/s, bytes the client sent per item (its request messages, as
  serialised), and the router's and all processes' CPU per item (client, router, nodes).

The threshold ``ClientConfig.digest_first_min_bytes`` is chosen from these: digest-first wherever it
does not lose on all-distinct images and wins on repeats. Writes bench/results/digest_first.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from bench import report
from bench.hotpath import IN_FLIGHT, Images, cluster, cpu_seconds, streams
from bench.photos import SOURCE
from bench.workload import repeats_workload
from ringserve.client import AsyncClient
from ringserve.local.processes import scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"
WAYS = {"image": None, "digest-first": 0}  # digest_first_min_bytes


def counting(client: AsyncClient, sent: Counter) -> None:
    """Count the bytes of every request message ``client``'s item streams send (payload, before HTTP/2)."""
    def wrap(call: Callable) -> Callable:
        async def counted(messages: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            async for message in messages:
                sent["bytes"] += len(message)
                yield message

        return lambda messages, **kwargs: call(counted(messages), **kwargs)

    client._calls = {key: wrap(call) for key, call in client._calls.items()}
    if client._shared is not None:  # every call's items on one shared stream (client/shared.py): count those too
        client._shared._calls = client._calls


async def load(target: str, images: list[bytes], order: list[int], way: str, before: list[bytes] = ()) -> dict:
    """``STREAMS`` streams of ``IN_FLIGHT`` items over ``order``, one way, by a client that has first sent
    ``before`` (untimed, uncounted); items/s, bytes sent, tiers."""
    tiers: Counter = Counter()
    sent: Counter = Counter()
    async with AsyncClient(target, window=IN_FLIGHT, digest_first_min_bytes=WAYS[way]) as client:
        counting(client, sent)  # before any stream opens: the shared stream keeps the calls it was opened with
        if before:
            await streams(client, list(before), list(range(len(before))), Counter())
            sent.clear()
        elapsed = await streams(client, images, order, tiers)
        if WAYS[way] is not None and not client._digests.taken:
            raise SystemExit("the cluster refused digest-only items: its nodes are older than digest lookups")
    if not sent["bytes"]:
        raise SystemExit("no bytes counted on the client's item streams: bench/digest_first.py counting() no longer "
                         "wraps the streams the client sends on")
    return {"items_per_s": len(order) / elapsed, "bytes_per_item": sent["bytes"] / len(order), **tiers}


def workloads(c, images: Images, requests: int, distinct_n: int, reps: int,
              progress: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    """Items/s at 92% repeats and all distinct, each way, alternating (the order flipped each run)."""
    order = repeats_workload(requests, 0.92, seed=0)
    rates: dict[str, dict[str, list[float]]] = {w: {"repeats": [], "distinct": [], "distinct_long_lived": []}
                                                for w in WAYS}
    for rep in range(reps):
        ways = list(WAYS) if rep % 2 == 0 else list(WAYS)[::-1]
        for way in ways:
            progress(f"{images.size}: 92% repeats, {way}, run {rep + 1}/{reps}")
            r = asyncio.run(load(c.router.target, images.take(max(order) + 1), order, way))
            rates[way]["repeats"].append(r["items_per_s"])
        for way in ways:
            progress(f"{images.size}: all distinct, {way}, run {rep + 1}/{reps}")
            r = asyncio.run(load(c.router.target, images.take(distinct_n), list(range(distinct_n)), way))
            rates[way]["distinct"].append(r["items_per_s"])
        for way in ways:
            progress(f"{images.size}: all distinct, long-lived client, {way}, run {rep + 1}/{reps}")
            r = asyncio.run(load(c.router.target, images.take(distinct_n), list(range(distinct_n)), way,
                                 before=images.take(distinct_n)))
            rates[way]["distinct_long_lived"].append(r["items_per_s"])
    return rates


def hits(c, images: Images, requests: int, reps: int, progress: Callable[[str], None]) -> tuple[dict[str, dict], float]:
    """Every image cached: items/s, bytes sent per item, router and all CPU per item, each way; and the mean size
    of the images."""
    cached = images.take(64)
    order = list(range(64)) * max(4, requests // 64)
    asyncio.run(load(c.router.target, cached, order, "image"))  # cached, and in each owner's L1
    pids = {"router": [c.router.pid], "all": [c.router.pid, *(n.pid for n in c.nodes.values()), os.getpid()]}
    out: dict[str, dict[str, list[float]]] = {w: {"items_per_s": [], "bytes_per_item": [], "router_cpu_ms": [],
                                                  "all_cpu_ms": []} for w in WAYS}
    for rep in range(reps):
        for way in (list(WAYS) if rep % 2 == 0 else list(WAYS)[::-1]):
            progress(f"{images.size}: hits only, {way}, run {rep + 1}/{reps}")
            before = {k: cpu_seconds(v) for k, v in pids.items()}
            r = asyncio.run(load(c.router.target, cached, order, way))
            assert r.get("computed", 0) == 0, f"a cached image was computed: {r}"
            out[way]["items_per_s"].append(r["items_per_s"])
            out[way]["bytes_per_item"].append(r["bytes_per_item"])
            for k, v in pids.items():
                out[way][f"{k}_cpu_ms"].append((cpu_seconds(v) - before[k]) / len(order) * 1000)
    return out, statistics.mean(len(b) for b in cached)


def size_section(work: Path, size: tuple[int, int], a: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    images = Images(size, first=20_000_000 + 1_000_000 * size[0] // 64)
    with cluster(work) as c:
        asyncio.run(load(c.router.target, images.take(16), list(range(16)), "image"))  # the models' warm-up
        rates = workloads(c, images, a.requests, a.distinct, a.reps, progress)
        hit, mean_bytes = hits(c, images, a.requests, a.reps, progress)
    spread = {w: {k: report.spread(v) for k, v in {**rates[w], **hit[w]}.items()} for w in WAYS}
    med = {w: {k: s["median"] for k, s in spread[w].items()} for w in WAYS}
    return {"size": f"{size[0]}x{size[1]}", "jpeg_bytes": round(mean_bytes), "ways": spread,
            # cut toward the side that does not flatter: items/s down, bytes and CPU up
            "digest_first_over_image": {k: float(report.ratio(med["digest-first"][k] / med["image"][k], 3,
                                                              higher_is_better=not k.endswith(("_ms", "_item"))))
                                        for k in med["image"] if med["image"][k]}}


def images_line(a: argparse.Namespace) -> str:
    """Where a run's images come from, their sizes and how many each workload sends."""
    repeats = max(repeats_workload(a.requests, 0.92, seed=0)) + 1
    hits = 64 * max(4, a.requests // 64)
    return (f"Images: JPEGs at {', '.join(a.sizes)} ({SOURCE}), new for every run: 92% repeats, {a.requests} items "
            f"over {repeats} images; all distinct, {a.distinct} images (the long-lived client first sends "
            f"{a.distinct} others); hits, {hits} items over 64 images cached beforehand. Both ways get the same "
            "workloads, each run on images of its own.")


def markdown(r: dict) -> str:
    a = parser().parse_args(r["command"].split()[3:])  # the run's own arguments, as its command recorded them
    lines = ["# Digest-first lookups against sending every image", "", report.header(r), "", images_line(a), "",
             "Redis, 3 nodes (mobilenet_v3_small), the router and the Python client (frames, 4 streams x 8 in "
             "flight) on this machine's cores; medians of the runs (spread in digest_first.json). "
             "`image`: every image sent with its bytes; `digest-first`: every image named by its digest first, "
             "its bytes sent only when the cluster has no answer for it, while that pays (the client's default "
             "`digest_first_min_hit_ratio`, client/digests.py). All distinct: by a fresh client, whose first "
             "images go digest-first (it has no answers yet to tell it that does not pay), and by a long-lived "
             "client that has just sent as many new images (untimed).", "",
             "| JPEG | bytes | way | 92% repeats, items/s | all distinct, items/s | all distinct, long-lived client "
             "| hits, items/s | bytes sent per hit | router CPU per hit, ms | all CPU per hit, ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in r["sizes"]:
        for way, m in s["ways"].items():
            lines.append(f"| {s['size']} | {s['jpeg_bytes']:,} | {way} | {report.cell(m['repeats'])} | "
                         f"{report.cell(m['distinct'])} | {report.cell(m['distinct_long_lived'])} | "
                         f"{report.cell(m['items_per_s'])} | "
                         f"{m['bytes_per_item']['median']:,.0f} | {m['router_cpu_ms']['median']:.3f} | "
                         f"{m['all_cpu_ms']['median']:.3f} |")
    lines += ["", "Digest-first / image (medians):", "",
              "| JPEG | 92% repeats | all distinct | all distinct, long-lived client | hits | bytes per hit "
              "| router CPU per hit | all CPU per hit |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in r["sizes"]:
        q = s["digest_first_over_image"]
        lines.append(f"| {s['size']} | {q['repeats']} | {q['distinct']} | {q['distinct_long_lived']} | "
                     f"{q['items_per_s']} | "
                     f"{q['bytes_per_item']} | {q['router_cpu_ms']} | {q['all_cpu_ms']} |")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.digest_first", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["64x48", "320x240", "640x480", "1920x1080"], help="JPEG sizes, WxH")
    p.add_argument("--requests", type=int, default=400, help="items per run at 92%% repeats and of hits")
    p.add_argument("--distinct", type=int, default=48, help="items per all-distinct run")
    p.add_argument("--reps", type=int, default=3, help="runs per measure")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every process (OMP_NUM_THREADS)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parser().parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    progress = report.progress_printer()

    work = scratch_dir("ringserve-digest-first-")
    result: dict = {**report.provenance(argv, "bench.digest_first"), "sizes": []}
    for text in a.sizes:
        size = tuple(int(v) for v in text.split("x"))
        result["sizes"].append(size_section(work / text, size, a, progress))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "digest_first.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "digest_first.md").write_text(markdown(result))
    print(markdown(result))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
