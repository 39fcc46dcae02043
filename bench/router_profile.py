"""Where the router's time goes on the hit path: a py-spy profile of a real router under L1 hits.

    python -m bench.router_profile [--size 640x480] [--seconds 15] [--rate 200]

One node (mobilenet_v3_small) and a router on this machine; a caller sends the same
64 photo-sized JPEGs with hints over and over (every answer an L1 hit) while py-spy
(a tool, not a dependency: ``pip install py-spy``) samples the router. Reports the
router's and the node's CPU per item and the functions with the most samples, by
their own time and with what they call. ``--caller client``: the Python client (frames of many items);
``--caller raw``: 4 raw gRPC streams x 8 in flight, one item per message, as a caller in another language
sends (``local/load.py``). Writes bench/results/router_profile[-raw].md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench import report
from bench.photos import photo
from ringserve.client import AsyncClient
from ringserve.local.cluster import LocalCluster
from ringserve.local.processes import scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"


async def hits(target: str, images: list[bytes], seconds: float) -> int:
    async with AsyncClient(target, window=32) as client:
        await client.extract_detailed(images)  # computed once: the rest are L1 hits
        sent, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await asyncio.gather(*(client.extract_detailed(images) for _ in range(4)))
            sent += 4 * len(images)
        return sent


def raw_hits(target: str, images: list[bytes], seconds: float) -> int:
    """One item per message on 4 raw streams x 8 in flight, hints on: the items answered."""
    from ringserve.contract import fingerprint
    from ringserve.local.load import LoadGenerator

    load = LoadGenerator(target, images, streams=4, window=8, hints=[fingerprint.phash_bytes(i) for i in images])
    load.start()
    time.sleep(seconds)
    report_ = load.stop()
    assert report_.failed == 0 and report_.lost == 0, report_.summary()
    return report_.answered


def summarise(raw: Path, top: int = 20) -> tuple[int, list[tuple[float, str]], list[tuple[float, str]]]:
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    shares = [(v / total, k) for k, v in own.most_common(top)]
    ours = ("router/", "runtime/", "protos/", "grpc/")  # py-spy names frames by file path
    calls = [(v / total, k) for k, v in inclusive.most_common() if any(f"({o}" in k for o in ours)][:top]
    return total, shares, calls


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.router_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x480", help="JPEG size, WxH")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--caller", choices=("client", "raw"), default="client",
                   help="the Python client (frames), or raw streams of one item per message")
    a = p.parse_args(argv)
    spy = shutil.which("py-spy")
    if spy is None:
        print("bench.router_profile needs py-spy on PATH: pip install py-spy", file=sys.stderr)
        return 2
    size = tuple(int(v) for v in a.size.split("x"))
    images = [photo(5_000_000 + i, size) for i in range(64)]
    work = scratch_dir("ringserve-router-profile-")
    cluster = LocalCluster(work, None, node_args=["--models", "mobilenet_v3_small", "--drain-delay-s", "0"],
                           router_args=["--drain-delay-s", "0"])
    raw = work / "router.txt"
    try:
        cluster.add("node-0")
        router = cluster.start_router()
        procs = {"router": psutil.Process(router.pid), "node": psutil.Process(cluster.nodes["node-0"].pid)}
        asyncio.run(hits(router.target, images, 1.0))  # warm
        before = {k: sum(v.cpu_times()[:2]) for k, v in procs.items()}
        sampler = subprocess.Popen([spy, "record", "-p", str(router.pid), "-d", str(int(a.seconds)), "-r", str(a.rate),
                                    "-f", "raw", "-o", str(raw), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sent = (asyncio.run(hits(router.target, images, a.seconds)) if a.caller == "client"
                else raw_hits(router.target, images, a.seconds))
        cpu = {k: (sum(v.cpu_times()[:2]) - before[k]) / sent * 1000 for k, v in procs.items()}
        sampler.wait(60)
    finally:
        cluster.stop()
    total, own, calls = summarise(raw)
    meta = report.provenance(argv, "bench.router_profile")
    lines = ["# The router on the hit path", "", report.header(meta), "",
             f"{a.size} JPEGs with hints, all L1 hits, one node, "
             + ("one client (4 calls of 64 items, window 32)" if a.caller == "client"
                else "4 raw gRPC streams x 8 in flight, one item per message")
             + f" on the same cores; {sent} items; py-spy at {a.rate} Hz for {a.seconds:g} s ({total} samples of "
             "the router).", "",
             f"CPU per item: router {cpu['router']:.3f} ms, node {cpu['node']:.3f} ms "
             f"(router / node {cpu['router'] / cpu['node']:.2f}).", "",
             "## Own time (the function on top of the stack)", "", "| share | function |", "| --- | --- |"]
    lines += [f"| {share:.1%} | `{name[:120]}` |" for share, name in own]
    lines += ["", "## With what they call (ringserve and gRPC frames)", "", "| share | function |", "| --- | --- |"]
    lines += [f"| {share:.1%} | `{name[:120]}` |" for share, name in calls]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"router_profile{'-raw' if a.caller == 'raw' else ''}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
