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


def zipf_workload(n_requests: int, n_keys: int, exponent: float, seed: int = 0) -> list[int]:
    """``n_requests`` key indexes in ``range(n_keys)``, drawn from a bounded Zipf law with ``exponent``.

    Rank r (1 = hottest) is drawn with probability proportional to ``1 / r ** exponent`` over the ``n_keys``
    ranks (a finite working set, unlike ``numpy``'s unbounded ``zipf``); exponent 0 is uniform. Ranks map to key
    indexes through a permutation seeded by ``seed``, so the hot keys are not the lowest image seeds (and land on
    ring points unrelated to their rank). Same arguments, same list.
    """
    if n_keys < 1:
        raise ValueError(f"n_keys {n_keys} must be >= 1")
    if exponent < 0:
        raise ValueError(f"exponent {exponent} must be >= 0 (0 is uniform)")
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_keys + 1, dtype=np.float64)
    weights = np.ones(n_keys) if exponent == 0 else ranks**-exponent
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    drawn = np.searchsorted(cdf, rng.random(n_requests), side="right")  # 0-based rank: 0 is the hottest
    keys = rng.permutation(n_keys)  # rank -> key index
    return [int(k) for k in keys[np.minimum(drawn, n_keys - 1)]]


def answered_repeats_workload(n: int, repeat_share: float, gap: int, seed: int = 0) -> list[int]:
    """Like ``repeats_workload``, but a repeat at position i is drawn only from requests at positions <= i - ``gap``.

    With ``gap`` at least the number of concurrent callers, an image's first request (its miss) is normally
    answered before any repeat of it is sent, so no server sees a repeat while that image is being computed:
    nothing for single-flight coalescing to share. The order alone does not guarantee it (a slow miss can stay
    in flight while hits race ahead); a sender that waits for an image's first request to be answered before
    sending its repeats (it rarely has to wait) does. The first ``gap`` requests are distinct images. Repeats are
    drawn over earlier requests, as in ``repeats_workload``, so popular images get more of them.
    """
    if gap < 1:
        raise ValueError(f"gap {gap} must be >= 1")
    rng = random.Random(seed)
    seq, distinct = [], 0
    for i in range(n):
        if i >= gap and rng.random() < repeat_share:
            seq.append(rng.choice(seq[: i - gap + 1]))
        else:
            seq.append(distinct)
            distinct += 1
    return seq
