"""What the benchmarks send: request sequences with repeats, and a driver that counts tiers."""

from __future__ import annotations

import random
import time
from collections import Counter

import numpy as np

from ringserve.client import Client


def repeats_workload(n: int, repeat_share: float, seed: int = 0) -> list[int]:
    """Request sequence where each request repeats an earlier image with probability ``repeat_share``."""
    rng = random.Random(seed)
    seq, distinct = [], 0
    for _ in range(n):
        if seq and rng.random() < repeat_share:
            seq.append(rng.choice(seq))
        else:
            seq.append(distinct)
            distinct += 1
    return seq


def ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(values) * 1000, q)), 2)


def drive(target: str, images: list[bytes], order: list[int], window: int = 16, **options) -> dict:
    """Send ``order`` in streams of ``window`` items; throughput, per-stream latency, tiers."""
    tiers: Counter = Counter()
    latencies = []
    with Client(target, window=window) as client:
        started = time.perf_counter()
        for i in range(0, len(order), window):
            t = time.perf_counter()
            for r in client.extract_detailed([images[j] for j in order[i : i + window]], **options):
                tiers[r.provenance.source] += 1
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - started
    total = sum(tiers.values())
    return {"images_per_s": round(total / elapsed, 1), "batch_ms_p50": ms(latencies, 50),
            "batch_ms_p99": ms(latencies, 99), "l1": tiers["l1"], "l2": tiers["l2"], "computed": tiers["computed"]}
