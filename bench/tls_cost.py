"""What mutual TLS on every hop costs an L1 hit: one cluster plaintext, one with mutual TLS, side by side.

    python -m bench.tls_cost [--sizes 640x480 1920x1080] [--requests 2560] [--reps 3]

On this machine: one Redis, and two clusters of 2 nodes (mobilenet_v3_small) and a router each, the one
plaintext, the other with mutual TLS on every hop (caller -> router, the router's links and health checks
-> nodes; EC P-256 certificates from a throwaway CA, as the tests make them). The Python client sends
the same 64 JPEGs (hints on, 4 streams x 8 in flight) through each router, after passes that put every
image in its owner's L1, so every measured item is an L1 hit; once as the client sends by default (images of
64 KB and more by their digest alone) and once with every image sent whole. Per size and run the two sides alternate,
the first side flipped each run; for each: items/s and the CPU time per item of the router, the nodes and
this process (the client). Writes bench/results/tls.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import report
from bench.hotpath import IN_FLIGHT, MODEL, Images, cpu_seconds, load
from ringserve.contract.tls import ClientTls
from ringserve.local.cluster import LocalCluster, LocalTls
from ringserve.local.processes import RedisProcess

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("plaintext", "mutual TLS")
# What the client sends for a hit: its default (images of 64 KB and more by digest alone), or every image whole
# (what a caller that never goes digest-first sends): TLS's cost grows with the bytes.
SENDS = {"digest-first (default)": {}, "the image": {"digest_first_min_bytes": None}}
CACHED = 64


@contextlib.contextmanager
def clusters(work: Path) -> Iterator[dict[str, tuple[LocalCluster, ClientTls | None]]]:
    """Both sides on one Redis: each side's cluster, and how its callers reach it."""
    from tests.certs import make_ca, make_cert

    ca = make_ca(work / "pki", "bench-ca")
    cert = make_cert(ca, work / "pki", "bench-peer")  # serves and calls: every process of a side uses it
    tls = LocalTls(ca.cert, cert.cert, cert.key)
    redis = RedisProcess(work / "redis").start()
    made: dict[str, tuple[LocalCluster, ClientTls | None]] = {}
    try:
        for side, side_tls in zip(SIDES, (None, tls), strict=True):
            c = LocalCluster(work / side.replace(" ", "-"), redis.url, tls=side_tls,
                             node_args=["--models", MODEL, "--drain-delay-s", "0"], router_args=["--drain-delay-s", "0"])
            made[side] = (c, side_tls.client() if side_tls is not None else None)
            c.add("node-0", "node-1")
            c.start_router()
        yield made
    finally:
        for c, _ in made.values():
            c.stop()
        redis.stop()


def over(tls: ClientTls | None, sends: str = "digest-first (default)") -> dict:
    """The client's settings for a side (plaintext: the default) and what it sends."""
    return {**({"tls": tls} if tls is not None else {}), **SENDS[sends]}


def measure(c: LocalCluster, tls: ClientTls | None, images: list[bytes], order: list[int], sends: str) -> dict:
    """One run of L1 hits through ``c``: items/s, and CPU ms per item of router, nodes and client."""
    pids = {"router": [c.router.pid], "nodes": [n.pid for n in c.nodes.values()], "client": [os.getpid()]}
    before = {k: cpu_seconds(v) for k, v in pids.items()}
    r = asyncio.run(load(c.router.target, images, order, **over(tls, sends)))
    assert r.get("computed", 0) == 0, f"a cached image was computed: {r}"
    cpu = {k: (cpu_seconds(v) - before[k]) / len(order) * 1000 for k, v in pids.items()}
    return {"items_per_s": r["items_per_s"], "l1_share": r.get("l1", 0) / len(order), "cpu_ms": cpu}


def size_section(sides: dict, size: tuple[int, int], requests: int, reps: int,
                 progress: Callable[[str], None]) -> dict:
    images = Images(size, first=20_000_000 * size[0] // 640).take(CACHED)
    order = list(range(CACHED)) * max(2, requests // CACHED)
    for side, (c, tls) in sides.items():  # misses, then a pass that leaves every image in its owner's L1
        progress(f"{size[0]}x{size[1]}: {side}, filling the caches")
        for _ in range(2):
            asyncio.run(load(c.router.target, images, order[:CACHED * 2], **over(tls)))
    out: dict = {"size": f"{size[0]}x{size[1]}", "bytes_per_image": sorted(map(len, images))[CACHED // 2],
                 "items_per_run": len(order), "sends": {}}
    for sends in SENDS:
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for rep in range(reps):
            for side in (SIDES if rep % 2 == 0 else SIDES[::-1]):
                progress(f"{size[0]}x{size[1]}: {side}, sending {sends}, run {rep + 1}/{reps}")
                runs[side].append(measure(*sides[side], images, order, sends))
        out["sends"][sends] = summary(runs)
    return out


def summary(runs: dict[str, list[dict]]) -> dict:
    """Each side's medians (min-max) and mutual TLS / plaintext."""
    out: dict = {"sides": {}}
    for side, rs in runs.items():
        cpu = {k: report.spread([r["cpu_ms"][k] for r in rs]) for k in ("router", "nodes", "client")}
        cpu["all"] = report.spread([sum(r["cpu_ms"].values()) for r in rs])
        out["sides"][side] = {"items_per_s": report.spread([r["items_per_s"] for r in rs]), "cpu_ms_per_item": cpu,
                              "l1_share": min(r["l1_share"] for r in rs)}
    plain, tls_side = (out["sides"][s] for s in SIDES)
    out["ratios"] = {"items/s, mutual TLS / plaintext": plain_ratio(tls_side["items_per_s"], plain["items_per_s"]),
                     **{f"CPU per item, {k}": plain_ratio(tls_side["cpu_ms_per_item"][k], plain["cpu_ms_per_item"][k])
                        for k in ("router", "nodes", "client", "all")}}
    return out


def plain_ratio(a: dict, b: dict) -> float:
    return round(a["median"] / b["median"], 3)


def markdown(meta: dict, args: argparse.Namespace, sections: list[dict]) -> str:
    lines = ["# What mutual TLS on every hop costs an L1 hit", "", report.header(meta),
             f"Redis and two clusters of 2 nodes ({MODEL}) and a router each, all on this machine's cores: one "
             "plaintext, one with mutual TLS on every hop (EC P-256). The Python client, 4 streams x "
             f"{IN_FLIGHT} in flight, hints on, sends the same {CACHED} JPEGs (photo-like, generated) through each "
             "router, every item a hit (the L1 share column: bounded loads spill a few to a second node), sent as "
             "the client does by default (digest-first from 64 KB: a hit carries no image) and with every image "
             "whole; "
             f"{args.reps} runs per side, alternating, the first side flipped each run. "
             "Median (min-max).", "",
             "| size | bytes | sends | side | items/s | router CPU ms/item | nodes | client | all | L1 share |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in sections:
        for sends, part in s["sends"].items():
            for side, r in part["sides"].items():
                cpu = r["cpu_ms_per_item"]
                lines.append(f"| {s['size']} | {s['bytes_per_image'] // 1000} KB | {sends} | {side} | "
                             f"{report.cell(r['items_per_s'])} | {report.cell(cpu['router'])} | "
                             f"{report.cell(cpu['nodes'])} | {report.cell(cpu['client'])} | "
                             f"{report.cell(cpu['all'])} | {r['l1_share']:.3f} |")
    names = list(next(iter(sections[0]["sends"].values()))["ratios"])
    lines += ["", "Mutual TLS / plaintext (medians):", "", "| size | sends | " + " | ".join(names) + " |",
              "| --- | --- |" + " --- |" * len(names)]
    lines += [f"| {s['size']} | {sends} | " + " | ".join(f"{v:.3f}" for v in part["ratios"].values()) + " |"
              for s in sections for sends, part in s["sends"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tls_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["640x480", "1920x1080"], help="JPEG sizes, WxH")
    p.add_argument("--requests", type=int, default=2560, help="items per run and side")
    p.add_argument("--reps", type=int, default=3, help="runs per side and size, alternating")
    args = p.parse_args(argv)
    meta = report.provenance(argv, module="bench.tls_cost")
    progress = report.progress_printer()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    with tempfile.TemporaryDirectory(prefix="ringserve-tls-") as tmp, clusters(Path(tmp)) as sides:
        sections = [size_section(sides, size, args.requests, args.reps, progress) for size in sizes]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tls.json").write_text(json.dumps({**meta, "args": vars(args), "sections": sections}, indent=1))
    text = markdown(meta, args, sections)
    (RESULTS / "tls.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
