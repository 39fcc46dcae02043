"""ringserve's central claim at cluster scale: three nodes on the ring against three Triton replicas behind
round-robin, with the same cache bytes.

    python -m bench.cluster [--working-set 600] [--requests 3000] [--concurrency 24] [--reps 2] [--workloads ...]

What a user would deploy instead of ringserve is N replicas of a server with its own response cache
behind a Kubernetes Service, which spreads connections (and so items) round-robin: every replica sees
every image, and each cache holds what the others hold too. ringserve places an image on the node
that owns its fingerprint, so each image is cached once. This measures what that buys, on this machine:

- **Triton round-robin**: three Triton servers (pytriton, ``bench/triton_peer.py``), each with its
  dynamic batcher and its local response cache of ``cache bytes``; the caller sends item *i* to
  replica *i mod 3*.
- **ringserve ring**: three nodes with an L1 of the same ``cache bytes`` each and no Redis (so the
  total cache is the same: Redis would be a fourth cache the other side does not have), one router.
- **ringserve round-robin**: three more such nodes behind a router with ``--policy round-robin``: what
  the ring buys, apart from the rest of ringserve.

Every side runs the same model (mobilenet_v3_small), one torch thread per replica (three replicas on
this 2-core machine), two decode threads per replica, max batch 16 and a 5 ms batch wait. Workloads:
Zipf over a working set of about twice one replica's cache (exponent 0.8, 1.0, 1.2) and uniform; each
run sends the same images in the same order to every side, on images no side has seen (new per run
and workload), with the sides interleaved and the first side rotated run by run. A run is two phases of
``--requests`` each, one stream of the workload cut in two: **cold**, from empty caches, and **warm**, the
same workload going on with what the cold phase left cached, which is what a cluster that has been up a
while serves. Reported per phase: model runs (Triton's executed inferences, the nodes' backbone images),
items/s, p50/p99, per-replica items max/mean. Needs the bench extra. Writes
bench/results/cluster.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import report
from bench.photos import photo
from bench.workload import zipf_workload
from ringserve.client import AsyncClient
from ringserve.contract import fingerprint
from ringserve.local.cluster import LocalCluster
from ringserve.local.processes import scratch_dir
from ringserve.server.l1 import ENTRY_OVERHEAD_BYTES

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "mobilenet_v3_small"
DIM = 576
MAX_BATCH = 16
BATCH_WAIT_S = 0.005
REPLICAS = 3
WORKLOADS = {"Zipf 0.8": 0.8, "Zipf 1.0": 1.0, "Zipf 1.2": 1.2, "uniform": 0.0}
SIDES = ("ringserve ring", "ringserve round-robin", "Triton round-robin")
PHASES = ("cold", "warm")
# A feature as the nodes keep it (float16) and L1's bookkeeping per entry: what ``cache bytes`` buys, and what one
# image costs ringserve's L1 in a deployment that does not use perceptual reuse (as here: no perceptual twin).
ENTRY_BYTES = DIM * 2 + ENTRY_OVERHEAD_BYTES

Send = Callable[[bytes], Awaitable[str]]  # sends one image, returns the replica that answered


@dataclass
class Side:
    """One side under test: how to send, and how many model runs it has made so far."""

    name: str
    open_sender: Callable[[], contextlib.AbstractAsyncContextManager[Send]]
    model_runs: Callable[[], int]


@dataclass
class Run:
    images_per_s: float
    p50_ms: float
    p99_ms: float
    model_runs: int
    per_replica: dict[str, int] = field(default_factory=dict)

    @property
    def max_over_mean(self) -> float:
        counts = list(self.per_replica.values())
        return max(counts) / statistics.mean(counts) if counts else float("nan")


async def measure(send: Send, images: list[bytes], order: list[int], concurrency: int) -> tuple[float, list[float], Counter]:
    """``concurrency`` callers, each sending the next image of ``order`` when its last one is answered."""
    latencies: list[float] = []
    served: Counter = Counter()
    queue = list(reversed(order))

    async def caller() -> None:
        while queue:
            image = images[queue.pop()]
            t = time.perf_counter()
            served[await send(image)] += 1
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, served


# ---- ringserve --------------------------------------------------------------------------------


@contextlib.contextmanager
def ringserve(work: Path, cache_bytes: int, policy: str) -> Iterator[tuple[str, Callable[[], int]]]:
    """Three nodes without Redis and a router with ``--policy``; yields its target and the nodes' model-run count.

    Each policy gets its own nodes: on shared nodes the side run second would find the images the first cached.
    """
    cluster = LocalCluster(work, None, router_args=["--drain-delay-s", "0"],
                           node_args=["--models", MODEL, "--max-batch", str(MAX_BATCH),
                                      "--max-delay-ms", str(BATCH_WAIT_S * 1000), "--drain-delay-s", "0",
                                      "--l1-max-bytes", str(cache_bytes)])
    with contextlib.ExitStack() as stack:
        stack.callback(cluster.stop)
        cluster.add(*(f"node-{i}" for i in range(REPLICAS)))

        def model_runs() -> int:
            return int(sum(node.metric("ringserve_backbone_images_total") for node in cluster.nodes.values()))

        yield cluster.start_router("--policy", policy).target, model_runs


@contextlib.asynccontextmanager
async def ringserve_sender(target: str) -> AsyncIterator[Send]:
    async with AsyncClient(target) as client:
        async def send(image: bytes) -> str:
            [feature] = await client.extract_detailed([image])
            if isinstance(feature, Exception):
                raise feature
            assert feature.vector.shape == (DIM,)
            return feature.provenance.node

        yield send


# ---- Triton -----------------------------------------------------------------------------------


@contextlib.contextmanager
def tritons(work: Path, cache_bytes: int, decode_threads: int) -> Iterator[list]:
    from bench.triton_peer import triton

    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(triton(work / f"triton-{i}", threads=1, cache_bytes=cache_bytes,
                                          max_batch=MAX_BATCH, batch_wait_s=BATCH_WAIT_S,
                                          decode_threads=decode_threads))
               for i in range(REPLICAS)]


@contextlib.asynccontextmanager
async def round_robin_sender(targets: list[str]) -> AsyncIterator[Send]:
    """Item *i* to replica *i mod N*: what a Service's connection spreading gives over many callers."""
    from bench.triton_peer import triton_sender

    async with contextlib.AsyncExitStack() as stack:
        senders = [await stack.enter_async_context(triton_sender(t)) for t in targets]
        turn = itertools.count()

        async def send(image: bytes) -> str:
            i = next(turn) % len(senders)
            await senders[i](image)
            return f"replica-{i}"

        yield send


# ---- the comparison ---------------------------------------------------------------------------


def workload_images(rep: int, name: str, working_set: int, size: tuple[int, int]) -> list[bytes]:
    """The working set of one run: images no earlier run used (seeds disjoint per rep and workload)."""
    base = 10_000_000 + (rep * len(WORKLOADS) + list(WORKLOADS).index(name)) * working_set
    return [photo(base + i, size) for i in range(working_set)]


def phases(order: list[int], requests: int) -> dict[str, list[int]]:
    """One stream of the workload cut in two: the cold phase, from empty caches, then the warm one."""
    return dict(zip(PHASES, (order[:requests], order[requests:]), strict=True))


async def run_all(sides: list[Side], args: argparse.Namespace, progress: Callable[[str], None]) -> dict:
    size = tuple(int(x) for x in args.size.split("x"))
    warm = [photo(9_000_000 + i, size) for i in range(32)]
    runs: dict = {s.name: {w: {p: [] for p in PHASES} for w in args.workloads} for s in sides}
    fingerprints: dict = {w: [] for w in args.workloads}
    senders = {}
    async with contextlib.AsyncExitStack() as stack:
        for side in sides:
            senders[side.name] = await stack.enter_async_context(side.open_sender())
            await measure(senders[side.name], warm, list(range(len(warm))) * 2, args.concurrency)  # equal warm-up
        for rep in range(args.reps):
            for name in args.workloads:
                images = workload_images(rep, name, args.working_set, size)
                fingerprints[name].append(len({fingerprint.phash_bytes(image) for image in images}))
                order = zipf_workload(2 * args.requests, args.working_set, WORKLOADS[name], seed=rep)
                turn = (rep * len(WORKLOADS) + list(WORKLOADS).index(name)) % len(sides)
                for side in sides[turn:] + sides[:turn]:  # the first side rotates run by run
                    for phase, part in phases(order, args.requests).items():
                        progress(f"run {rep + 1}/{args.reps}, {name}, {phase}: {side.name}")
                        before = side.model_runs()
                        elapsed, latencies, served = await measure(senders[side.name], images, part, args.concurrency)
                        ms = np.array(latencies) * 1000
                        run = Run(images_per_s=round(len(part) / elapsed, 1),
                                  p50_ms=round(float(np.percentile(ms, 50)), 1),
                                  p99_ms=round(float(np.percentile(ms, 99)), 1), model_runs=side.model_runs() - before,
                                  per_replica=dict(sorted(served.items())))
                        runs[side.name][name][phase].append(run)
                        progress(f"  {run.images_per_s} items/s, p99 {run.p99_ms} ms, {run.model_runs} model runs, "
                                 f"max/mean {run.max_over_mean:.3f}")
    return runs, fingerprints


def summarize(runs: dict) -> dict:
    """Per side, workload and phase: the spread of each measure over the runs."""
    return {side: {name: {phase: {
        "images_per_s": report.spread([r.images_per_s for r in rs]),
        "p50_ms": report.spread([r.p50_ms for r in rs]), "p99_ms": report.spread([r.p99_ms for r in rs]),
        "model_runs": report.spread([r.model_runs for r in rs]),
        "max_over_mean": report.spread([round(r.max_over_mean, 3) for r in rs]),
        "per_replica": [r.per_replica for r in rs]} for phase, rs in by_phase.items()}
        for name, by_phase in by_workload.items()} for side, by_workload in runs.items()}


def distinct_images(workloads: list[str], requests: int, working_set: int, reps: int) -> dict:
    """Per workload and phase, the distinct images each run asks for: in the warm phase, those the cold phase
    did not ask for (the misses no cache avoids) and all it asks for."""
    out: dict = {}
    for name in workloads:
        out[name] = {"cold": [], "warm": [], "warm_new": []}
        for rep in range(reps):
            cold, warm = phases(zipf_workload(2 * requests, working_set, WORKLOADS[name], seed=rep), requests).values()
            out[name]["cold"].append(len(set(cold)))
            out[name]["warm"].append(len(set(warm)))
            out[name]["warm_new"].append(len(set(warm) - set(cold)))
    return out


def ratios(summary: dict, distinct: dict) -> dict:
    """ringserve ring against each other side, per workload and phase: ratios of medians to 3 decimals, cut away
    from the target (``report.ratio``: model runs up, items/s down); and the floor, the median of the distinct
    images no cache could have held (cold: all asked for; warm: those the cold phase did not ask for) over the
    other side's model runs, the lowest model-run ratio any cache could reach in the run."""
    def of(ring: dict, other: dict, fewest: float) -> dict:
        runs = max(other["model_runs"]["median"], 1)
        return {"model_runs": float(report.ratio(ring["model_runs"]["median"] / runs, 3, higher_is_better=False)),
                "images_per_s": float(report.ratio(ring["images_per_s"]["median"] / other["images_per_s"]["median"], 3)),
                "floor": float(report.ratio(fewest / runs, 3))}

    ring = summary["ringserve ring"]
    fewest = {name: {"cold": statistics.median(d["cold"]), "warm": statistics.median(d["warm_new"])}
              for name, d in distinct.items()}
    return {side: {name: {phase: of(ring[name][phase], summary[side][name][phase], fewest[name][phase])
                          for phase in ring[name]} for name in ring} for side in summary if side != "ringserve ring"}


def markdown(r: dict) -> list[str]:
    workloads = list(r["distinct_images"])
    lines = [
        f"Images: {r['working_set']} JPEGs per run and workload at {r['size']} (`bench/photos.py`: the fidelity set's "
        f"real photos, fitted, with sensor noise and a random square; {r['distinct_bases']} distinct base pictures; "
        "distinct perceptual hashes, so ring positions, per working set: "
        + ", ".join(f"{name} {'/'.join(map(str, n))}" for name, n in r["distinct_fingerprints"].items())
        + "), new for every run, "
        f"the same bytes in the same order for every side. A run is one stream of {2 * r['requests']} requests cut in "
        f"two phases of {r['requests']}: cold (from empty caches) and warm (the workload going on with what the cold "
        f"phase left cached). {r['concurrency']} callers each waiting for its answer, {r['reps']} runs per side and "
        "workload (median, with min-max), sides interleaved with the first side rotated per run.", "",
        f"Cache per replica: {r['cache_bytes']:,} bytes ({r['cache_entries']} features at {ENTRY_BYTES} bytes: a "
        "float16 feature and L1's per-entry overhead); the working set is "
        f"{r['working_set'] / r['cache_entries']:.2f}x that many features. ringserve's L1 spends {ENTRY_BYTES:,} "
        "bytes per image here (no perceptual twin: these nodes run the default exact policy without "
        "`--cache-perceptual-index`), so a node holds about "
        f"{r['cache_bytes'] // ENTRY_BYTES} images; Triton's response cache gets the same bytes and counts its own "
        "keys and response framing. "
        "ringserve runs without Redis here, so both sides have the same total cache.", "",
        f"Every replica: {MODEL}, 1 torch thread, 2 decode threads, max batch {MAX_BATCH}, {BATCH_WAIT_S * 1000:g} ms "
        f"batch wait; {REPLICAS} replicas per side on this 2-core machine, with the caller (one Python process) "
        "on the same cores.", "",
        "| workload | phase | side | model runs | items/s | p50 ms | p99 ms | items per replica, max/mean |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in workloads:
        for phase in PHASES:
            for side, s in r["sides"].items():
                w = s[name][phase]
                lines.append(f"| {name} | {phase} | {side} | {report.cell(w['model_runs'])} "
                             f"| {report.cell(w['images_per_s'])} | {report.cell(w['p50_ms'])} "
                             f"| {report.cell(w['p99_ms'])} | {report.cell(w['max_over_mean'])} |")
    d = r["distinct_images"]
    lines += ["", "Distinct images asked for per run (cold: each is computed at least once; warm: those not asked for "
              "in the cold phase are the fewest a cache that kept everything computes): "
              + "; ".join(f"{name}: cold {', '.join(map(str, d[name]['cold']))}, warm "
                          f"{', '.join(map(str, d[name]['warm']))} of which not asked for in the cold phase "
                          f"{', '.join(map(str, d[name]['warm_new']))}" for name in workloads) + ".", "",
              "| ringserve ring / | workload | phase | model runs (lower is better) | items/s (higher is better) "
              "| floor of the model-run ratio |",
              "| --- | --- | --- | --- | --- | --- |"]
    for side, by in r["ratios"].items():
        for name, by_phase in by.items():
            for phase, v in by_phase.items():
                lines.append(f"| {side} | {name} | {phase} | {v['model_runs']:.3f} | {v['images_per_s']:.3f} "
                             f"| {v['floor']:.3f} |")
    lines += ["", "Ratios are of medians, 3 decimals, rounded away from the target (model runs up, items/s down). "
              "Floor: the median of the distinct images no cache could have held (cold: all asked for; warm: those "
              "the cold phase did not ask for) over the other side's model runs, the lowest model-run ratio any "
              "cache could reach in the run (cut down)."]
    return lines


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PHASES), 2, figsize=(11, 3.6 * len(PHASES)), squeeze=False)
    names = list(r["distinct_images"])
    x = np.arange(len(names))
    width = 0.8 / len(r["sides"])
    for row, phase in zip(axes, PHASES, strict=True):
        for i, (side, s) in enumerate(r["sides"].items()):
            for ax, key in zip(row, ("model_runs", "images_per_s"), strict=True):
                ax.bar(x + i * width, [s[n][phase][key]["median"] for n in names], width, label=side)
        for ax, title in zip(row, ("model runs (lower is better)", "items/s (higher is better)"), strict=True):
            ax.set_xticks(x + width * (len(r["sides"]) - 1) / 2, names)
            ax.set_title(f"{phase}: {title}")
    axes[0][0].legend()
    fig.suptitle(f"{REPLICAS} replicas, same cache bytes, working set {r['working_set']} images "
                 f"({r['working_set'] / r['cache_entries']:.1f}x one replica's cache)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--working-set", type=int, default=600, help="distinct images per run and workload")
    p.add_argument("--cache-entries", type=int, default=300, help="one replica's cache, in features (sets its bytes)")
    p.add_argument("--requests", type=int, default=3000, help="requests per phase (a run is a cold and a warm phase)")
    p.add_argument("--concurrency", type=int, default=24, help="callers at once")
    p.add_argument("--reps", type=int, default=2, help="runs per side and workload")
    p.add_argument("--size", default="320x240", help="JPEG size, WxH")
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for cluster.{json,md,png}")
    a = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"  # the nodes inherit it: one torch thread per replica, as Triton's
    progress = report.progress_printer()
    cache_bytes = a.cache_entries * ENTRY_BYTES
    work = scratch_dir("ringserve-cluster-")
    from bench.photos import _bases

    with contextlib.ExitStack() as stack:
        sides = []
        for name, policy in (("ringserve ring", "ring"), ("ringserve round-robin", "round-robin")):
            if name in a.sides:
                progress(f"starting {name}: 3 nodes and a router with --policy {policy}")
                target, node_runs = stack.enter_context(ringserve(work / policy, cache_bytes, policy))
                sides.append(Side(name, lambda t=target: ringserve_sender(t), node_runs))
        if "Triton round-robin" in a.sides:
            progress("starting 3 Triton replicas")
            replicas = stack.enter_context(tritons(work / "triton", cache_bytes, decode_threads=2))
            sides.append(Side("Triton round-robin", lambda: round_robin_sender([t.target for t in replicas]),
                              lambda: sum(t.counts()["model_runs"] for t in replicas)))
        sides = [s for s in sides if s.name in a.sides]
        runs, fingerprints = asyncio.run(run_all(sides, a, progress))
    summary = summarize(runs)
    distinct = distinct_images(a.workloads, a.requests, a.working_set, a.reps)
    result = {**report.provenance(argv, "bench.cluster"), "size": a.size, "working_set": a.working_set,
              "cache_entries": a.cache_entries, "cache_bytes": cache_bytes, "requests": a.requests,
              "concurrency": a.concurrency, "reps": a.reps, "distinct_bases": 2 * len(_bases()),
              "distinct_images": distinct,
              "distinct_fingerprints": fingerprints, "sides": summary,
              "ratios": ratios(summary, distinct) if "ringserve ring" in summary and len(summary) > 1 else {}}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    text = "\n".join(["# Three replicas: the ring against round-robin, the same cache bytes", "", report.header(result),
                      *markdown(result)]) + "\n"
    (a.out / "cluster.md").write_text(text)
    plot(result, a.out / "cluster.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
