"""L1 hits per node: many items per message (frames) against one item per message, side by side.

    python -m bench.frames [--images 256] [--window 64] [--reps 5]

One real node (mobilenet_v3_small, no Redis) on this machine. Every image is sent once
so the rest are L1 hits; then the same client, on the same channel, sends all of them
again and again, with frames and without, alternating, and the median of ``--reps``
runs of each is compared. Client and node share this machine's cores, as in the issue's
measurement. The images are made on the fly (``ringserve.local.imagegen.jpeg``): ``--images``
distinct 128x96 JPEG thumbnails, quality 90. Writes bench/results/frames.{json,md};
``--render`` writes frames.md again from frames.json, without running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from bench import report
from ringserve.client import AsyncClient
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import NodeProcess, scratch_dir

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (128, 96)  # imagegen.jpeg's default: thumbnails, so per-message costs dominate per-byte ones
SEED = 50_000
TARGET = 3.0  # issue 10: frames at least 3x one item per message in L1 hits per node


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


def described(count: int) -> dict:
    """The images a run sends: where they come from, their size and how many."""
    return {"source": f"ringserve.local.imagegen.jpeg (seeds {SEED}-{SEED + count - 1}, quality 90)",
            "size": f"{SIZE[0]}x{SIZE[1]}", "count": count}


def markdown(result: dict) -> str:
    """The results page of one run (``result`` as frames.json holds it)."""
    if "versions" in result:
        head = report.header(result)
    else:  # a run from before the shared header: no date or versions recorded
        head = f"`{result['command']}` at commit {result['commit']}, date not recorded.\n\nMachine: {result['machine']}.\n"
    images = result.get("images") or described(int(result["command"].split("--images ")[1].split()[0]))
    rates, medians = result["rates"], result["median"]
    lines = ["# L1 hits per node: frames against one item per message", "", head,
             f"Images: {images['count']} distinct {images['size']} JPEG thumbnails made by {images['source']}, "
             "each computed once, then all sent again as L1 hits, with frames and without, alternating; "
             "client and node on the same cores.", "",
             "| | median hits/s | runs (hits/s) |", "| --- | --- | --- |"]
    lines += [f"| {name} | {medians[name]:.0f} | {', '.join(f'{x:.0f}' for x in r)} |" for name, r in rates.items()]
    met = "met" if result["ratio"] >= TARGET else "not met"
    lines += ["", f"Frames / one item per message: **{report.ratio(result['ratio'], 3)}x** "
                  f"(target at least {TARGET:g}x: {met}; the ratio is cut, never rounded up)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.frames", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--window", type=int, default=64, help="items in flight per stream")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--render", action="store_true", help="write frames.md again from frames.json; run nothing")
    args = p.parse_args(argv)
    if args.render:
        (RESULTS / "frames.md").write_text(markdown(json.loads((RESULTS / "frames.json").read_text())))
        return 0
    meta = report.provenance(["--images", str(args.images), "--window", str(args.window), "--reps", str(args.reps)],
                             module="bench.frames")
    images = [jpeg(SEED + i, size=SIZE) for i in range(args.images)]
    node = NodeProcess(scratch_dir("ringserve-frames-"), "node-0", ["--models", "mobilenet_v3_small"]).start()
    try:
        rates = asyncio.run(measure(node.target, images, args.window, args.reps))
    finally:
        node.stop()
    medians = {name: statistics.median(r) for name, r in rates.items()}
    result = {
        **meta,
        "images": described(args.images),
        "rates": rates, "median": medians,
        "ratio": medians["frames"] / medians["one item per message"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "frames.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / "frames.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
