"""One of three nodes frozen under load: what the callers wait, with the per-try bound and hedging and without.

    python -m bench.frozen_node [--freeze-s 8] [--model mobilenet_v3_small] [--images 200]

Redis, three nodes (random weights) and a router on this machine; a load of ``--streams`` caller streams
of ``--window`` items in flight each, one image per message (``local/load.py``), over ``--images``
distinct 640x480 JPEGs (misses first, then mostly hits). After ``--warm-s`` of load, node-1 is stopped
with SIGSTOP (a long GC pause, a partition: alive to TCP and to its health watch, answering nothing)
for ``--freeze-s``, then SIGCONT, and the load runs ``--after-s`` more. Once with the router's defaults
(hedging on) and once with ``--no-hedge-enabled`` (what the router did before). For each: latency
p50/p99/p99.9/max of the items sent from the freeze on, failed, lost and duplicated items, and the
router's hedges. Writes bench/results/frozen_node.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import report

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
CASES = (("hedging (default)", ()), ("no hedging (before)", ("--no-hedge-enabled",)))


def run_case(workdir: Path, redis_url: str, args: argparse.Namespace, router_args: tuple[str, ...]) -> dict:
    from ringserve.local.cluster import LocalCluster
    from ringserve.local.imagegen import jpeg
    from ringserve.local.load import LoadGenerator

    images = [jpeg(70_000 + i, size=(640, 480)) for i in range(args.images)]
    with LocalCluster(workdir, redis_url, ["--models", args.model], router_args) as cluster:
        cluster.add("node-0", "node-1", "node-2")
        cluster.start_router()
        load = LoadGenerator(cluster.router.target, images, streams=args.streams, window=args.window).start()
        time.sleep(args.warm_s)
        frozen_at = time.monotonic()
        cluster.nodes["node-1"].signal(signal.SIGSTOP)
        try:
            time.sleep(args.freeze_s)
        finally:
            cluster.nodes["node-1"].signal(signal.SIGCONT)
        time.sleep(args.after_s)
        result = load.stop()
        hedges = {why: cluster.router.metric("ringserve_router_hedges_total", reason=why) for why in ("late", "stalled")}
    latencies = np.array([(o.answered - o.sent) * 1000 for o in result.outcomes if o.sent >= frozen_at])
    return {"sent": result.sent, "measured": len(latencies), "failed": result.failed, "lost": result.lost,
            "duplicated": result.duplicates, "stream_errors": result.stream_errors,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "p999_ms": float(np.percentile(latencies, 99.9)), "max_ms": float(latencies.max()),
            "items_per_s": len(latencies) / (args.freeze_s + args.after_s), "hedges": hedges}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.frozen_node", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenet_v3_small")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--warm-s", type=float, default=10.0)
    p.add_argument("--freeze-s", type=float, default=8.0)
    p.add_argument("--after-s", type=float, default=4.0)
    args = p.parse_args(argv)
    from ringserve.local.processes import RedisProcess

    meta = report.provenance(argv, module="bench.frozen_node")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="ringserve-frozen-") as tmp:
        redis = RedisProcess(Path(tmp) / "redis").start()
        try:
            for i, (label, router_args) in enumerate(CASES):
                redis_flush(redis.port)
                rows[label] = run_case(Path(tmp) / f"case-{i}", redis.url, args, router_args)
                print(label, rows[label], file=sys.stderr)
        finally:
            redis.stop()
    write(meta, args, rows)
    return 0


def redis_flush(port: int) -> None:
    import redis as redis_py

    with redis_py.Redis(port=port) as r:
        r.flushall()


def write(meta: dict, args: argparse.Namespace, rows: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "frozen_node.json").write_text(json.dumps({**meta, "args": vars(args), "rows": rows}, indent=1))
    lines = ["# One of three nodes frozen under load", "", report.header(meta),
             f"Redis, 3 nodes ({args.model}, random weights) and the router on this machine; {args.streams} caller "
             f"streams x {args.window} in flight, one 640x480 JPEG per message, {args.images} distinct images. "
             f"After {args.warm_s:g} s of load node-1 gets SIGSTOP for {args.freeze_s:g} s, then SIGCONT, and the "
             f"load runs {args.after_s:g} s more. Latency of every item sent from the freeze on. "
             "Target: max <= 1 s, p99.9 <= 250 ms, 0 failed, lost or duplicated.", "",
             "| router | items | p50 ms | p99 ms | p99.9 ms | max ms | failed | lost | duplicated | hedges "
             "(stalled / late) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {label} | {r['measured']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['p999_ms']:.1f} | "
              f"{r['max_ms']:.0f} | {r['failed']} | {r['lost']} | {r['duplicated']} | "
              f"{r['hedges']['stalled']:.0f} / {r['hedges']['late']:.0f} |" for label, r in rows.items()]
    (RESULTS / "frozen_node.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
