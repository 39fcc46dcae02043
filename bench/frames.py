"""L1 hits per node: many items per message (frames) against one item per message, side by side.

    python -m bench.frames [--images 256] [--window 64] [--reps 5]

One real node (mobilenet_v3_small, no Redis) on this machine. Every image is sent once
so the rest are L1 hits; then the same client, on the same channel, sends all of them
again and again, with frames and without, alternating, and the median of ``--reps``
runs of each is compared. Client and node share this machine's cores, as in the issue's
measurement. Writes bench/results/frames.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

from ringserve.client import AsyncClient
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import NodeProcess, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"


async def measure(target: str, images: list[bytes], window: int, reps: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"frames": [], "one item per message": []}
    async with AsyncClient(target, window=window, hints=False, frames=True) as framed, \
            AsyncClient(target, window=window, hints=False, frames=False) as single:
        await framed.extract_detailed(images)  # every image computed once: the rest are L1 hits
        for _ in range(reps):
            for name, client in (("frames", framed), ("one item per message", single)):
                started = time.perf_counter()
                results = await client.extract_detailed(images)
                rates[name].append(len(images) / (time.perf_counter() - started))
                assert all(r.provenance.source == "l1" for r in results), "not all L1 hits"
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.frames", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--window", type=int, default=64, help="items in flight per stream")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    images = [jpeg(50_000 + i) for i in range(args.images)]
    node = NodeProcess(scratch_dir("ringserve-frames-"), "node-0", ["--models", "mobilenet_v3_small"]).start()
    try:
        rates = asyncio.run(measure(node.target, images, args.window, args.reps))
    finally:
        node.stop()
    medians = {name: statistics.median(r) for name, r in rates.items()}
    result = {
        "command": f"python -m bench.frames --images {args.images} --window {args.window} --reps {args.reps}",
        "commit": subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip(),
        "machine": f"{platform.machine()}, {platform.python_version()}, client and node on the same cores",
        "rates": rates, "median": medians,
        "ratio": medians["frames"] / medians["one item per message"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "frames.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# L1 hits per node: frames against one item per message", "",
             f"`{result['command']}` at {result['commit']} ({result['machine']}).", "",
             "| | median hits/s | runs (hits/s) |", "| --- | --- | --- |"]
    lines += [f"| {name} | {medians[name]:.0f} | {', '.join(f'{x:.0f}' for x in r)} |" for name, r in rates.items()]
    lines += ["", f"Frames / one item per message: **{result['ratio']:.2f}x**."]
    (RESULTS / "frames.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
