"""The router's memory while it indexes large images, and after: does it come back near its idle size?

    python -m bench.router_memory [--rounds 2] [--settle 10]

A real Redis, one node and a search router on this machine. The images are the real photos of
``bench.realphotos`` at their native sizes (JPEG), and every third of them also as a lossless PNG
with an alpha channel, at most 3000 px a side (a graphic's or a cut-out's format, which no decoder
can reduce while it decodes): the large inputs that cost a router memory when it fingerprints them for search. The
router's RSS is sampled every 20 ms: idle (after a few small images), the peak while indexing, and
after ``--settle`` seconds of idle. Writes bench/results/router_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil
from PIL import Image

from bench import realphotos, report
from ringserve.client import Client
from ringserve.local.cluster import LocalCluster
from ringserve.local.imagegen import jpeg
from ringserve.local.processes import RedisProcess

RESULTS = Path(__file__).resolve().parent / "results"
MB = 1024 * 1024
PNG_SIDE = 3000


def images() -> list[tuple[str, bytes]]:
    """Every real photo as it ships, and every third as an RGBA PNG of the same size."""
    out = []
    for i, photo in enumerate(realphotos.photos()):
        out.append((f"{photo.name}.jpg", photo.data))
        if i % 3 == 0:
            img = Image.open(io.BytesIO(photo.data)).convert("RGBA")
            img.thumbnail((PNG_SIDE, PNG_SIDE))  # a lossless photo this large is over the 20 MB image limit
            img.putalpha(Image.linear_gradient("L").resize(img.size))
            buf = io.BytesIO()
            img.save(buf, "PNG")
            out.append((f"{photo.name}.png", buf.getvalue()))
    return out


class Sampler:
    """RSS of one process every ``every_s`` seconds, on a thread, until stopped."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.every_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(rounds: int, settle_s: float, model: str) -> dict:
    data = images()
    sizes = [Image.open(io.BytesIO(d)).size for _, d in data]
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisProcess(Path(tmp) / "redis").start()
        cluster = LocalCluster(Path(tmp) / "c", redis.url, ["--models", model],
                               ["--search-redis-url", redis.url, "--search-snapshot-dir", str(Path(tmp) / "views")])
        try:
            cluster.add("node-0")
            router = cluster.start_router()
            with Client(router.target, timeout_s=600) as client:
                client.index([f"warm-{i}" for i in range(8)], [jpeg(i) for i in range(8)], collection="memory")
                time.sleep(2)
                sampler = Sampler(router.pid)
                idle = sampler.rss()
                per_round = []
                with sampler:
                    for r in range(rounds):
                        began = time.monotonic()
                        results = client.index([f"r{r}-{name}" for name, _ in data], [d for _, d in data],
                                               collection="memory")
                        failed = [str(x) for x in results if not hasattr(x, "model_version")]
                        per_round.append({"seconds": round(time.monotonic() - began, 1), "failed": failed,
                                          "rss_after_mb": round(sampler.rss() / MB, 1)})
                        print(f"round {r}: {len(data)} images in {per_round[-1]['seconds']} s, "
                              f"{len(failed)} failed, RSS {per_round[-1]['rss_after_mb']} MB", *failed[:1], flush=True)
                    time.sleep(settle_s)
                    after = sampler.rss()
                peak = sampler.peak
        finally:
            cluster.stop()
            redis.stop()
    return {
        "images": len(data), "bytes_total_mb": round(sum(len(d) for _, d in data) / MB, 1),
        "largest": max(sizes, key=lambda s: s[0] * s[1]), "rounds": per_round,
        "idle_mb": round(idle / MB, 1), "peak_mb": round(peak / MB, 1), "after_mb": round(after / MB, 1),
        "settle_s": settle_s,
    }


def write(result: dict, meta: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "router_memory.json").write_text(json.dumps({"meta": meta, **result}, indent=1) + "\n")
    lines = [
        "# Router memory while indexing large images", "", report.header(meta), "",
        f"{result['images']} images ({result['bytes_total_mb']} MB in all; the largest {result['largest'][0]}x"
        f"{result['largest'][1]}): the real photos of `bench.realphotos` (Debian's wallpaper packages, native "
        "sizes) as JPEG, and every third also as an RGBA PNG at most 3000 px a side. Indexed through a search router "
        f"into one collection, {len(result['rounds'])} rounds; RSS of the router process sampled every 20 ms.", "",
        "| router RSS | MB |", "| --- | --- |",
        f"| idle (after 8 small images) | {result['idle_mb']} |",
        f"| peak while indexing | {result['peak_mb']} |",
        f"| after {result['settle_s']:.0f} s idle | {result['after_mb']} |", "",
        "| round | seconds | failed | RSS after it (MB) |", "| --- | --- | --- | --- |",
        *[f"| {i} | {r['seconds']} | {len(r['failed'])} | {r['rss_after_mb']} |" for i, r in enumerate(result["rounds"])],
    ]
    (RESULTS / "router_memory.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="times the whole set is indexed (default 2)")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before the 'after' reading")
    parser.add_argument("--model", default="mobilenet_v3_small", help="the node's model (its features do not matter)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results as it is")
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.settle, args.model)
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}))
    if not args.no_write:
        write(result, report.provenance(argv, "bench.router_memory"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(argv=None))
