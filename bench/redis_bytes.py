"""Redis bytes per cached image, by cache policy: what a miss writes, measured in a real Redis.

    python -m bench.redis_bytes [--images 400] [--model mobilenet_v3_small]

One node (random weights) on an empty Redis; ``--images`` distinct JPEGs (640x480) sent once
under each write policy: the default (exact only: the feature once), items that ask for
perceptual reuse, and a node started with ``--cache-perceptual-index``. For each: Redis's
``used_memory`` before and after (after the node's background writes have landed) over the
images, and the keys and ``MEMORY USAGE`` per image. Writes bench/results/redis_bytes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import redis as redis_py

from bench import report

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
CASES = (("default (exact only)", (), "exact"),
         ("items ask for perceptual", (), "perceptual"),
         ("--cache-perceptual-index", ("--cache-perceptual-index",), "exact"))


def measure(workdir: Path, redis_url: str, r: redis_py.Redis, args: argparse.Namespace, flags: tuple[str, ...],
            mode: str, offset: int) -> dict:
    from ringserve.client import Client
    from ringserve.local.imagegen import jpeg
    from ringserve.local.processes import NodeProcess

    r.flushall()
    time.sleep(0.2)
    before = r.info("memory")["used_memory"]
    node = NodeProcess(workdir / f"node-{offset}", "bytes", ["--models", args.model, "--redis-url", redis_url,
                                                             *flags]).start()
    try:
        images = [jpeg(offset + i, size=(640, 480)) for i in range(args.images)]
        with Client(node.target) as c:
            for start in range(0, len(images), 64):
                c.extract(images[start:start + 64], cache_mode=mode)
    finally:
        node.stop()  # drains: every queued write has landed
    after = r.info("memory")["used_memory"]
    keys = list(r.scan_iter(count=1000))
    usage = sum(r.memory_usage(k) or 0 for k in keys)
    return {"images": args.images, "keys_per_image": round(len(keys) / args.images, 2),
            "memory_usage_per_image": round(usage / args.images), "used_memory_per_image":
            round((after - before) / args.images)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.redis_bytes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--model", default="mobilenet_v3_small")
    args = p.parse_args(argv)
    from ringserve.local.processes import RedisProcess

    meta = report.provenance(argv, module="bench.redis_bytes")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="ringserve-bytes-") as tmp:
        redis = RedisProcess(Path(tmp) / "redis").start()
        try:
            r = redis_py.Redis(port=redis.port)
            for i, (label, flags, mode) in enumerate(CASES):
                rows[label] = measure(Path(tmp), redis.url, r, args, flags, mode, 50_000 + i * args.images)
                print(label, rows[label], file=sys.stderr)
        finally:
            redis.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "redis_bytes.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = ["# Redis bytes per cached image", "", report.header(meta),
             f"One node ({args.model}, random weights), {args.images} distinct 640x480 JPEGs per row, each "
             "sent once on an emptied Redis; bytes from Redis's own accounting after the node's writes landed.",
             "", "| writes | keys per image | MEMORY USAGE per image, B | used_memory per image, B |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {label} | {row['keys_per_image']} | {row['memory_usage_per_image']} | "
              f"{row['used_memory_per_image']} |" for label, row in rows.items()]
    (RESULTS / "redis_bytes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
