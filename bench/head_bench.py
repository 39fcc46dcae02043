"""The classification head on its own: one call per item against the node's no-delay head batcher.

    python -m bench.head_bench [--models mobilenet_v3_small resnet50] [--items 3000] [--callers 32]

Classify answers a cache hit by running only the head on the cached feature, so on a
repeat-heavy workload the head is the model work left. Side by side in one run, on the
same features and the same number of concurrent callers: (1) ``Model.scores`` per item
in a 4-thread pool, as the node did before the head had a batcher; (2) ``scores_batch``
behind a ``Batcher`` with ``max_delay_ms=0``, as the node runs it now. Medians of 3.
Writes bench/results/head.json and head.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench import report
from ringserve.server.batcher import Batcher, BatcherConfig
from ringserve.server.models import ModelConfig, load

RESULTS = Path(__file__).resolve().parent / "results"


async def throughput(submit: Callable[[np.ndarray], Awaitable[np.ndarray]], features: list[np.ndarray], items: int,
                     callers: int) -> float:
    """Items/s with ``callers`` concurrent callers, each awaiting one item at a time."""
    todo = iter(range(items))

    async def caller() -> None:
        for i in todo:
            await submit(features[i % len(features)])

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return items / (time.perf_counter() - started)


async def measure(model_name: str, items: int, callers: int, max_batch: int, reps: int) -> dict:
    model = load(ModelConfig(name=model_name))
    rng = np.random.default_rng(0)
    features = [rng.standard_normal(model.feature_dim).astype(model.feature_dtype) for _ in range(64)]
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(4, thread_name_prefix="per-item")
    batcher = Batcher(model.scores_batch, BatcherConfig(max_batch=max_batch, max_delay_ms=0, max_queue=4 * callers))
    batcher.start()
    per_item, batched = [], []
    try:
        for _ in range(reps):
            per_item.append(await throughput(lambda f: loop.run_in_executor(pool, model.scores, f), features, items,
                                             callers))
            batched.append(await throughput(batcher.submit, features, items, callers))
    finally:
        await batcher.close()
        pool.shutdown()
    row = {"model": model_name, "feature_dim": model.feature_dim, "callers": callers, "items": items,
           "per_item_per_s": round(statistics.median(per_item), 1),
           "batched_per_s": round(statistics.median(batched), 1),
           "mean_batch": round(batcher.items / max(batcher.batches, 1), 2)}
    row["ratio"] = round(row["batched_per_s"] / row["per_item_per_s"], 2)
    print(f"{model_name}: per item {row['per_item_per_s']}/s, batched {row['batched_per_s']}/s "
          f"({row['ratio']}x), mean batch {row['mean_batch']}", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mobilenet_v3_small", "resnet50"])
    p.add_argument("--items", type=int, default=3000, help="items per measurement")
    p.add_argument("--callers", type=int, default=32, help="concurrent callers")
    p.add_argument("--max-batch", type=int, default=16, help="the head batcher's max batch (the node uses --max-batch)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    rows = [asyncio.run(measure(m, a.items, a.callers, a.max_batch, a.reps)) for m in a.models]
    a.out.mkdir(parents=True, exist_ok=True)
    meta = report.provenance(argv, "bench.head_bench")
    (a.out / "head.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Classification head: per item against the no-delay head batcher", "", report.header(meta),
             f"{a.callers} concurrent callers, {a.items} items per run, median of {a.reps}; CPU, this machine.", "",
             "| model | feature dim | per item (items/s) | batched (items/s) | ratio | mean batch |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['feature_dim']} | {r['per_item_per_s']} | {r['batched_per_s']} | {r['ratio']}x | "
              f"{r['mean_batch']} |" for r in rows]
    (a.out / "head.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out / 'head.md'}")


if __name__ == "__main__":
    main()
